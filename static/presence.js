// Presence frames: who is online, and one discreet line per change.

const MAX_LISTED = 3; // more names than this in one line become "and N others"

function strings(value) {
  return Array.isArray(value) ? value.filter((v) => typeof v === 'string') : [];
}

/** The parts of a presence frame the page uses, with bad fields made harmless. */
export function readPresence(frame) {
  const users = strings(frame.users);
  const online = Number.isSafeInteger(frame.online) && frame.online >= 0 ? frame.online : users.length;
  const truncated = frame.truncated === true; // the server lists at most 1000 names
  return { online, users, truncated, joined: strings(frame.joined), left: strings(frame.left) };
}

function listNames(names) {
  if (names.length <= MAX_LISTED) {
    return names.length === 1 ? names[0] : `${names.slice(0, -1).join(', ')} and ${names.at(-1)}`;
  }
  const others = names.length - (MAX_LISTED - 1);
  return `${names.slice(0, MAX_LISTED - 1).join(', ')} and ${others} others`;
}

/** "bob joined", "ann and carl left"; null when there is nothing to say. */
export function describeChange(names, verb) {
  return names.length ? `${listNames(names)} ${verb}` : null;
}
