// Turns the server's frames (docs/protocol.md, and the rooms protocol) into what the page shows
// and remembers. Every frame of a room names it; one that does not (from a server without rooms)
// is about the room the connection was opened in. Frames about a room the page is not in (one
// just left) and frames of types the page does not know are ignored on purpose.

import { updateLimits } from './limits.js';
import { readPresence } from './presence.js';
import { isRoomName } from './room-names.js';
import { INVALID_RESUME_TEXT, errorFallback, noticeText, roomErrorText } from './texts.js';

function str(value, fallback = '') {
  return typeof value === 'string' ? value : fallback;
}

// A message frame (live, or from a history or an older frame) in the shape the view wants, or
// null if it is not a message.
function readMessage(frame) {
  if (!frame || typeof frame !== 'object') return null;
  if (frame.type !== undefined && frame.type !== 'message') return null;
  const id = Number.isSafeInteger(frame.id) ? frame.id : null;
  const ts = Number.isFinite(frame.ts) ? frame.ts : null;
  return { id, ts, sender: str(frame.sender, '?'), message: str(frame.message) };
}

/**
 * Returns `handleFrame(frame)`. What it reads and changes comes in `parts`: the `view`, the
 * server's `limits`, the `nameField`, the `outbox`, the `rooms` and their `joins`, the `pacer`,
 * the `scrollback`; `afterRateLimit()` says what to send again once a `rate_limited` hold is
 * over, and `welcomed(frame)` is told of each welcome.
 */
export function createFrameHandler(parts) {
  const { view, limits, nameField, outbox, rooms, joins, pacer, scrollback } = parts;
  const { afterRateLimit, welcomed } = parts;

  function roomOf(frame) {
    if (frame.room === undefined) return rooms.get(joins.urlRoom) ?? rooms.first;
    return typeof frame.room === 'string' ? rooms.get(frame.room) : null;
  }

  // A message of a history frame or a live one, unless it was shown already in its room.
  function acceptMessage(room, frame) {
    const message = readMessage(frame);
    if (message === null || message.id === null) return message;
    return room.resume.accept(message.id, message.ts) ? message : null;
  }

  // Shows a message in its room; returns whether it is one of ours.
  function render(room, message, history) {
    const own = message.sender === nameField.name;
    outbox.cameBack(room.name, message);
    if (message.id !== null) room.keep(message);
    view.log(room.name).addMessage(message, { own, history });
    return own;
  }

  // New messages in a room not shown: counted, and said once to screen readers.
  function unread(room, count) {
    const before = room.unread;
    rooms.arrived(room, count);
    if (before === 0 && room.unread > 0) view.announce(`New messages in #${room.name}`);
  }

  const handlers = {
    welcome(frame) {
      updateLimits(limits, frame);
      nameField.applyLimit();
      if (Number.isSafeInteger(frame.worker)) view.setWorker(frame.worker);
      view.addToEveryLog('Connected', 'welcome');
      welcomed(frame);
      scrollback.welcome();
      joins.welcome();
    },
    history(frame) {
      // A room we did not ask for (and are not leaving) is one the server put us in: its
      // default, for one it refused.
      const adopt = isRoomName(frame.room) && !joins.leaving.has(frame.room);
      const room = roomOf(frame) ?? (adopt ? rooms.add(frame.room) : null);
      if (!room) return;
      const resumed = frame.resumed === true;
      const log = view.log(room.name);
      // A resume carries on the run of ids shown; anything else is a new one (scrollback).
      const otherRun = room.resume.joinRun(frame.epoch);
      if (otherRun || !resumed) log.newRun();
      log.markHistory(resumed ? 'resumed' : 'fresh');
      const entries = Array.isArray(frame.messages) ? frame.messages : [];
      const unseen = entries.map((entry) => acceptMessage(room, entry)).filter(Boolean);
      let others = 0;
      if (unseen.length) {
        log.batch(() => {
          log.addSystem(resumed ? 'While you were away' : 'Earlier messages', 'history');
          for (const message of unseen) if (!render(room, message, true)) others += 1;
        });
      }
      // A join's history is the newest messages of the room: the server says when nothing
      // older is kept (one that does not say: none means none at all).
      if (!resumed && (frame.complete === true || !entries.length)) log.reachedBeginning();
      joins.historyArrived(room);
      scrollback.joined(room);
      if (resumed) unread(room, others);
      // Live messages follow the history with no gap: one of ours still out is not coming.
      outbox.settle(room.name, resumed && room.clean);
    },
    message(frame) {
      const room = roomOf(frame);
      const message = room && acceptMessage(room, frame);
      if (message && !render(room, message, false)) unread(room, 1);
    },
    older(frame) {
      const room = roomOf(frame);
      if (!room) return;
      const entries = Array.isArray(frame.messages) ? frame.messages : [];
      const messages = entries.map(readMessage).filter((message) => message && message.id !== null);
      scrollback.answered(room, messages, frame.complete === true);
    },
    error(frame) {
      const code = str(frame.code);
      const named = typeof frame.room === 'string' ? frame.room : null;
      if (code === 'invalid_resume') {
        // Our `since` means nothing to this server: its ids started again (a restart). Forget
        // ours so that its history renders in full.
        const room = roomOf(frame);
        if (!room) return;
        room.resume.forgetIds();
        room.clean = false;
        view.log(room.name).addSystem(INVALID_RESUME_TEXT, 'notice', code);
        return;
      }
      if (code === 'rate_limited') {
        // Not the person's doing: the page went too fast. It holds, then sends it again.
        pacer.hold(afterRateLimit());
        return;
      }
      if (named !== null && joins.refused(code, named)) return;
      if (scrollback.failed(code, named)) return;
      const text = (named !== null && roomErrorText(code, named)) || str(frame.message);
      view.showError(text || errorFallback(code, limits), code);
      outbox.refused(named);
    },
    notice(frame) {
      const code = str(frame.code);
      const text = noticeText(code) || str(frame.message) || code || 'notice';
      if (code === 'messages_missed') {
        // No room: the worker lost messages of every room, and maybe our own in flight. A new
        // hub brings its own run of ids.
        for (const room of rooms.list) {
          if (room.resume.switchRun(frame.epoch)) view.log(room.name).newRun();
        }
        outbox.unsure();
        view.addToEveryLog(text, 'notice', code);
        return;
      }
      const room = roomOf(frame);
      if (!room) return;
      if (code === 'resume_partial') room.clean = false;
      view.log(room.name).addSystem(text, 'notice', code);
    },
    presence(frame) {
      const room = roomOf(frame);
      if (!room) return;
      const presence = readPresence(frame);
      room.presence = presence;
      const { name } = nameField;
      if (room === rooms.shown) view.setPresence(presence, name);
      room.lines.update(presence, { ownName: name, formerNames: room.formerNames });
      // A frame that lists our current name has our rename in it: a leave of an old name that
      // did not come with it never will (another tab holds that name), and any later one is
      // someone else's, who took the name, so stop hiding them.
      if (!presence.truncated && presence.users.includes(name)) room.formerNames.clear();
    },
    left(frame) {
      joins.left(str(frame.room));
    },
  };

  return function handleFrame(frame) {
    if (Object.hasOwn(handlers, frame.type)) handlers[frame.type](frame);
  };
}
