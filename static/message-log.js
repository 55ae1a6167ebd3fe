// One room's conversation on screen: its messages and system lines, following new entries only
// while the reader is at the bottom, and the top of its scrollback (history-edge.js). Every
// room has its own log and only the shown one is visible, so a hidden room's arrivals are
// neither seen nor read out by screen readers (a hidden live region is silent).
//
// Scrollback. The messages below the edge are one run of the server's ids, oldest first: the
// history of a join or a resume, then live ones, each newer than the last. Older messages of
// that run go just below the edge, so their ids must be below the first one there. When the
// ids start again (the server lost our place, or a new hub took over), the edge moves down to
// the end of the log and a new run starts below it; what is above it stays, as it was said.
//
// Bounded: a log holds at most MAX_ENTRIES elements, its edge included. New entries always go
// in at the bottom, and past the bound the oldest one goes (as before scrollback). Older
// messages only fill the room left, and never push the newest out: once the log is full, the
// edge says that nothing older is kept and no more is asked for. So live messages always show
// at the bottom, and no gap is ever shown as one conversation: a message of the run cut from
// its top takes the edge from "ready" (or "complete") to "full" too.

import { HistoryEdge } from './history-edge.js';
import { messageEntry, systemEntry } from './message-entry.js';

export const MAX_ENTRIES = 1000; // per room: keeps the DOM bounded in long-running tabs
const BOTTOM_SLACK_PX = 40; // "at the bottom" tolerance for auto-scroll
const NEAR_TOP_PX = 100; // this close to the top, the reader wants what is older

// The id of a message entry, or null for a system line (or a message without one).
function idOf(node) {
  return node.dataset.id === undefined ? null : Number(node.dataset.id);
}

