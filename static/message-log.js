// One room's conversation on screen: its messages and system lines, at most MAX_ENTRIES of
// them, following new entries only while the reader is at the bottom. Every room has its own
// log and only the shown one is visible, so a hidden room's arrivals are neither seen nor read
// out by screen readers (a hidden live region is silent).
//
// Everything that came from the network goes through textContent (or dataset / title, which
// are never parsed as HTML).

const MAX_ENTRIES = 1000; // per room: keeps the DOM bounded in long-running tabs
const BOTTOM_SLACK_PX = 40; // "at the bottom" tolerance for auto-scroll

function pad2(n) {
  return String(n).padStart(2, '0');
}

// "14:05" today; history can reach back further, so older days get a date.
function shortTime(when, now = new Date()) {
  const hm = `${pad2(when.getHours())}:${pad2(when.getMinutes())}`;
  if (when.toDateString() === now.toDateString()) return hm;
  return `${when.toLocaleDateString(undefined, { month: 'short', day: 'numeric' })} ${hm}`;
}

// A stable hue per sender so people are easy to tell apart.
function senderHue(name) {
  let h = 0;
  for (const ch of name) h = (h * 31 + ch.codePointAt(0)) >>> 0;
  return h % 360;
}

export function el(doc, tag, className, text) {
  const node = doc.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

export class MessageLog {
  /** `onBehind(log, behind)` is told when entries wait below what the reader sees, and when not. */
  constructor(doc, room, onBehind) {
    this.doc = doc;
    this.room = room;
    this.onBehind = onBehind;
    const list = el(doc, 'div', 'room-log');
    Object.assign(list, { tabIndex: 0, hidden: true });
    list.dataset.room = room;
    list.setAttribute('role', 'log');
    list.setAttribute('aria-live', 'polite');
    list.setAttribute('aria-relevant', 'additions');
    list.setAttribute('aria-label', `Messages in #${room}`);
    this.element = list;
    // Whether the reader is following the conversation. Tracked from scroll events rather
    // than measured on demand, because the list also changes size (error box shown, phone
    // keyboard opening) without any scrolling; and kept while the log is hidden.
    this.pinned = true;
    this.pinnedAt = 0; // scrollTop when `pinned` was last decided
    this.behind = false; // entries wait below
    this.savedTop = 0; // where the reader was when the room was hidden

    list.addEventListener('scroll', () => {
      this.setPinned(this.isAtBottom());
      if (this.pinned) this.setBehind(false);
    }, { passive: true });
    if (typeof ResizeObserver === 'function') {
      new ResizeObserver(() => { if (this.pinned && this.shown) this.scrollToBottom(); }).observe(list);
    }
  }

  get shown() {
    return !this.element.hidden;
  }

  show() {
    this.element.hidden = false;
    if (this.pinned) this.scrollToBottom();
    else this.element.scrollTop = this.savedTop;
    this.onBehind(this, this.behind);
  }

  hide() {
    if (this.shown) {
      this.pinned = this.isFollowing();
      this.savedTop = this.element.scrollTop;
    }
    this.element.hidden = true;
  }

  remove() {
    this.element.remove();
  }

  isAtBottom() {
    const list = this.element;
    return list.scrollHeight - list.scrollTop - list.clientHeight <= BOTTOM_SLACK_PX;
  }

  setPinned(value) {
    this.pinned = value;
    this.pinnedAt = this.element.scrollTop;
  }

  setBehind(value) {
    if (this.behind === value) return;
    this.behind = value;
    this.onBehind(this, value);
  }

  // Scroll events are delivered per frame (and not at all in background tabs), so trust
  // `pinned` only if nothing moved since it was decided. A hidden log has no layout to measure.
  isFollowing() {
    if (!this.shown) return this.pinned;
    const list = this.element;
    return list.scrollTop === this.pinnedAt ? this.pinned || this.isAtBottom() : this.isAtBottom();
  }

  scrollToBottom() {
    this.element.scrollTop = this.element.scrollHeight;
    this.setPinned(true);
    this.setBehind(false);
  }

  // Append while preserving the reader's position: follow new entries only if they were
  // already at the bottom (or it's their own message).
  append(node, { forceScroll = false } = {}) {
    const list = this.element;
    const follow = forceScroll || this.isFollowing();
    list.append(node);
    while (list.childElementCount > MAX_ENTRIES) list.firstElementChild.remove();
    if (!follow) this.setBehind(true);
    else if (this.shown) this.scrollToBottom();
  }

  /**
   * Renders a chat message; returns the element. `history` marks one that was sent before this
   * connection (history on joining, or a resume).
   */
  addMessage({ id, ts, sender, message }, { own = false, history = false } = {}) {
    const { doc } = this;
    const item = el(doc, 'div', 'message');
    item.classList.toggle('own', own);
    item.classList.toggle('history', history);
    if (id !== undefined && id !== null) item.dataset.id = String(id);
    item.dataset.sender = sender;
    item.style.setProperty('--sender-hue', String(senderHue(sender)));

    const meta = el(doc, 'div', 'meta');
    // dir=auto: a name or a text in a right-to-left script reads and aligns as one.
    const name = el(doc, 'span', 'sender', sender);
    name.dir = 'auto';
    meta.append(name);
    const when = new Date(Number.isFinite(ts) ? ts : Date.now());
    const time = el(doc, 'time', 'time', shortTime(when));
    time.dateTime = when.toISOString();
    time.title = when.toLocaleString();
    meta.append(time);

    const text = el(doc, 'div', 'text', message);
    text.dir = 'auto';
    item.append(meta, text);
    this.append(item, { forceScroll: own && !history });
    return item;
  }

  /**
   * A discreet one-line system entry. `kind` says what it is (welcome, notice, disconnect,
   * presence, history, rename); `code` is the server's code.
   */
  addSystem(text, kind = 'info', code = '') {
    const item = el(this.doc, 'div', 'system', text);
    item.dir = 'auto';
    item.dataset.kind = kind;
    if (code) item.dataset.code = code;
    this.append(item);
    return item;
  }

  /**
   * Runs `render` (many appends) as one update: screen readers wait for aria-busy to clear
   * instead of announcing a whole history line by line.
   */
  batch(render) {
    this.element.setAttribute('aria-busy', 'true');
    try {
      render();
    } finally {
      this.element.removeAttribute('aria-busy');
    }
  }

  /** Records what the last history frame was: "fresh" or "resumed". */
  markHistory(kind) {
    this.element.dataset.history = kind;
  }

  /** Re-marks messages as own/other after the display name changed. */
  restyleOwn(name) {
    for (const item of this.element.querySelectorAll('.message')) {
      item.classList.toggle('own', item.dataset.sender === name);
    }
  }
}
