/**
 * Where the client resumes from: the last processed event id, deduplication of
 * what it has already seen, and the end of the log pinned before the first
 * event. Also the one `GET /api/v1/events` without `since` the client makes,
 * both to learn the end of the log and to ask why a handshake failed.
 */

import { compareOffsets, type Offset } from './protocol.js';

export class ResumePoint {
  private readonly seen = new Set<Offset>();
  private last: Offset | null = null;
  private cursor: Offset | null = null;

  constructor(private readonly capacity: number) {}

  get lastId(): Offset | null {
    return this.last;
  }

  /** Whether the event is new (not seen before); a new one moves the last id forward. */
  accept(id: Offset): boolean {
    if (this.seen.has(id)) return false;
    this.seen.add(id);
    if (this.seen.size > this.capacity) {
      const oldest = this.seen.values().next().value;
      if (oldest !== undefined) this.seen.delete(oldest);
    }
    if (this.last === null || compareOffsets(id, this.last) > 0) this.last = id;
    return true;
  }

  /** A poll's `next`: resume after it. */
  advance(next: Offset): void {
    if (this.cursor === null || compareOffsets(next, this.cursor) > 0) this.cursor = next;
  }

  /** The end of the log before anything was received: a reconnect resumes from it. */
  pin(end: Offset): void {
    if (this.last === null && this.cursor === null) this.cursor = end;
  }

  /**
   * The newer of the last processed id and the cursor (the pinned end of the log,
   * or the last poll's `next`). A history replay brings ids older than that
   * cursor, and resuming from one of them would replay everything since.
   */
  offset(): Offset | null {
    const { last, cursor } = this;
    if (last === null || cursor === null) return last ?? cursor;
    return compareOffsets(last, cursor) >= 0 ? last : cursor;
  }
}

export interface LogAnswer {
  /** The HTTP status, or null when nothing answered. */
  status: number | null;
  /** `next` of a 2xx answer: the current end of the log. */
  next: Offset | null;
}

/** `GET /api/v1/events?types=*` without `since`: no events, the end of the log (no token: no answer). */
export async function askLog(
  httpUrl: string,
  fetcher: typeof fetch,
  token: () => Promise<string>,
): Promise<LogAnswer> {
  try {
    const res = await fetcher(`${httpUrl}/api/v1/events?types=*`, {
      headers: { Authorization: `Bearer ${await token()}` },
      cache: 'no-store',
    });
    if (!res.ok) return { status: res.status, next: null };
    const body = (await res.json().catch(() => null)) as { next?: unknown } | null;
    return { status: res.status, next: typeof body?.next === 'string' ? body.next : null };
  } catch {
    return { status: null, next: null };
  }
}
