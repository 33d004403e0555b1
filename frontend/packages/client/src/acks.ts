/**
 * Batched `ack` frames (contract section 4): one per `ackIntervalMs`, or at once
 * after `ackEveryEvents` events (not more often than every 250 ms), carrying the
 * resume point. Only a client with a `client_id` acks, and only while connected.
 */

import type { AckMessage, Offset } from './protocol.js';

const ACK_MIN_GAP_MS = 250;

export interface AckOptions {
  intervalMs: number;
  everyEvents: number;
  /** Whether acks may go out now (a welcomed connection of a client with a `client_id`). */
  ready: () => boolean;
  /** The offset to store: the resume point, or null before any event. */
  offset: () => Offset | null;
  send: (message: AckMessage) => boolean;
  ref: () => string;
}

export class AckBatcher {
  private timer: ReturnType<typeof setTimeout> | null = null;
  private lastAcked: Offset | null = null;
  private lastAckAt = 0;
  private unacked = 0;

  constructor(private readonly o: AckOptions) {}

  /** One more event processed. */
  counted(): void {
    this.unacked++;
    this.schedule();
  }

  /** A new connection: ack what the last one did not. */
  resumed(): void {
    const offset = this.o.offset();
    if (offset !== null && offset !== this.lastAcked) this.schedule();
  }

  schedule(): void {
    if (!this.o.ready()) return;
    if (this.unacked >= this.o.everyEvents && Date.now() - this.lastAckAt >= ACK_MIN_GAP_MS) {
      this.flush();
      return;
    }
    this.timer ??= setTimeout(() => {
      this.timer = null;
      this.flush();
    }, this.o.intervalMs);
  }

  flush(): void {
    this.cancel();
    const offset = this.o.offset();
    if (!this.o.ready() || offset === null || this.lastAcked === offset) return;
    if (this.o.send({ type: 'ack', id: this.o.ref(), offset })) {
      this.lastAcked = offset;
      this.lastAckAt = Date.now();
      this.unacked = 0;
    }
  }

  cancel(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }
}
