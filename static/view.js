// DOM rendering. Everything that came from the network goes through
// textContent (or dataset / title, which are never parsed as HTML).

const MAX_ENTRIES = 1000; // keep the DOM small in long-running tabs
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

function el(doc, tag, className, text) {
  const node = doc.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

export function createView(doc = document) {
  const byId = (id) => doc.getElementById(id);
  const els = {
    messages: byId('messages'),
    status: byId('status'),
    statusText: byId('status-text'),
    statusDetail: byId('status-detail'),
    retryButton: byId('retry-button'),
    presence: byId('presence'),
    onlineCount: byId('online-count'),
    onlineUsers: byId('online-users'),
    error: byId('error'),
    form: byId('composer'),
    nameInput: byId('name-input'),
    messageInput: byId('message-input'),
    sendButton: byId('send-button'),
    jumpButton: byId('jump-button'),
  };
  const list = els.messages;

  function isAtBottom() {
    return list.scrollHeight - list.scrollTop - list.clientHeight <= BOTTOM_SLACK_PX;
  }

  // Whether the reader is following the conversation. Tracked from scroll
  // events rather than measured on demand, because the list also changes
  // size (error box shown, phone keyboard opening) without any scrolling.
  let pinned = true;
  let pinnedAt = 0; // scrollTop when `pinned` was last decided

  function setPinned(value) {
    pinned = value;
    pinnedAt = list.scrollTop;
  }

  // Scroll events are delivered per frame (and not at all in background
  // tabs), so trust `pinned` only if nothing moved since it was decided.
  function isFollowing() {
    return list.scrollTop === pinnedAt ? pinned || isAtBottom() : isAtBottom();
  }

  function scrollToBottom() {
    list.scrollTop = list.scrollHeight;
    setPinned(true);
    els.jumpButton.hidden = true;
  }

  // Append while preserving the reader's position: follow new entries only
  // if they were already at the bottom (or it's their own message).
  function append(node, { forceScroll = false } = {}) {
    const follow = forceScroll || isFollowing();
    list.append(node);
    while (list.childElementCount > MAX_ENTRIES) list.firstElementChild.remove();
    if (follow) scrollToBottom();
    else els.jumpButton.hidden = false;
  }

  list.addEventListener('scroll', () => {
    setPinned(isAtBottom());
    if (pinned) els.jumpButton.hidden = true;
  }, { passive: true });
  if (typeof ResizeObserver === 'function') {
    new ResizeObserver(() => { if (pinned) scrollToBottom(); }).observe(list);
  }
  els.jumpButton.addEventListener('click', () => {
    scrollToBottom();
    list.focus();
  });

  return {
    els,

    /**
     * Renders a chat message; returns the element. `history` marks one that
     * was sent before this connection (history on joining, or a resume).
     */
    addMessage({ id, ts, sender, message }, { own = false, history = false } = {}) {
      const item = el(doc, 'div', 'message');
      item.classList.toggle('own', own);
      item.classList.toggle('history', history);
      if (id !== undefined && id !== null) item.dataset.id = String(id);
      item.dataset.sender = sender;
      item.style.setProperty('--sender-hue', String(senderHue(sender)));

      const meta = el(doc, 'div', 'meta');
      meta.append(el(doc, 'span', 'sender', sender));
      const when = new Date(Number.isFinite(ts) ? ts : Date.now());
      const time = el(doc, 'time', 'time', shortTime(when));
      time.dateTime = when.toISOString();
      time.title = when.toLocaleString();
      meta.append(time);

      item.append(meta, el(doc, 'div', 'text', message));
      append(item, { forceScroll: own && !history });
      return item;
    },

    /**
     * A discreet one-line system entry. `kind` says what it is (welcome,
     * notice, disconnect, presence, history); `code` is the server's code.
     */
    addSystem(text, kind = 'info', code = '') {
      const item = el(doc, 'div', 'system', text);
      item.dataset.kind = kind;
      if (code) item.dataset.code = code;
      append(item);
      return item;
    },

    /**
     * Runs `render` (many appends) as one update: screen readers wait for
     * aria-busy to clear instead of announcing a whole history line by line.
     */
    batch(render) {
      list.setAttribute('aria-busy', 'true');
      try {
        render();
      } finally {
        list.removeAttribute('aria-busy');
      }
    },

    /** Records what the last history frame was: "fresh" or "resumed". */
    markHistory(kind) {
      list.dataset.history = kind;
    },

    /** Re-marks messages and names as own/other after the display name changed. */
    restyleOwn(name) {
      for (const item of list.querySelectorAll('.message')) {
        item.classList.toggle('own', item.dataset.sender === name);
      }
      for (const item of els.onlineUsers.children) {
        if (!item.classList.contains('more')) item.classList.toggle('own', item.textContent === name);
      }
    },

    setWorker(worker) {
      els.status.dataset.worker = worker;
      els.status.title = `Connected to worker ${worker}`;
    },

    setStatus(state, text) {
      els.status.dataset.state = state;
      if (state !== 'online') {
        delete els.status.dataset.worker;
        els.status.title = '';
      }
      els.statusText.textContent = text;
      els.statusDetail.textContent = '';
      els.retryButton.hidden = state !== 'offline';
      els.sendButton.disabled = state !== 'online';
      els.sendButton.title = state === 'online' ? '' : 'Not connected';
    },

    // Outside what screen readers hear (aria-hidden): "retrying in 3 s" read
    // out every second would drown everything else.
    setStatusDetail(text) {
      els.statusDetail.textContent = text;
    },

    setPresence(online, users, ownName, truncated = false) {
      els.onlineCount.textContent = `${online} online`;
      els.onlineCount.title = users.length ? users.join(', ') : `${online} online`;
      els.onlineUsers.replaceChildren(...users.map((u) => el(doc, 'li', u === ownName ? 'own' : '', u)));
      if (truncated) els.onlineUsers.append(el(doc, 'li', 'more', 'and others'));
      els.presence.classList.toggle('has-users', users.length > 0);
      els.presence.classList.add('known');
    },

    // Presence is stale once the connection is gone: go back to "unknown".
    clearPresence() {
      els.onlineCount.textContent = '—';
      els.onlineCount.title = 'Online count not known yet';
      els.onlineUsers.replaceChildren();
      els.presence.classList.remove('has-users', 'known');
      els.presence.open = false;
    },

    showError(text, code = '') {
      els.error.textContent = text;
      if (code) els.error.dataset.code = code;
      else delete els.error.dataset.code;
    },

    clearError() {
      els.error.textContent = '';
      delete els.error.dataset.code;
    },
  };
}
