import { afterEach, describe, expect, it, vi } from 'vitest';
import { INITIAL_STATUS } from './options.js';
import { developmentMode, IllegalTransition, StatusMachine, TRANSITIONS } from './status.js';
import { ConnectionState as S, type ClientStatus } from './types.js';

function machine(strict = true) {
  const heard: ClientStatus[] = [];
  return { m: new StatusMachine(INITIAL_STATUS, (s) => heard.push(s), strict), heard };
}

afterEach(() => vi.restoreAllMocks());

describe('StatusMachine', () => {
  it('emits on a change of state or field, and never twice for the same status', () => {
    const { m, heard } = machine();
    m.transition(S.Connecting);
    m.transition(S.Connecting);
    m.update({ failures: 0 });
    m.update({ roles: [] });
    expect(heard.map((s) => s.state)).toEqual(['connecting']);
    m.update({ failures: 1 });
    m.update({ error: { kind: 'network', code: null, message: 'm', action: 'a' } });
    m.update({ error: { kind: 'network', code: null, message: 'm', action: 'a' } });
    expect(heard).toHaveLength(3);
    expect(heard.at(-1)?.failures).toBe(1);
  });

  it('holds quiet changes until publish, and publishes them once', () => {
    const { m, heard } = machine();
    m.quietly({ lastEventId: '5-0' });
    expect(heard).toHaveLength(0);
    expect(m.status.lastEventId).toBe('5-0');
    m.publish();
    m.publish();
    expect(heard).toHaveLength(1);
  });

  it('throws on an illegal transition in development', () => {
    const { m, heard } = machine(true);
    expect(() => m.transition(S.Connected)).toThrow(IllegalTransition);
    expect(m.state).toBe(S.Disconnected);
    expect(heard).toHaveLength(0);
    m.transition(S.Connecting);
    m.transition(S.Connected);
    expect(() => m.transition(S.Polling)).toThrow(/connected to polling/);
  });

  it('logs and takes an illegal transition in production', () => {
    const error = vi.spyOn(console, 'error').mockImplementation(() => undefined);
    const { m } = machine(false);
    m.transition(S.Connected);
    expect(m.state).toBe(S.Connected);
    expect(error).toHaveBeenCalledWith(expect.stringMatching(/disconnected to connected/));
  });

  it('lets every state stop, and none reach itself through the table', () => {
    for (const [from, targets] of Object.entries(TRANSITIONS)) {
      expect(targets).not.toContain(from);
      if (from !== S.Disconnected) expect(targets).toContain(S.Disconnected);
    }
    expect(developmentMode()).toBe(true); // vitest runs in development
  });
});
