// What a person does with rooms, and what it changes on the page: show one (its log, its
// presence, the address bar's "#name"), join one by name or link, leave one, and pick up the
// rooms of an earlier visit. The page is always in at least one room.

import { DEFAULT_ROOM, roomFromHash, roomNameProblem } from './room-names.js';
import { loadRooms, loadSnapshot, saveRooms } from './saved-rooms.js';

/** `onMembership()` is told when we join or leave a room. */
export function createRoomActions({ rooms, view, joins, outbox, limits, nameField, onMembership }) {
  let saved = ''; // what was saved last, so that only a change is written

  function save() {
    const names = rooms.names;
    const state = JSON.stringify([names, rooms.shown?.name ?? null]);
    if (state !== saved) saveRooms(names, rooms.shown?.name ?? null);
    saved = state;
  }

  /** Shows `name` (joined already). `history`: how the address bar follows (push, replace). */
  function show(name, history = 'push') {
    const room = rooms.show(name);
    if (!room) return;
    view.showLog(name);
    view.setPresence(room.presence, nameField.name);
    // A link to the room shown: a new entry, so that Back goes to the room before.
    if (roomFromHash(location.hash) !== name) {
      if (history === 'push') location.hash = name;
      else window.history.replaceState(null, '', `#${name}`);
    }
    save();
  }

  function add(name) {
    const room = rooms.add(name);
    view.log(name);
    return room;
  }

  /** Joins `name` if need be, and shows it; returns why it cannot, or ''. */
  function join(name) {
    const problem = roomNameProblem(name);
    if (problem) return problem;
    if (!rooms.has(name)) {
      if (!limits.speaksRooms) return 'This server has one room only.';
      if (rooms.list.length >= limits.maxRooms) {
        return `You are in ${limits.maxRooms} rooms, the most one page may be in: leave one first.`;
      }
      joins.join(add(name));
      onMembership();
    }
    show(name);
    return '';
  }

  // Off the list, its log and what waited for it gone; never the last room.
  function drop(name) {
    rooms.remove(name);
    view.dropLog(name);
    outbox.dropRoom(name);
    if (!rooms.list.length) join(DEFAULT_ROOM);
    else show(rooms.shown.name, 'replace');
  }

  function leave(name) {
    const room = rooms.get(name);
    if (!room || rooms.list.length < 2) return;
    joins.leave(room);
    drop(name);
    onMembership();
  }

  // The address goes back to the room shown, so that a reload does not ask again.
  function linkRefused(name, problem) {
    view.showError(`The link asks for a room “${name}”: ${problem}`, 'invalid_room');
    window.history.replaceState(null, '', `#${rooms.shown.name}`);
  }

  /** The address bar names a room: join it if need be, and show it. */
  function followHash() {
    const name = roomFromHash(location.hash);
    if (!name || name === rooms.shown?.name) return;
    const problem = join(name);
    if (problem) linkRefused(name, problem);
  }

  /**
   * The rooms of the last visit (or the default room), each with what this tab showed of it
   * before a reload; then the room the address asks for, or else the one shown last.
   */
  function restore() {
    const { names, shown } = loadRooms();
    const snapshot = loadSnapshot();
    for (const name of names.length ? names : [DEFAULT_ROOM]) {
      const room = add(name);
      const before = snapshot.get(name);
      if (before) restoreRoom(room, before);
    }
    const linked = roomFromHash(location.hash);
    const problem = linked ? join(linked) : '';
    if (!linked || problem) show(shown ?? rooms.first.name, 'replace');
    if (problem) linkRefused(linked, problem);
  }

  function restoreRoom(room, { epoch, since, messages }) {
    room.resume.restore(epoch, since);
    if (!messages.length) return;
    const log = view.log(room.name);
    log.batch(() => {
      log.addSystem('Earlier messages', 'history');
      for (const message of messages) {
        room.keep(message);
        log.addMessage(message, { own: message.sender === nameField.name, history: true });
      }
    });
  }

  return { show, join, leave, drop, followHash, restore, save };
}
