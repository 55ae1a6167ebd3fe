// WebSocket wrapper: parses frames, reports state, reconnects with backoff.

const BASE_DELAY_MS = 500;
const MAX_DELAY_MS = 10_000;
const JITTER = 0.2; // ±20 %
// A connection resets the backoff only once it has stayed open this long. An open alone
// proves nothing: a server (or proxy) that accepts and closes at once would otherwise be
// retried every 0.5 s forever. A timer from the open rather than the welcome frame, because
// a server that greets and then fails is just as broken; 5 s is past the first few steps
// of the backoff, so a crash loop keeps backing off.
const STABLE_AFTER_MS = 5_000;
// A socket stuck in CONNECTING (e.g. a black-holed proxy) never fires close
// on its own; give up after this long so the backoff loop keeps going.
const CONNECT_TIMEOUT_MS = 10_000;

// Asking for batch mode lets the server pack several frames into one
// WebSocket message ("\n"-separated); parseFrames reads both forms.
export const SUBPROTOCOLS = ['trio-chat.batch'];

/**
 * The chat endpoint on the page's own host (ws: or wss: following the page). `room` is the room
 * the connection opens in, `since` where to resume it ("<epoch>:<id>": the last message seen
 * there, 0 if it had none; null for a fresh join), so the server replays what we missed, and
 * `name` is who this connection shows up as in presence.
 */
export function chatUrl({ room = '', since = null, name = '' } = {}, loc = location) {
  const scheme = loc.protocol === 'https:' ? 'wss:' : 'ws:';
  const params = [];
  if (room) params.push(`room=${encodeURIComponent(room)}`);
  // The epoch names the server's run of ids, so a restarted server can tell our ids apart.
  if (since) params.push(`since=${since.split(':').map(encodeURIComponent).join(':')}`);
  if (name) params.push(`name=${encodeURIComponent(name)}`);
  const query = params.length ? `?${params.join('&')}` : '';
  return `${scheme}//${loc.host}/chat${query}`;
}

// Splits one text frame into frame objects. The server may batch several
// JSON objects in one frame separated by "\n"; a bad line is skipped rather
// than dropping the whole batch.
export function parseFrames(text) {
  const frames = [];
  for (const line of String(text).split('\n')) {
    const trimmed = line.trim();
    if (!trimmed) continue;
    try {
      const obj = JSON.parse(trimmed);
      if (obj && typeof obj === 'object' && !Array.isArray(obj)) frames.push(obj);
    } catch {
      // Malformed line: ignore, the protocol says nothing useful can be done.
    }
  }
  return frames;
}

export class ChatConnection {
  /**
   * @param {() => string} urlFor called before every attempt, so that each
   *   reconnect carries the current name and the last id seen.
   * @param {{onState?: Function, onFrame?: Function}} handlers
   *   onState(state, info): state is "connecting" | "online" | "offline";
   *     for "offline", info = {code, reason, wasOpen, retryInMs}.
   *   onFrame(frame): called once per parsed JSON object.
   */
  constructor(urlFor, { onState = () => {}, onFrame = () => {} } = {}) {
    this.urlFor = urlFor;
    this.onState = onState;
    this.onFrame = onFrame;
    this.ws = null;
    this.attempt = 0;
    this.retryTimer = null;
    this.connectTimer = null;
    this.stableTimer = null;
    // Browsers fail the handshake of a server that answers without any of
    // the subprotocols asked for, and say no more than 1006, which looks just
    // like a server that is down. So while attempts fail before opening, they
    // alternate between asking for batch mode and not (each after its normal
    // backoff delay), and reach a server that does not know batch mode too.
    // Once a connection has been open, the next cycle asks for batch mode
    // again: a server that came back between two attempts is not taken for
    // an old one for the rest of the page's life.
    this.askBatch = true;
  }

  get isOpen() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  start() {
    this.connect();
  }

  // Skip the remaining backoff wait (user clicked "retry", network came back).
  retryNow() {
    if (this.retryTimer === null) return;
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.connect();
  }

  /** Sends a JSON frame; returns false (and sends nothing) when not open. */
  send(obj) {
    if (!this.isOpen) return false;
    this.ws.send(JSON.stringify(obj));
    return true;
  }

  connect() {
    this.retryTimer = null;
    this.onState('connecting');
    const askedBatch = this.askBatch;
    let ws;
    try {
      ws = new WebSocket(this.urlFor(), askedBatch ? SUBPROTOCOLS : []);
    } catch {
      // Only a malformed URL throws here; still treat it like a failed attempt.
      this.scheduleRetry({ code: 1006, reason: '', wasOpen: false });
      return;
    }
    this.ws = ws;
    let wasOpen = false;

    this.connectTimer = setTimeout(() => ws.close(), CONNECT_TIMEOUT_MS);

    ws.addEventListener('open', () => {
      clearTimeout(this.connectTimer);
      wasOpen = true;
      this.stableTimer = setTimeout(() => { this.attempt = 0; }, STABLE_AFTER_MS);
      this.onState('online');
    });

    ws.addEventListener('message', (event) => {
      if (typeof event.data !== 'string') return; // protocol is text-only
      for (const frame of parseFrames(event.data)) {
        try {
          this.onFrame(frame);
        } catch (err) {
          // One bad frame must not stop the rest of a batch from rendering.
          console.error('trio_chat: failed to handle frame', err);
        }
      }
    });

    // "error" is always followed by "close", so all recovery happens there.
    ws.addEventListener('close', (event) => {
      clearTimeout(this.connectTimer);
      if (this.ws !== ws) return;
      this.ws = null;
      clearTimeout(this.stableTimer);
      // A new cycle asks for batch mode; a failed handshake swaps (see constructor).
      this.askBatch = wasOpen || !askedBatch;
      this.scheduleRetry({ code: event.code, reason: event.reason, wasOpen });
    });
  }

  scheduleRetry(info) {
    const retryInMs = this.nextDelay();
    this.onState('offline', { ...info, retryInMs });
    this.retryTimer = setTimeout(() => this.connect(), retryInMs);
  }

  nextDelay() {
    const delay = backoffDelay(this.attempt);
    this.attempt = Math.min(this.attempt + 1, 16);
    return delay;
  }
}

/**
 * The wait before retry number `attempt` (0, 1, 2 …): exponential backoff
 * (0.5 s, 1 s, 2 s … capped at 10 s) with ±20 % jitter so that clients
 * dropped together (e.g. a 1012 restart) don't all reconnect in the same
 * instant. The jitter is applied after the cap on purpose: clamping
 * afterwards would line everyone up at exactly 10 s. `random` is in [0, 1).
 */
export function backoffDelay(attempt, random = Math.random()) {
  const exp = Math.min(MAX_DELAY_MS, BASE_DELAY_MS * 2 ** attempt);
  return Math.round(exp * (1 - JITTER + random * 2 * JITTER));
}
