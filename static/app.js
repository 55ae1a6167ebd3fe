// Entry point: builds the page's parts and wires them to one connection.
//
// What the page remembers lives in a few small objects, each owned by the part that changes it:
//   limits     the server's limits (limits.js), set by each welcome frame
//   nameField  our display name (name-field.js)
//   rooms      the rooms joined, the one shown, and per room where its conversation is, who is
//              in it and what is unread (rooms.js); room-joins.js keeps the server in step
//   outbox     the messages typed and not yet back (outbox.js), sent through
//   pacer      which keeps everything sent under the server's rate limit (send-pacer.js)
//   status     the countdown to the next attempt (status-display.js)
//   scrollback the requests for older messages out (scrollback.js); what each room's log shows
//              of its past is the log's (message-log.js)

import { BusiestRooms } from './busiest-rooms.js';
import { ChatConnection, chatUrl } from './chat-connection.js';
import { bindComposer } from './composer.js';
import { createFrameHandler } from './frame-handlers.js';
import { DEFAULT_LIMITS } from './limits.js';
import { NameField } from './name-field.js';
import { Outbox } from './outbox.js';
import { PresenceLines } from './presence-lines.js';
import { createRoomActions } from './room-actions.js';
import { RoomJoins } from './room-joins.js';
import { RoomList } from './room-list.js';
import { isRoomName } from './room-names.js';
import { Rooms } from './rooms.js';
import { saveSnapshot } from './saved-rooms.js';
import { Scrollback } from './scrollback.js';
import { SendPacer } from './send-pacer.js';
import { StatusDisplay } from './status-display.js';
import { createView } from './view.js';

// A join or leave shows in the server's list of rooms a moment later.
const MEMBERSHIP_SETTLE_MS = 1_000;
// A rename this recent may be what a `rate_limited` answer refused: it is sent again.
const RENAME_RECENT_MS = 3_000;
const TOO_BIG = 1009; // the close code of a frame past the server's size limit

function main() {
  const view = createView(document, { wantOlder: (log) => scrollback.ask(log) });
  const { els } = view;
  const limits = { ...DEFAULT_LIMITS };
  let conn = null;
  let connections = 0;
  let renameSentAt = -Infinity;

  const pacer = new SendPacer((frame) => conn.send(frame));
  const rooms = new Rooms({
    onChange: () => roomsChanged(),
    makeLines: (room) => new PresenceLines((text) => view.log(room.name).addSystem(text, 'presence')),
  });
  const outbox = new Outbox({
    box: els.messageInput,
    view,
    pacer,
    isJoined: (name) => rooms.get(name)?.joined === true,
    onChange: ({ size }) => {
      els.queueStatus.textContent = size > 1 ? `Sending ${size} messages…` : '';
    },
  });
  const joins = new RoomJoins({
    rooms,
    pacer,
    limits,
    events: {
      joined: (room) => outbox.settle(room.name, false),
      refused: (room, text, code) => {
        view.showError(text, code);
        actions.drop(room.name);
      },
      retrying: (room, text) => view.log(room.name).addSystem(text, 'notice', 'hub_unavailable'),
    },
  });

  const scrollback = new Scrollback({ rooms, view, pacer, limits, ownName: () => nameField.name });

  function sendRename() {
    renameSentAt = performance.now();
    pacer.send({ type: 'rename', name: nameField.name });
  }

  const nameField = new NameField({
    input: els.nameInput,
    next: els.messageInput,
    limits,
    onRename(name, previous) {
      // Its leave in each room's presence is our rename, which we say ourselves, once.
      for (const room of rooms.list) {
        room.formerNames.add(previous);
        room.formerNames.delete(name);
      }
      view.restyleOwn(name);
      view.addToEveryLog(`You are now ${name}`, 'rename');
      // Others see the new name at once, not only with our next message. (Offline, the next
      // connection carries it in its URL.)
      sendRename();
    },
  });
  const actions = createRoomActions({
    rooms, view, joins, outbox, limits, nameField,
    onMembership: () => busiest.refresh(MEMBERSHIP_SETTLE_MS),
  });
  const composer = bindComposer({ view, limits, nameField, outbox, room: () => rooms.shown.name });
  const roomList = new RoomList(document, {
    show: actions.show,
    join: actions.join,
    leave: actions.leave,
    opened: () => busiest.refresh(),
  });
  const busiest = new BusiestRooms({
    isRoomName,
    show: (list) => roomList.showBusiest(list, new Set(rooms.names)),
    unavailable: (text) => roomList.busiestUnavailable(text),
    inView: () => roomList.isOpen,
  });

  function roomsChanged() {
    roomList.render(rooms);
    actions.save();
    const unread = rooms.totalUnread;
    const where = rooms.shown ? `#${rooms.shown.name} · ` : '';
    document.title = `${unread ? `(${unread}) ` : ''}${where}trio_chat`;
  }

  // After a `rate_limited` hold, what it may have refused goes again: joins and leaves still
  // unanswered, a recent rename, and the message out if it did not come back meanwhile.
  function afterRateLimit() {
    const resendMessage = outbox.rateLimited();
    const renamed = performance.now() - renameSentAt < RENAME_RECENT_MS;
    return () => {
      joins.askAgain();
      scrollback.askAgain();
      if (renamed) sendRename();
      resendMessage();
    };
  }

  function onState(state, info) {
    status.show(state, info);
    composer.setOnline(state === 'online');
    if (state === 'online') {
      connections += 1;
      pacer.reset();
      outbox.connectionOpened();
      joins.connectionOpened(connections);
    } else if (state === 'offline') {
      pacer.reset();
      joins.disconnected();
      scrollback.disconnected();
      view.setPresence(null);
      // 1009 means the server refused what we just sent: give it back. Otherwise a message out
      // is kept: the next history of its room tells whether it arrived.
      if (info.wasOpen && info.code === TOO_BIG) outbox.refused();
    }
  }

  const status = new StatusDisplay(view);
  const handleFrame = createFrameHandler({
    view, limits, nameField, outbox, rooms, joins, pacer, scrollback, afterRateLimit,
    welcomed: () => {
      composer.refresh();
      busiest.refresh();
    },
  });
  // Every attempt opens in the first room, resuming it after the last message seen there, under
  // the current name; the other rooms are joined once the server has welcomed us.
  conn = new ChatConnection(() => {
    const first = joins.roomForUrl();
    return chatUrl({ room: first?.name, since: first?.since ?? null, name: nameField.name });
  }, { onState, onFrame: handleFrame });

  actions.restore();
  window.addEventListener('hashchange', actions.followHash);
  // What a reload picks up; saved as the page goes, or is hidden (a phone may never say it goes).
  window.addEventListener('pagehide', () => saveSnapshot(rooms.list));
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'hidden') saveSnapshot(rooms.list);
  });
  els.retryButton.addEventListener('click', () => conn.retryNow());
  // The OS telling us the network is back is a good moment to skip the wait.
  window.addEventListener('online', () => conn.retryNow());

  conn.start();
  busiest.start(); // its first list comes with the first welcome
  document.documentElement.dataset.ready = '1';
}

main();
