// How one entry of a room's log looks: a chat message (sender, time, text) or a discreet system
// line. Everything that came from the network goes through textContent (or dataset / title,
// which are never parsed as HTML).

import { el } from './dom.js';

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

/**
 * A chat message (`{id, ts, sender, message}`). `own`: sent under our name; `history`: sent
 * before this connection (history on joining, a resume, or older messages scrolled back to).
 */
export function messageEntry(doc, message, { own = false, history = false } = {}) {
  const { id, ts, sender } = message;
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

  const text = el(doc, 'div', 'text', message.message);
  text.dir = 'auto';
  item.append(meta, text);
  return item;
}

/**
 * A discreet one-line system entry. `kind` says what it is (welcome, notice, disconnect,
 * presence, history, rename); `code` is the server's code.
 */
export function systemEntry(doc, text, kind = 'info', code = '') {
  const item = el(doc, 'div', 'system', text);
  item.dir = 'auto';
  item.dataset.kind = kind;
  if (code) item.dataset.code = code;
  return item;
}