export class MessageLog {
  /**
   * `onBehind(log, behind)` is told when entries wait below what the reader sees, and when not;
   * `onWantOlder(log)` when the reader asks for older messages (scrolled to the top, or the
   * button), and asking makes sense.
   */
  constructor(doc, room, { onBehind, onWantOlder }) {
    Object.assign(this, { doc, room, onBehind, onWantOlder });
    const list = doc.createElement('div');
    list.className = 'room-log';
    Object.assign(list, { tabIndex: 0, hidden: true });
    list.dataset.room = room;
    list.setAttribute('role', 'log');
    list.setAttribute('aria-live', 'polite');
    list.setAttribute('aria-relevant', 'additions');
    list.setAttribute('aria-label', `Messages in #${room}`);
    this.element = list;
    const onAsk = () => this.wantOlder();
    this.edge = new HistoryEdge(doc, { room, maxEntries: MAX_ENTRIES, onAsk });
    list.append(this.edge.element);
    this.run = 0; // counts the runs of ids started below the edge: an answer is for one of them
    // Whether the reader is following the conversation. Tracked from scroll events rather
    // than measured on demand, because the list also changes size (error box shown, phone
    // keyboard opening) without any scrolling; and kept while the log is hidden.
    this.pinned = true;
    this.pinnedAt = 0; // scrollTop when `pinned` was last decided
    this.behind = false; // entries wait below
    this.savedTop = 0; // where the reader was when the room was hidden
    this.savedPlace = null; // and what they were looking at (see placeOfReader)

    list.addEventListener('scroll', () => {
      this.setPinned(this.isAtBottom());
      if (this.pinned) this.setBehind(false);
      if (this.shown && list.scrollTop <= NEAR_TOP_PX) this.wantOlder();
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
    else if (!this.keepPlace(this.savedPlace)) this.element.scrollTop = this.savedTop;
    this.onBehind(this, this.behind);
  }

  hide() {
    if (this.shown) {
      this.pinned = this.isFollowing();
      this.savedTop = this.element.scrollTop;
      // Older messages may come in while hidden: the place is kept by what was in view.
      this.savedPlace = this.placeOfReader();
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

  /**
   * What the reader is looking at: the first entry (not the edge) at least partly in view, and
   * how far below the top of the list it is; null if the log is hidden or empty.
   */
  placeOfReader() {
    if (!this.shown) return null;
    const top = this.element.getBoundingClientRect().top;
    for (const node of this.element.children) {
      if (node === this.edge.element) continue;
      const box = node.getBoundingClientRect();
      if (box.bottom > top) return { node, offset: box.top - top };
    }
    return null;
  }

  /** Where `node` is, as placeOfReader says it: for keepPlace. */
  placeAt(node) {
    const top = this.element.getBoundingClientRect().top;
    return { node, offset: node.getBoundingClientRect().top - top };
  }

  /**
   * Scrolls so that the entry of `place` (from placeOfReader) is where it was on screen, however
   * much was put in or taken out above it. (The browser's own scroll anchoring is off for the
   * log, see style.css: not every browser has it, and it would move the place a second time.)
   * Returns false if it cannot: no place, or its entry is gone.
   */
  keepPlace(place) {
    if (!place || place.node.parentNode !== this.element || !this.shown) return false;
    const now = place.node.getBoundingClientRect().top - this.element.getBoundingClientRect().top;
    this.element.scrollTop += now - place.offset;
    return true;
  }

  // Append while preserving the reader's position: follow new entries only if they were
  // already at the bottom (or it's their own message).
  append(node, { forceScroll = false } = {}) {
    const list = this.element;
    const follow = forceScroll || this.isFollowing();
    // A full log loses entries at the top: whatever stays moves up by as much, so its last
    // entry is as good a place to hold as the one the reader looks at, and takes no search.
    const full = !follow && this.shown && list.childElementCount >= MAX_ENTRIES;
    const place = full ? this.placeAt(list.lastElementChild) : null;
    list.append(node);
    const trimmed = this.trim();
    // An entry added at the bottom changes the edge only if it was waiting for a first
    // message, or if entries went from the top.
    if (trimmed || this.edge.state === 'idle') this.renderEdge();
    this.keepPlace(place);
    if (!follow) this.setBehind(true);
    else if (this.shown) this.scrollToBottom();
  }

  // Past MAX_ENTRIES, the oldest entries go (never the edge); returns whether any did.
  trim() {
    const list = this.element;
    const { edge } = this;
    const trimmed = list.childElementCount > MAX_ENTRIES;
    while (list.childElementCount > MAX_ENTRIES) {
      const top = list.firstElementChild;
      const first = top === edge.element ? top.nextElementSibling : top;
      // The run below the edge no longer reaches back to where it started.
      if (first.previousElementSibling === edge.element && idOf(first) !== null) {
        edge.complete = false;
        edge.full = true;
      }
      first.remove();
    }
    return trimmed;
  }

  /**
   * Renders a chat message at the bottom; returns the element. `history` marks one that was
   * sent before this connection (history on joining, or a resume).
   */
  addMessage(message, { own = false, history = false } = {}) {
    const { id } = message;
    const newest = this.newestId();
    // Ids only grow within a run: one that does not starts a new run.
    if (id !== null && id !== undefined && newest !== null && id <= newest) this.newRun();
    const item = messageEntry(this.doc, message, { own, history });
    this.append(item, { forceScroll: own && !history });
    return item;
  }

  /**
   * A discreet one-line system entry. `kind` says what it is (welcome, notice, disconnect,
   * presence, history, rename); `code` is the server's code.
   */
  addSystem(text, kind = 'info', code = '') {
    const item = systemEntry(this.doc, text, kind, code);
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

  // Scrollback (see the module comment)

  /** The id of the oldest message below the edge: what older messages are older than. */
  oldestId() {
    for (let node = this.edge.element.nextElementSibling; node; node = node.nextElementSibling) {
      const id = idOf(node);
      if (id !== null) return id;
    }
    return null;
  }

  /** The id of the newest message below the edge. */
  newestId() {
    let node = this.element.lastElementChild;
    for (; node !== this.edge.element; node = node.previousElementSibling) {
      const id = idOf(node);
      if (id !== null) return id;
    }
    return null;
  }

  /**
   * The messages from now on are of a new run of ids, which older ones of the last run say
   * nothing about: the edge moves below what is shown (unless nothing of the last run is).
   */
  newRun() {
    this.run += 1;
    if (this.oldestId() !== null) this.element.append(this.edge.element);
    this.edge.reset();
    this.renderEdge();
  }

  /** The server has nothing older than what is below the edge (its history was all there is). */
  reachedBeginning() {
    this.edge.complete = !this.edge.full;
    this.renderEdge();
  }

  /** Whether older messages can be asked for on this connection (shows the button or not). */
  setOlderAvailable(available) {
    this.edge.available = available;
    this.renderEdge();
  }

  /** The reader asked for older messages: the owner is told, if asking makes sense now. */
  wantOlder() {
    if (this.edge.askable) this.onWantOlder(this);
  }

  /**
   * What to ask for, at most `pageSize` messages: `{before, limit, run}`; null if nothing (the
   * log may be found full meanwhile, and then says so).
   */
  olderRequest(pageSize) {
    const before = this.oldestId();
    if (before === null || !this.edge.askable) return null;
    const room = MAX_ENTRIES - this.element.childElementCount;
    if (room < 1) {
      this.edge.full = true;
      this.renderEdge();
      return null;
    }
    return { before, limit: Math.min(pageSize, room), run: this.run };
  }

  /** A request is out (loading), or no more. */
  setLoading(loading) {
    this.edge.loading = loading;
    if (loading) this.edge.failure = '';
    this.renderEdge();
  }

  /** The last request failed, for the reason `text`: the button offers to try again. */
  olderFailed(text) {
    this.edge.loading = false;
    this.edge.failure = text;
    this.renderEdge();
  }

  /**
   * Puts `messages` (of `request`, from olderRequest; oldest first) just below the edge, keeping
   * what the reader looks at where it is on screen; `complete`: the server has nothing older;
   * `ownName` marks ours. Only messages older than the oldest shown are taken, and only as many
   * as there is room for; nothing if the run changed or was cut meanwhile. Returns how many.
   */
  prependOlder(messages, { request, complete, ownName }) {
    if (request.run !== this.run || request.before !== this.oldestId()) return 0;
    const older = oldestFirst(messages.filter((message) => message.id < request.before));
    const room = MAX_ENTRIES - this.element.childElementCount;
    // The newest of them join up with what is shown; any older ones do not fit.
    const fitting = older.slice(Math.max(0, older.length - Math.max(0, room)));
    const place = this.placeOfReader();
    const entries = fitting.map((message) => messageEntry(this.doc, message, {
      own: message.sender === ownName,
      history: true,
    }));
    this.batch(() => this.edge.element.after(...entries));
    const roomLeft = room - fitting.length;
    if (fitting.length < older.length || (!complete && roomLeft < 1)) this.edge.full = true;
    else if (complete) this.edge.complete = true;
    this.renderEdge(); // before keeping the place: the edge is above it, and may change size
    this.keepPlace(place);
    return fitting.length;
  }

  renderEdge() {
    this.edge.render(this.oldestId() !== null);
  }
}

// Sorted by id, each id once.
function oldestFirst(messages) {
  const sorted = [...messages].sort((a, b) => a.id - b.id);
  return sorted.filter((message, index) => index === 0 || message.id !== sorted[index - 1].id);
}
