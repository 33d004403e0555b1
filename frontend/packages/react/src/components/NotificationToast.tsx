import { useCallback, useEffect, useRef, useState } from 'react';
import type { EventEnvelope, Priority } from '@secstream/client';
import { useWebSocketSubscription } from '../useWebSocketSubscription.js';

export interface Toast {
  id: string;
  eventType: string;
  title: string;
  message: string | null;
  priority: Priority;
  timestamp: string;
}

export const TOAST_TYPES: readonly string[] = ['system.alert', 'user.notification'];
/** Wildcards, because an exact type the role may not receive would refuse the whole subscribe. */
const TOAST_PATTERNS = ['system.*', 'user.*'];

function toToast(e: EventEnvelope): Toast {
  const data = e.data as Record<string, unknown>;
  const title = typeof data['title'] === 'string' && data['title'] ? data['title'] : e.event_type === 'system.alert' ? 'System alert' : 'Notification';
  const message = typeof data['message'] === 'string' && data['message'] ? data['message'] : null;
  return { id: e.id, eventType: e.event_type, title, message, priority: e.priority, timestamp: e.timestamp };
}

/**
 * Toasts for `system.alert` and `user.notification`. `critical` ones stay
 * until dismissed; the others go after `autoDismissMs`.
 */
export function NotificationToast({ autoDismissMs = 6000, max = 6 }: { autoDismissMs?: number; max?: number }) {
  const [toasts, setToasts] = useState<Toast[]>([]);
  const timers = useRef(new Map<string, ReturnType<typeof setTimeout>>());

  const dismiss = useCallback((id: string) => {
    const t = timers.current.get(id);
    if (t) clearTimeout(t);
    timers.current.delete(id);
    setToasts((list) => list.filter((x) => x.id !== id));
  }, []);

  const onEvents = useCallback(
    (events: EventEnvelope[]) => {
      const fresh = events.filter((e) => TOAST_TYPES.includes(e.event_type)).map(toToast);
      if (!fresh.length) return;
      for (const toast of fresh) {
        if (toast.priority !== 'critical') {
          timers.current.set(toast.id, setTimeout(() => dismiss(toast.id), autoDismissMs));
        }
      }
      setToasts((list) => {
        const merged = [...list, ...fresh.filter((f) => !list.some((x) => x.id === f.id))];
        // over the limit, drop the oldest non-critical first
        while (merged.length > max) {
          const i = merged.findIndex((t) => t.priority !== 'critical');
          merged.splice(i >= 0 ? i : 0, 1);
        }
        return merged;
      });
    },
    [autoDismissMs, dismiss, max],
  );

  useWebSocketSubscription(TOAST_PATTERNS, onEvents);

  useEffect(() => {
    const map = timers.current;
    return () => {
      for (const t of map.values()) clearTimeout(t);
      map.clear();
    };
  }, []);

  return (
    <div className="toasts" aria-live="assertive">
      {toasts.map((t) => (
        <div
          key={t.id}
          className={`toast toast--${t.priority}`}
          data-testid="toast"
          data-event-type={t.eventType}
          data-priority={t.priority}
          role={t.priority === 'critical' ? 'alert' : 'status'}
        >
          <div className="toast__body">
            <div className="toast__kind">
              {t.eventType === 'system.alert' ? 'Alert' : 'Notification'} · {t.priority}
            </div>
            <div className="toast__title">{t.title}</div>
            {t.message && <div className="toast__message">{t.message}</div>}
          </div>
          <button type="button" className="toast__close" aria-label="Dismiss" onClick={() => dismiss(t.id)}>
            ×
          </button>
        </div>
      ))}
    </div>
  );
}
