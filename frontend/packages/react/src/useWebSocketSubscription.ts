import { useEffect, useRef } from 'react';
import type { EventEnvelope, Offset } from '@secstream/client';
import { useWebSocketContext } from './context.js';
import { createFrameBatcher } from './frameBatcher.js';

export interface SubscriptionOptions {
  /** Only events whose `data.test_id` equals this. */
  testId?: string;
  /** Deliver at most once per this many ms (and at most once per animation frame). */
  throttleMs?: number;
  /** Replay from this offset, as given (`"0"`: all retained), before live events. */
  since?: Offset;
  /** Queued `test.progress` events of one test may be replaced by the newest (state-only widgets). */
  latest?: boolean;
  enabled?: boolean;
}

/**
 * Subscribe to event types; `callback` gets the events batched per animation
 * frame (one call, many events), in arrival order. The latest callback and
 * options are used without resubscribing; a new type list or test id resubscribes.
 */
export function useWebSocketSubscription(
  eventTypes: readonly string[],
  callback: (events: EventEnvelope[]) => void,
  options: SubscriptionOptions = {},
): void {
  const { client } = useWebSocketContext();
  const callbackRef = useRef(callback);
  const optionsRef = useRef(options);
  callbackRef.current = callback;
  optionsRef.current = options;

  const typesKey = [...eventTypes].sort().join(',');
  const { testId, enabled = true, throttleMs = 0, latest = false } = options;

  useEffect(() => {
    if (!enabled || !typesKey) return;
    const batcher = createFrameBatcher<EventEnvelope>((events) => callbackRef.current(events), throttleMs);
    const sub = client.subscribe(typesKey.split(','), (event) => batcher.push(event), {
      ...(testId !== undefined ? { testId } : {}),
      ...(optionsRef.current.since !== undefined ? { since: optionsRef.current.since } : {}),
      ...(latest ? { latest } : {}),
    });
    return () => {
      sub.unsubscribe();
      batcher.cancel();
    };
  }, [client, typesKey, testId, enabled, throttleMs, latest]);
}
