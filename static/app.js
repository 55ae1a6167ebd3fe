// Entry point: wires the connection, the view and the form together.

import { ChatConnection, chatUrl } from './chat-connection.js';
import { createView } from './view.js';
import { loadName, saveName, normalizeName } from './names.js';

const MAX_MESSAGE_BYTES = 4096;
// A rejection only refers to what we just sent; after this long an error is
// about something else and must not resurrect old text into the input.
const PENDING_TTL_MS = 10_000;

const CLOSE_REASONS = {
  1000: 'connection closed',
  1001: 'server going away',
  1006: 'connection lost',
  1008: 'policy violation',
  1009: 'message too big',
  1011: 'server error',
  1012: 'server restarting',
  1013: 'too slow, dropped by the server',
};

const ERROR_FALLBACKS = {
  message_too_long: 'Message is too long.',
  invalid_json: 'The server could not read that message.',
  empty_message: 'Message is empty.',
  sender_too_long: 'Name is too long (max 64 characters).',
  hub_unavailable: 'Chat is temporarily unavailable. Try again in a moment.',
  rate_limited: 'You are sending too fast. Wait a moment.',
};

const utf8 = new TextEncoder();

function str(value, fallback = '') {
  return typeof value === 'string' ? value : fallback;
}

function main() {
  const view = createView(document);
  const { els } = view;

  let name = loadName();
  els.nameInput.value = name;

  // Defensive dedupe. Keyed by id, but remembering ts too: a server restart
  // resets its counter, and a reused id with a different ts is a genuinely
  // new message (it means a new id generation, so forget the old one).
  const seen = new Map();
  // The last text we sent, so a server rejection can put it back.
  let pending = null;

  function restorePending() {
    if (pending && Date.now() - pending.at < PENDING_TTL_MS && els.messageInput.value === '') {
      els.messageInput.value = pending.text;
    }
    pending = null;
  }

  function commitName() {
    const next = normalizeName(els.nameInput.value);
    if (!next) {
      els.nameInput.value = name; // empty name: keep the previous one
      return name;
    }
    els.nameInput.value = next;
    if (next !== name) {
      name = next;
      saveName(name);
      view.restyleOwn(name);
    }
    return name;
  }

  function handleMessage(frame) {
    const sender = str(frame.sender, '?');
    const message = str(frame.message);
    const id = Number.isFinite(frame.id) ? frame.id : null;
    const ts = Number.isFinite(frame.ts) ? frame.ts : null;
    if (id !== null) {
      if (seen.has(id)) {
        if (seen.get(id) === ts) return; // duplicate
        seen.clear();
      }
      seen.set(id, ts);
      // Bounded memory: the view keeps at most ~1000 entries anyway.
      if (seen.size > 5000) seen.delete(seen.keys().next().value);
    }
    const own = sender === name;
    if (own && pending && pending.text === message) pending = null;
    view.addMessage({ id, ts, sender, message }, own);
  }

  const handlers = {
    welcome(frame) {
      const worker = frame.worker;
      view.addSystem(worker !== undefined && worker !== null
        ? `Connected (worker ${String(worker)})` : 'Connected', 'welcome');
    },
    message: handleMessage,
    error(frame) {
      const code = str(frame.code);
      view.showError(str(frame.message) || ERROR_FALLBACKS[code] || 'The server rejected that.', code);
      restorePending();
    },
    notice(frame) {
      view.addSystem(str(frame.message) || str(frame.code, 'notice'), 'notice');
    },
    presence(frame) {
      const users = Array.isArray(frame.users) ? frame.users.map((u) => String(u)) : [];
      const online = Number.isFinite(frame.online) ? frame.online : users.length;
      view.setPresence(online, users);
    },
  };

  function onState(state, info) {
    if (state === 'connecting') {
      view.setStatus('connecting', 'connecting…');
    } else if (state === 'online') {
      view.setStatus('online', 'online');
      // A stale "not connected" hint would be confusing once we're back.
      if (els.error.dataset.code === 'offline') view.clearError();
    } else {
      const secs = Math.max(1, Math.ceil(info.retryInMs / 1000));
      view.setStatus('offline', `disconnected — retrying in ${secs} s`);
      view.clearPresence();
      if (info.wasOpen) {
        const why = CLOSE_REASONS[info.code] || 'connection closed';
        const reason = info.reason ? `: ${info.reason}` : '';
        view.addSystem(`Disconnected — ${why} (${info.code})${reason}`, 'disconnect');
        // 1009 means the server refused what we just sent: give it back.
        if (info.code === 1009) restorePending();
      }
      pending = null;
    }
  }

  const conn = new ChatConnection(chatUrl(), {
    onState,
    onFrame(frame) {
      const handler = Object.prototype.hasOwnProperty.call(handlers, frame.type) ? handlers[frame.type] : null;
      if (handler) handler(frame); // unknown types are ignored on purpose
    },
  });

  function notConnected() {
    view.showError('Not connected — your message was not sent. Reconnecting…', 'offline');
  }

  els.nameInput.addEventListener('change', commitName);

  els.form.addEventListener('submit', (event) => {
    event.preventDefault();
    const sender = commitName();
    const text = els.messageInput.value.trim();
    els.messageInput.focus();
    if (!text) return; // silently: Enter on an empty box is not an error
    const bytes = utf8.encode(text).length;
    if (bytes > MAX_MESSAGE_BYTES) {
      view.showError(`Message is too long (${bytes} bytes, max ${MAX_MESSAGE_BYTES}).`, 'message_too_long');
      return;
    }
    if (!conn.send({ sender, message: text })) {
      notConnected();
      return;
    }
    view.clearError();
    pending = { text, at: Date.now() };
    els.messageInput.value = '';
  });

  // With Send disabled, the browser silently ignores Enter; say why instead.
  els.messageInput.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.isComposing && els.sendButton.disabled) {
      event.preventDefault();
      if (els.messageInput.value.trim()) notConnected();
    }
  });

  els.retryButton.addEventListener('click', () => conn.retryNow());
  // The OS telling us the network is back is a good moment to skip the wait.
  window.addEventListener('online', () => conn.retryNow());

  conn.start();
  document.documentElement.dataset.ready = '1';
}

main();
