// The message's size against the server's limit (max_message_bytes, in bytes of UTF-8), shown
// while the person types: a counter once the text nears the limit, and a warning past it, so
// that nobody learns of the limit only after pressing Send.

const NEAR_SHARE = 0.8; // the counter shows from this share of the limit on
const utf8 = new TextEncoder();

export function utf8Length(text) {
  return utf8.encode(text).length;
}

/** "ok", "near" or "over": where `bytes` stand against `maxBytes`. */
export function lengthState(bytes, maxBytes) {
  if (bytes > maxBytes) return 'over';
  return bytes >= NEAR_SHARE * maxBytes ? 'near' : 'ok';
}

const SPOKEN = {
  ok: '',
  near: 'The message is close to the length limit.',
  over: 'The message is too long to send.',
};

export class LengthMeter {
  /**
   * `counter` shows the count (hidden from screen readers: a number read out at every key
   * would drown the typing), `spoken` says politely when the state changes, `limits` are the
   * server's, read at every update.
   */
  constructor({ counter, spoken, limits }) {
    Object.assign(this, { counter, spoken, limits });
    this.state = 'ok';
  }

  /** Measures `text`; returns its state. */
  update(text) {
    const max = this.limits.maxMessageBytes;
    const bytes = utf8Length(text);
    const state = lengthState(bytes, max);
    this.counter.dataset.state = state;
    this.counter.textContent = state === 'ok' ? '' : `${bytes} / ${max} bytes`;
    if (state !== this.state) this.spoken.textContent = SPOKEN[state];
    this.state = state;
    return state;
  }
}
