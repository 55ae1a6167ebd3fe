// Every frame the page sends counts against the server's rate limit: a token bucket per
// connection, TRIO_CHAT_RATE (5) a second and TRIO_CHAT_BURST (10) at once by default, past
// which a frame is refused with `rate_limited`. The page keeps a bucket of its own a little under
// that and sends through it, so that fast typing, or a reconnect that rejoins 30 rooms, goes out
// spread over a few seconds instead of being refused.
//
// The server's rate can be set lower than the page knows (its welcome frame does not say): a
// `rate_limited` answer holds everything for HOLD_MS and halves the page's rate for the rest of
// the connection.
//
// Bounded: what waits is a few frames per room at most (a join or a leave each), one chat
// message (outbox.js sends the next one only once the last came back) and one rename (a newer
// one replaces it); MAX_WAITING is a backstop.

const RATE_PER_SECOND = 4;
const BURST = 8;
const HOLD_MS = 2_000;
const MIN_RATE_PER_SECOND = 0.5;
const MAX_WAITING = 256;
const SECOND_MS = 1000;
// Called as methods of this object: the browser's own would throw "Illegal invocation".
const SYSTEM_CLOCK = {
  now: () => performance.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (timer) => clearTimeout(timer),
};

export class SendPacer {
  /**
   * `send(frame)` puts a frame on the wire and returns false when it cannot (not connected).
   * `clock` (now, setTimeout, clearTimeout) can be stood in for.
   */
  constructor(send, clock = SYSTEM_CLOCK) {
    this.sendNow = send;
    this.clock = clock;
    this.waiting = [];
    this.timer = null;
    this.afterHold = []; // called once a hold is over, before anything waiting goes out
    this.reset();
  }

  /** A new connection: the server's bucket is full again, and ours is too. */
  reset() {
    this.clock.clearTimeout(this.timer);
    this.timer = null;
    this.waiting = [];
    this.afterHold = [];
    this.rate = RATE_PER_SECOND;
    this.tokens = BURST;
    this.filledAt = this.clock.now();
    this.heldUntil = 0;
  }

  /** Queues `frame` to go out as soon as the pace allows; false if too much waits already. */
  send(frame) {
    if (frame.type === 'rename') {
      // Only the latest name matters: it replaces one still waiting.
      this.waiting = this.waiting.filter((queued) => queued.type !== 'rename');
    }
    if (this.waiting.length >= MAX_WAITING) return false;
    this.waiting.push(frame);
    this.flush();
    return true;
  }

  /** The server refused a frame for going too fast: wait, slow down, then call `then`. */
  hold(then = () => {}) {
    this.rate = Math.max(MIN_RATE_PER_SECOND, this.rate / 2);
    this.tokens = 0;
    this.filledAt = this.clock.now();
    this.heldUntil = this.filledAt + HOLD_MS;
    this.afterHold.push(then);
    this.schedule(HOLD_MS);
  }

  refill(now) {
    const earned = ((now - this.filledAt) * this.rate) / SECOND_MS;
    this.tokens = Math.min(BURST, this.tokens + earned);
    this.filledAt = now;
  }

  flush() {
    const now = this.clock.now();
    if (now < this.heldUntil) return;
    const resumes = this.afterHold.splice(0);
    for (const then of resumes) then();
    this.refill(now);
    while (this.waiting.length && this.tokens >= 1) {
      if (!this.sendNow(this.waiting[0])) {
        this.waiting = []; // not connected: the next connection rebuilds what it needs
        return;
      }
      this.waiting.shift();
      this.tokens -= 1;
    }
    if (this.waiting.length) this.schedule(((1 - this.tokens) * SECOND_MS) / this.rate);
  }

  schedule(delayMs) {
    if (this.timer !== null) this.clock.clearTimeout(this.timer);
    this.timer = this.clock.setTimeout(() => {
      this.timer = null;
      this.flush();
    }, Math.max(0, Math.ceil(delayMs)));
  }
}
