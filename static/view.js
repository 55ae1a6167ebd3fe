// The page around the conversation: the connection's state, who is in the shown room, the
// error line, and the rooms' logs (message-log.js), of which one is shown at a time.
// Everything that came from the network goes through textContent.

import { el } from './dom.js';
import { MessageLog } from './message-log.js';

/** `wantOlder(log)` is told when the reader of a room's log asks for older messages. */
export function createView(doc = document, { wantOlder = () => {} } = {}) {
  const byId = (id) => doc.getElementById(id);
  const els = {
    logs: byId('messages'),
    roomTitle: byId('room-title'),
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
    counter: byId('message-counter'),
    lengthStatus: byId('length-status'),
    queueStatus: byId('queue-status'),
    jumpButton: byId('jump-button'),
    announcer: byId('announcer'),
  };
  const logs = new Map(); // room name -> MessageLog
  let shown = null; // the MessageLog on screen

  function onBehind(log, behind) {
    if (log === shown) els.jumpButton.hidden = !behind;
  }

  els.jumpButton.addEventListener('click', () => {
    shown?.scrollToBottom();
    shown?.element.focus();
  });

  return {
    els,

    /** The log of `room`, made on first use. */
    log(room) {
      let log = logs.get(room);
      if (!log) {
        log = new MessageLog(doc, room, { onBehind, onWantOlder: wantOlder });
        logs.set(room, log);
        els.logs.append(log.element);
      }
      return log;
    },

    /** A system line in every room's log: about the connection, which all rooms share. */
    addToEveryLog(text, kind, code = '') {
      for (const log of logs.values()) log.addSystem(text, kind, code);
    },

    dropLog(room) {
      logs.get(room)?.remove();
      logs.delete(room);
    },

    /** Puts `room`'s log on screen, and its name in the header. */
    showLog(room) {
      const log = this.log(room);
      if (log === shown) return;
      shown?.hide();
      shown = log;
      log.show();
      els.roomTitle.textContent = `#${room}`;
      els.messageInput.placeholder = `Message #${room}`;
    },

    /** Re-marks messages and names as own/other after the display name changed. */
    restyleOwn(name) {
      for (const log of logs.values()) log.restyleOwn(name);
      for (const item of els.onlineUsers.children) {
        if (!item.classList.contains('more')) item.classList.toggle('own', item.textContent === name);
      }
    },

    /** Says something to screen readers only, politely. */
    announce(text) {
      els.announcer.textContent = text;
    },

    // The worker's pid means nothing to people: it is kept where tests and tools can read it,
    // and nowhere on screen.
    setWorker(worker) {
      els.status.dataset.worker = worker;
    },

    setStatus(state, text) {
      els.status.dataset.state = state;
      if (state !== 'online') delete els.status.dataset.worker;
      els.statusText.textContent = text;
      els.statusDetail.textContent = '';
      els.retryButton.hidden = state !== 'offline';
    },

    // Outside what screen readers hear (aria-hidden): "retrying in 3 s" read out every second
    // would drown everything else.
    setStatusDetail(text) {
      els.statusDetail.textContent = text;
    },

    /** Who is in the shown room; null: not known (offline, or not joined yet). */
    setPresence(presence, ownName) {
      if (!presence) {
        els.onlineCount.textContent = '—';
        els.onlineCount.title = 'Online count not known yet';
        els.onlineUsers.replaceChildren();
        els.presence.classList.remove('has-users', 'known');
        els.presence.open = false;
        return;
      }
      const { online, users, truncated } = presence;
      els.onlineCount.textContent = `${online} online`;
      els.onlineCount.title = users.length ? users.join(', ') : `${online} online`;
      els.onlineUsers.replaceChildren(...users.map((user) => {
        const item = el(doc, 'li', user === ownName ? 'own' : '', user);
        item.dir = 'auto';
        return item;
      }));
      if (truncated) els.onlineUsers.append(el(doc, 'li', 'more', 'and others'));
      els.presence.classList.toggle('has-users', users.length > 0);
      els.presence.classList.add('known');
    },

    showError(text, code = '') {
      els.error.textContent = text;
      if (code) els.error.dataset.code = code;
      else delete els.error.dataset.code;
    },

    appendError(text) {
      els.error.textContent += text;
    },

    clearError() {
      els.error.textContent = '';
      delete els.error.dataset.code;
    },
  };
}
