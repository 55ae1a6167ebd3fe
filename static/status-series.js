// What the status page plots: points over a sliding window of time, and per-second rates
// worked out from a counter.

/** How much time the charts show. */
export const WINDOW_MS = 10 * 60 * 1000;

/** Points (time in ms, value or null for a gap) over the last `windowMs`. */
export class Series {
  constructor(windowMs = WINDOW_MS) {
    this.windowMs = windowMs;
    this.points = [];
  }

  /** Adds a point; `value` null marks a time the figures could not be had (a gap). */
  add(time, value) {
    this.points.push({ time, value });
    const oldest = time - this.windowMs;
    // Kept: the last point before the window too, so that a line enters from the left edge.
    while (this.points.length > 1 && this.points[1].time <= oldest) this.points.shift();
  }

  /** The latest value, or null. */
  get latest() {
    const last = this.points[this.points.length - 1];
    return last ? last.value : null;
  }

  /** How many points carry a value. */
  get count() {
    return this.points.filter((point) => point.value !== null).length;
  }

  /** The highest value in the window, or null when there is none. */
  get highest() {
    const values = this.points.map((point) => point.value).filter((value) => value !== null);
    return values.length ? Math.max(...values) : null;
  }
}

/**
 * The per-second rate of a counter between one reading and the next.
 *
 * A counter that went down has started again from 0 (the server restarted): what it counts now
 * is all it counted since, as Prometheus's rate() reads it, never a negative rate.
 */
export class RateMeter {
  constructor() {
    this.last = null; // { time, total }
  }

  /** The rate since the previous reading (null for the first, or after `forget`). */
  update(time, total) {
    const last = this.last;
    this.last = { time, total };
    if (last === null || time <= last.time) return null;
    const increase = total >= last.total ? total - last.total : total;
    return increase / ((time - last.time) / 1000);
  }

  /** After a gap (figures not had): the next reading starts afresh. */
  forget() {
    this.last = null;
  }
}
