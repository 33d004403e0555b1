import { useReducer } from 'react';
import type { EventEnvelope } from '@secstream/client';
import { DEFAULT_LIMITS, INITIAL_LIVE_STATE, reduceEvents, type LiveLimits, type LiveState } from './liveState.js';
import { useWebSocketSubscription } from './useWebSocketSubscription.js';

/** Everything the role may receive: wildcards only cover allowed types. */
export const LIVE_EVENT_TYPES = ['*'] as const;

/**
 * A reduced live state of tests, findings, alerts, system status and
 * maintenance, updated in one render per animation frame.
 */
export function useRealTimeUpdates(
  options: { throttleMs?: number; limits?: Partial<LiveLimits>; eventTypes?: readonly string[] } = {},
): LiveState {
  const limits = { ...DEFAULT_LIMITS, ...options.limits };
  const [state, dispatch] = useReducer(
    (s: LiveState, events: EventEnvelope[]) => reduceEvents(s, events, limits),
    INITIAL_LIVE_STATE,
  );
  useWebSocketSubscription(options.eventTypes ?? LIVE_EVENT_TYPES, dispatch, {
    throttleMs: options.throttleMs ?? 0,
  });
  return state;
}
