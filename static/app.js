// Entry point: wires the connection, the view and the form together.

import { ChatConnection, chatUrl } from './chat-connection.js';
import { createView } from './view.js';
import { loadName, saveName, normalizeName } from './names.js';
import { SeenIds } from './seen-ids.js';
import { readPresence, describeChange } from './presence.js';
import { CLOSE_REASONS, ERROR_FALLBACKS, INVALID_RESUME_TEXT, NOTICE_TEXTS } from './texts.js';

// The server's default TRIO_CHAT_MAX_MESSAGE_BYTES, until its welcome frame says what it is
// configured with (an older server's does not: then one set lower answers with a
// message_too_long error, which gives the text back).
const DEFAULT_MAX_MESSAGE_BYTES = 4096;
// A rejection only refers to what we just sent; after this long an error is
// about something else and must not resurrect old text into the input.
const PENDING_TTL_MS = 10_000;

const utf8 = new TextEncoder();

function str(value, fallback = '') {
  return typeof value === 'string' ? value : fallback;
}

function main() {
  const view = createView(document);
  const { els } = view;

  let name = loadName();
  els.nameInput.value = name;
  // Names this tab went by before a rename: the server reports them as
  // "left" once it has the new one, which is not news to us.
  const formerNames = new Set();
  const seen = new SeenIds();
  // The server's run of ids (from its history frame), sent back with `since`.
  let epoch = '';
  // What the server refuses, as its welcome frame says.
  let maxMessageBytes = DEFAULT_MAX_MESSAGE_BYTES;
  // Connections opened so far, to tell which one a pending message went out on.
  let connections = 0;
  // The last message we sent and have not seen come back ({text, sender, at,
  // connection}), so a server rejection or a lost connection can give it back.
  let pending = null;
  let countdown = null;

  function restorePending() {
    if (pending && Date.now() - pending.at < PENDING_TTL_MS && els.messageInput.value === '') {
      els.messageInput.value = pending.text;
    }
    pending = null;
  }

  // After a reconnect's history frame: a message sent on an earlier connection
  // that is not in it (nor came live before the drop) may never have reached
  // the server. Give it back, or say so if the box already holds something new.
  function settleLostPending() {
    if (!pending || pending.connection === connections) return;
    const { text } = pending;
    pending = null;
    const lost = 'The connection dropped before your message came back: it may not have been sent.';
    if (els.messageInput.value === '') {
      els.messageInput.value = text;
      view.showError(`${lost} It is back in the box.`, 'unsent');
    } else {
      const chars = Array.from(text);
      const preview = chars.length > 40 ? `${chars.slice(0, 40).join('')}…` : text;
      view.showError(`${lost} It was: “${preview}”`, 'unsent');
    }
  }

  function commitName() {
    const next = normalizeName(els.nameInput.value);
    if (!next) {
      els.nameInput.value = name; // empty name: keep the previous one
      return name;
    }
    els.nameInput.value = next;
    if (next !== name) {
      formerNames.add(name);
      formerNames.delete(next);
      name = next;
      saveName(name);
      view.restyleOwn(name);
      // Others see the new name at once, not only with our next message. (Offline, the next
      // connection carries it in its URL.)
      conn.send({ type: 'rename', name });
    }
    return name;
  }

  // A message frame (live or from a history frame) in the shape the view
  // wants, or null if it is not a message or was shown already.
  function acceptMessage(frame) {
    if (!frame || typeof frame !== 'object') return null;
    if (frame.type !== undefined && frame.type !== 'message') return null;
    const id = Number.isSafeInteger(frame.id) ? frame.id : null;
    const ts = Number.isFinite(frame.ts) ? frame.ts : null;
    if (id !== null && !seen.accept(id, ts)) return null;
    return { id, ts, sender: str(frame.sender, '?'), message: str(frame.message) };
  }

  function render(message, history) {
    const own = message.sender === name;
    // Our own message back (live, or in the history of a resume): it was sent.
    if (pending && message.sender === pending.sender && message.message === pending.text) pending = null;
    view.addMessage(message, { own, history });
  }

  function announcePresence({ users, truncated, joined, left }) {
    const newcomers = joined.filter((who) => who !== name);
    const leavers = left.filter((who) => !formerNames.has(who));
    // A frame that lists our current name has our rename in it: a leave of an old name that
    // did not come with it never will (another tab holds that name), and any later one is
    // someone else's, who took the name, so stop hiding them.
    if (!truncated && users.includes(name)) formerNames.clear();
    for (const line of [describeChange(newcomers, 'joined'), describeChange(leavers, 'left')]) {
      if (line) view.addSystem(line, 'presence');
    }
  }

  const handlers = {
    welcome(frame) {
      if (Number.isSafeInteger(frame.max_message_bytes) && frame.max_message_bytes > 0) {
        maxMessageBytes = frame.max_message_bytes;
      }
      const worker = frame.worker;
      if (Number.isSafeInteger(worker)) view.setWorker(worker);
      view.addSystem(Number.isSafeInteger(worker)
        ? `Connected (worker ${worker})` : 'Connected', 'welcome');
    },
    history(frame) {
      if (typeof frame.epoch === 'string') epoch = frame.epoch;
      const resumed = frame.resumed === true;
      view.markHistory(resumed ? 'resumed' : 'fresh');
      const entries = Array.isArray(frame.messages) ? frame.messages : [];
      const unseen = entries.map(acceptMessage).filter(Boolean);
      if (unseen.length) {
        view.batch(() => {
          view.addSystem(resumed ? 'While you were away' : 'Earlier messages', 'history');
          for (const message of unseen) render(message, true);
        });
      }
      // Live messages follow the history with no gap: if ours is not in it, it is lost.
      settleLostPending();
    },
    message(frame) {
      const message = acceptMessage(frame);
      if (message) render(message, false);
    },
    error(frame) {
      const code = str(frame.code);
      if (code === 'invalid_resume') {
        // Our `since` means nothing to this server: its ids started again
        // (a restart). Forget ours so that its history renders in full.
        seen.clear();
        view.addSystem(INVALID_RESUME_TEXT, 'notice', code);
        return;
      }
      view.showError(str(frame.message) || ERROR_FALLBACKS[code] || 'The server rejected that.', code);
      restorePending();
    },
    notice(frame) {
      const code = str(frame.code);
      if (code === 'messages_missed' && typeof frame.epoch === 'string' && frame.epoch !== epoch) {
        // A new hub took over with a run of ids of its own, which may repeat ours: forget
        // them, and resume from its run next time.
        epoch = frame.epoch;
        seen.clear();
      }
      view.addSystem(NOTICE_TEXTS[code] || str(frame.message) || code || 'notice', 'notice', code);
    },
    presence(frame) {
      const presence = readPresence(frame);
      view.setPresence(presence.online, presence.users, name, presence.truncated);
      announcePresence(presence);
    },
  };

  // "retrying in N s", counted down so the state never looks stuck.
  function startCountdown(retryInMs) {
    const deadline = Date.now() + retryInMs;
    const tick = () => {
      const secs = Math.max(1, Math.ceil((deadline - Date.now()) / 1000));
      view.setStatusDetail(`— retrying in ${secs} s`);
    };
    tick();
    countdown = setInterval(tick, 1000);
  }

  function onState(state, info) {
    clearInterval(countdown);
    if (state === 'connecting') {
      view.setStatus('connecting', 'connecting…');
    } else if (state === 'online') {
      connections += 1;
      view.setStatus('online', 'online');
      // A stale "not connected" hint would be confusing once we're back.
      if (els.error.dataset.code === 'offline') view.clearError();
    } else {
      view.setStatus('offline', 'disconnected');
      startCountdown(info.retryInMs);
      view.clearPresence();
      if (info.wasOpen) {
        const why = CLOSE_REASONS[info.code] || 'connection closed';
        const reason = info.reason ? `: ${info.reason}` : '';
        view.addSystem(`Disconnected — ${why} (${info.code})${reason}`, 'disconnect');
        // 1009 means the server refused what we just sent: give it back.
        if (info.code === 1009) restorePending();
      }
      // Otherwise a message in flight is kept: the next history frame tells whether it arrived.
    }
  }

  // Every attempt asks under the current name and, once we have joined, for
  // what came after the last message seen (a resume). In a room that was
  // empty that is everything since the start of the run of ids (0).
  const since = () => seen.highest ?? (epoch ? 0 : null);
  const conn = new ChatConnection(() => chatUrl({ name, since: since(), epoch }), {
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
  // Enter in the name box confirms the name; it must not send the message.
  els.nameInput.addEventListener('keydown', (event) => {
    if (event.key !== 'Enter' || event.isComposing) return;
    event.preventDefault();
    commitName();
    els.messageInput.focus();
  });

  els.form.addEventListener('submit', (event) => {
    event.preventDefault();
    const sender = commitName();
    const text = els.messageInput.value.trim();
    els.messageInput.focus();
    if (!text) return; // silently: Enter on an empty box is not an error
    const bytes = utf8.encode(text).length;
    if (bytes > maxMessageBytes) {
      view.showError(`Message is too long (${bytes} bytes, max ${maxMessageBytes}).`, 'message_too_long');
      return;
    }
    if (!conn.send({ sender, message: text })) {
      notConnected();
      return;
    }
    view.clearError();
    pending = { text, sender, at: Date.now(), connection: connections };
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
