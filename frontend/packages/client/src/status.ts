/**
 * The client's one state value and the status around it. `transition(to)` is the
 * only way the state changes: an illegal move throws in development (and is
 * logged, then taken, in production), and listeners hear of a status only when
 * something in it differs from the status they last heard.
 */

import { ConnectionState, type ClientStatus } from './types.js';

const S = ConnectionState;

/** Where each state may go next (staying put is always allowed and emits nothing). */
export const TRANSITIONS: Readonly<Record<ConnectionState, readonly ConnectionState[]>> = {
  [S.Disconnected]: [S.Connecting, S.Reconnecting, S.Polling, S.Error],
  [S.Connecting]: [S.Connected, S.Reconnecting, S.Polling, S.Disconnected, S.Error],
  [S.Reconnecting]: [S.Connected, S.Polling, S.Disconnected, S.Error],
  [S.Connected]: [S.Reconnecting, S.Disconnected, S.Error],
  [S.Polling]: [S.Connected, S.Reconnecting, S.Disconnected, S.Error],
  [S.Error]: [S.Connecting, S.Reconnecting, S.Polling, S.Disconnected],
};

export class IllegalTransition extends Error {
  constructor(
    readonly from: ConnectionState,
    readonly to: ConnectionState,
  ) {
    super(`EventClient: no transition from ${from} to ${to}`);
    this.name = 'IllegalTransition';
  }
}

/** Vite's `import.meta.env.DEV` in a bundle; `NODE_ENV !== 'production'` under Node. */
export function developmentMode(): boolean {
  const env = (import.meta as { env?: { DEV?: unknown } }).env;
  if (env && typeof env.DEV === 'boolean') return env.DEV;
  const proc = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process;
  return proc?.env?.['NODE_ENV'] !== 'production';
}

export type StatusPatch = Partial<Omit<ClientStatus, 'state'>>;

export class StatusMachine {
  private current: ClientStatus;
  private heard: ClientStatus;

  constructor(
    initial: ClientStatus,
    private readonly emit: (status: ClientStatus) => void,
    private readonly strict: boolean = developmentMode(),
  ) {
    this.current = initial;
    this.heard = initial;
  }

  get status(): ClientStatus {
    return this.current;
  }

  get state(): ConnectionState {
    return this.current.state;
  }

  /** The user stopped the client or it gave up: nothing runs until `connect()`/`retryNow()`. */
  get stopped(): boolean {
    return this.current.state === S.Disconnected || this.current.state === S.Error;
  }

  /** Move to `to` with these fields; emits only when the status differs from the last emitted. */
  transition(to: ConnectionState, patch: StatusPatch = {}): void {
    const from = this.current.state;
    if (to !== from && !TRANSITIONS[from].includes(to)) {
      const err = new IllegalTransition(from, to);
      if (this.strict) throw err;
      console.error(err.message);
    }
    this.current = { ...this.current, ...patch, state: to };
    this.publish();
  }

  /** Change fields, not the state; emits only on a change. */
  update(patch: StatusPatch): void {
    this.transition(this.current.state, patch);
  }

  /** Change fields without telling anyone yet (the last event id, once per event). */
  quietly(patch: StatusPatch): void {
    this.current = { ...this.current, ...patch };
  }

  /** Tell listeners when a quiet change is pending. */
  publish(): void {
    if (sameStatus(this.heard, this.current)) return;
    this.heard = this.current;
    this.emit(this.current);
  }
}

function sameStatus(a: ClientStatus, b: ClientStatus): boolean {
  for (const key of Object.keys(b) as (keyof ClientStatus)[]) {
    const x = a[key];
    const y = b[key];
    if (x === y) continue;
    if (typeof x !== 'object' || typeof y !== 'object' || x === null || y === null) return false;
    if (JSON.stringify(x) !== JSON.stringify(y)) return false;
  }
  return true;
}
