/**
 * Collects items and hands them over at most once per animation frame, and no
 * more often than every `throttleMs`: renders stay bounded whatever the event rate.
 */

export interface FrameBatcher<T> {
  push(item: T): void;
  /** Deliver what is queued now. */
  flush(): void;
  cancel(): void;
}

type Handle = { kind: 'raf'; id: number } | { kind: 'timeout'; id: ReturnType<typeof setTimeout> };

export function createFrameBatcher<T>(deliver: (items: T[]) => void, throttleMs = 0): FrameBatcher<T> {
  let queue: T[] = [];
  let handle: Handle | null = null;
  let lastFlush = 0;

  const run = () => {
    handle = null;
    const wait = lastFlush + throttleMs - Date.now();
    if (throttleMs > 0 && wait > 0) {
      handle = { kind: 'timeout', id: setTimeout(schedule, wait) };
      return;
    }
    flush();
  };

  const schedule = () => {
    handle = null;
    const raf = globalThis.requestAnimationFrame;
    const hidden = typeof document !== 'undefined' && document.visibilityState === 'hidden';
    // rAF stops in hidden tabs: fall back to a timer so queues do not grow without bound
    if (typeof raf === 'function' && !hidden) handle = { kind: 'raf', id: raf(run) };
    else handle = { kind: 'timeout', id: setTimeout(run, 16) };
  };

  const flush = () => {
    if (handle) cancelHandle(handle);
    handle = null;
    if (!queue.length) return;
    const items = queue;
    queue = [];
    lastFlush = Date.now();
    deliver(items);
  };

  return {
    push(item) {
      queue.push(item);
      if (handle === null) schedule();
    },
    flush,
    cancel() {
      if (handle) cancelHandle(handle);
      handle = null;
      queue = [];
    },
  };
}

function cancelHandle(handle: Handle): void {
  if (handle.kind === 'raf') globalThis.cancelAnimationFrame?.(handle.id);
  else clearTimeout(handle.id);
}
