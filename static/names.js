// Display names: a friendly random default, persisted in localStorage.

import { DEFAULT_LIMITS } from './limits.js';

const STORAGE_KEY = 'trio_chat.name';

const ADJECTIVES = [
  'brave', 'calm', 'clever', 'cosy', 'eager', 'fuzzy', 'gentle', 'happy',
  'jolly', 'keen', 'lucky', 'merry', 'nimble', 'quiet', 'rapid', 'shy',
  'sunny', 'swift', 'tidy', 'witty',
];
const ANIMALS = [
  'badger', 'beaver', 'crane', 'falcon', 'ferret', 'gecko', 'heron', 'koala',
  'lemur', 'lynx', 'marmot', 'moose', 'otter', 'panda', 'puffin', 'quokka',
  'raven', 'seal', 'tapir', 'wombat',
];

function randomInt(max) {
  if (globalThis.crypto && crypto.getRandomValues) {
    return crypto.getRandomValues(new Uint32Array(1))[0] % max;
  }
  return Math.floor(Math.random() * max);
}

// The number suffix makes two people picking the same pair unlikely, which
// matters because "own" messages are recognised by name equality.
export function randomName() {
  const adj = ADJECTIVES[randomInt(ADJECTIVES.length)];
  const animal = ANIMALS[randomInt(ANIMALS.length)];
  return `${adj}-${animal}-${10 + randomInt(90)}`;
}

// Trim and cut to the server's limit. The server counts characters (code
// points), not UTF-16 units, so slice by code point to never split an emoji in half.
export function normalizeName(raw, maxChars) {
  const chars = Array.from(String(raw ?? '').trim());
  return chars.slice(0, maxChars).join('').trim();
}

// localStorage can throw (disabled storage, private mode quotas): never let
// that break the chat, just fall back to an unpersisted name. The page loads
// the name before any welcome frame, so it is cut to the server's default limit.
export function loadName(maxChars = DEFAULT_LIMITS.maxSenderChars) {
  let stored = null;
  try {
    stored = localStorage.getItem(STORAGE_KEY);
  } catch { /* storage unavailable */ }
  const name = normalizeName(stored, maxChars);
  if (name) return name;
  const fresh = randomName();
  saveName(fresh);
  return fresh;
}

export function saveName(name) {
  try {
    localStorage.setItem(STORAGE_KEY, name);
  } catch { /* storage unavailable */ }
}
