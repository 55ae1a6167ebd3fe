-- Shared by every trio_chat hub script (prepended to each): the key layout, rooms, presence
-- bookkeeping, and the log. Each script runs atomically, so the state below is always
-- consistent and every worker sees one order of messages and presence frames.
--
-- Keys (all under the prefix, ARGV[1]); a room name is [a-z0-9][a-z0-9_-]{0,63}, so it
-- needs no escaping in a key (and has no ':' or ' '):
--   :log                 stream of everything workers read, in the one order, all rooms: a
--                        message has the id "<message id>-0" (fields t: ms timestamp, r: room,
--                        b: body); a presence frame "<last message id>-<n>", n >= 1 (fields
--                        r v o u n j l, publish_presence)
--   :last_id             the last message id given (one sequence for all rooms)
--   :epoch               names the run of ids; clients resume with since=<epoch>:<id>
--   :epoch:start         hash: where the run starts in the log (position, last id before it)
--   :workers             sorted set: worker label -> lease deadline (ms)
--   :worker:<label>      hash: member "<connection id> <room>" -> display name ("" for none)
--   :rooms               sorted set: every room that exists -> minus its connections online,
--                        so that ZRANGE lists the busiest first, then by name
--   :rooms:empty         sorted set: the rooms nobody is in -> when last active (ms): when
--                        someone last left or wrote to it (the longest idle makes way first)
--   :room:<room>         hash: online (connections in the room), version (of its last
--                        presence frame), presence_at (ms, when that frame was published)
--   :room:<room>:names   hash: display name -> the room's connections using it
--   :room:<room>:shown   set: the names in the room's last presence frame
--   :history:<room>      stream of the room's messages (same ids, fields t b): its newest
--                        RETENTION_MESSAGES at most, none older than RETENTION (dropped from
--                        the head when the room is written to or joined, see prune_history)
--   :history:<room>:trimmed  the newest id the room no longer keeps (its first available id
--                        is one past it)
--                        The two history keys outlive the room's other keys (a room nobody is
--                        in is forgotten, its history is not: made again, the room finds it);
--                        both expire RETENTION after the room's last message, when all of it
--                        is past the retention anyway.
--   :presence:due        sorted set: the rooms whose presence changed since their last
--                        frame -> when their next frame is due (ms)
--   :bad_bodies          bodies dropped because they are not the chat body of a room
--   :refused_rooms       joins of a new room refused because no room could make way
--   :figures:<server>    hash: the figures of one server's workers (see figures.lua)
--
-- Common arguments: ARGV[1] prefix, ARGV[2] history size (messages a join gets at most, per
-- room), ARGV[3] log length (approximate), ARGV[4] names listed in a presence frame at most,
-- ARGV[5] presence interval (ms), ARGV[6] lease (ms), ARGV[7] heartbeat (ms), ARGV[8] rooms
-- kept at most, ARGV[9] how long an empty room is kept (ms), ARGV[10] messages kept per room
-- at most, ARGV[11] how long a message is kept (ms). Each script's own arguments follow.

local P = ARGV[1]
local HISTORY_SIZE = tonumber(ARGV[2])
local LOG_LENGTH = tonumber(ARGV[3])
local MAX_LISTED = tonumber(ARGV[4])
local PRESENCE_INTERVAL = tonumber(ARGV[5])
local LEASE = tonumber(ARGV[6])
local HEARTBEAT = tonumber(ARGV[7])
local MAX_ROOMS = tonumber(ARGV[8])
local EMPTY_ROOM_KEPT = tonumber(ARGV[9])
local RETENTION_MESSAGES = tonumber(ARGV[10])
local RETENTION = tonumber(ARGV[11])
local FIRST_ARG = 12

-- Rooms left empty and idle that one script forgets at most (the scripts that run at every
-- worker's heartbeat forget the rest soon after).
local ROOMS_FORGOTTEN_PER_CALL = 8
-- Workers whose lease ran out that one script drops at most.
local WORKERS_EXPIRED_PER_CALL = 64
-- History entries one script drops at most (past RETENTION_MESSAGES, or too old), in all
-- rooms: a history further over is trimmed by the scripts that next write to or join its
-- room. Above the bodies one update publishes (256), so that a full room stays at its count.
local HISTORY_DROPPED_PER_CALL = 1000

local LOG = P .. ':log'
local LAST_ID = P .. ':last_id'
local EPOCH = P .. ':epoch'
local EPOCH_START = P .. ':epoch:start'
local WORKERS = P .. ':workers'
local ROOMS = P .. ':rooms'
local EMPTY_ROOMS = P .. ':rooms:empty'
local PRESENCE_DUE = P .. ':presence:due'
local BAD_BODIES = P .. ':bad_bodies'
local REFUSED_ROOMS = P .. ':refused_rooms'

local function worker_key(label)
  return P .. ':worker:' .. label
end

local function room_key(room)
  return P .. ':room:' .. room
end

local function names_key(room)
  return P .. ':room:' .. room .. ':names'
end

local function shown_key(room)
  return P .. ':room:' .. room .. ':shown'
end

local function history_key(room)
  return P .. ':history:' .. room
end

local function trimmed_key(room)
  return P .. ':history:' .. room .. ':trimmed'
end

local function now_ms()
  local time = redis.call('TIME')
  return tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end

-- The time of this script's run, on Redis's clock (one clock for all hosts).
local NOW = now_ms()

local function last_id()
  return tonumber(redis.call('GET', LAST_ID) or '0')
end

local function json_list(items)
  -- cjson encodes an empty table as an object.
  if #items == 0 then
    return '[]'
  end
  return cjson.encode(items)
end

-- Rooms

-- A room name (protocol.is_room_name), or nil. Anything else is skipped, never an error: a
-- script that fails half-way keeps what it did so far.
local function valid_room(room)
  if room and #room <= 64 and string.match(room, '^[a-z0-9][a-z0-9_%-]*$') then
    return room
  end
  return nil
end

-- The room of a body made by encode_chat_body ('{"room":"<room>",...'); nil for anything else.
local function body_room(body)
  return valid_room(string.match(body, '^{"room":"([^"]*)"'))
end

-- The room of a member ("<connection id> <room>"); nil for anything else.
local function member_room(member)
  return valid_room(string.match(member, '^%d+ (.+)$'))
end

local function room_exists(room)
  return redis.call('ZSCORE', ROOMS, room) ~= false
end

-- A new room, empty (a room made again finds the history it had, if it has not expired).
local function make_room(room)
  redis.call('HSET', room_key(room), 'online', 0, 'version', 0, 'presence_at', 0)
  redis.call('ZADD', ROOMS, 0, room)
  redis.call('ZADD', EMPTY_ROOMS, NOW, room)
end

-- Only ever called for a room nobody is in. Its history stays, until it expires.
local function forget_room(room)
  redis.call('DEL', room_key(room), names_key(room), shown_key(room))
  redis.call('ZREM', ROOMS, room)
  redis.call('ZREM', EMPTY_ROOMS, room)
  redis.call('ZREM', PRESENCE_DUE, room)
end

-- Whether a new room may be made: there is place, or the longest idle empty room makes way.
local function make_way_for_a_room()
  if redis.call('ZCARD', ROOMS) < MAX_ROOMS then
    return true
  end
  local idle = redis.call('ZRANGE', EMPTY_ROOMS, 0, 0)[1]
  if not idle then
    return false
  end
  forget_room(idle)
  return true
end

-- Empty rooms nobody has joined, left or written to for EMPTY_ROOM_KEPT are forgotten.
local function forget_idle_rooms()
  local idle = redis.call('ZRANGEBYSCORE', EMPTY_ROOMS, '-inf', NOW - EMPTY_ROOM_KEPT,
    'LIMIT', 0, ROOMS_FORGOTTEN_PER_CALL)
  for _, room in ipairs(idle) do
    forget_room(room)
  end
end

-- Presence

-- The room's presence frame falls due one interval after its last (unless already due).
local function presence_changed(room)
  local published_at = tonumber(redis.call('HGET', room_key(room), 'presence_at') or '0')
  redis.call('ZADD', PRESENCE_DUE, 'NX', published_at + PRESENCE_INTERVAL, room)
end

local function count_online(room, change)
  local online = redis.call('HINCRBY', room_key(room), 'online', change)
  redis.call('ZADD', ROOMS, -online, room)
  if online == 0 then
    redis.call('ZADD', EMPTY_ROOMS, NOW, room)
  else
    redis.call('ZREM', EMPTY_ROOMS, room)
  end
end

-- One member's name changes (name false: the connection has left the room). A member is
-- "<connection id> <room>"; a room a member enters is made if need be (a worker that re-joins
-- brings back the rooms of its connections).
local function set_member(label, member, name)
  local key = worker_key(label)
  local previous = redis.call('HGET', key, member)
  if previous == name then
    return
  end
  local room = member_room(member)
  if not room then
    return
  end
  if not previous and not room_exists(room) then
    make_room(room)
  end
  local names = names_key(room)
  if previous then
    redis.call('HDEL', key, member)
    count_online(room, -1)
    if previous ~= '' and redis.call('HINCRBY', names, previous, -1) <= 0 then
      redis.call('HDEL', names, previous)
    end
  end
  if name then
    redis.call('HSET', key, member, name)
    count_online(room, 1)
    if name ~= '' then
      redis.call('HINCRBY', names, name, 1)
    end
  end
  presence_changed(room)
end

-- Changes given as argument pairs (member, name) from ARGV[first] on; a name of "\0" (never a
-- valid display name) means the connection has left the room.
local function apply_presence(label, first)
  for i = first, #ARGV, 2 do
    local name = ARGV[i + 1]
    if name == '\0' then
      name = false
    end
    set_member(label, ARGV[i], name)
  end
end

-- All of a worker's members become those given as pairs from ARGV[first] on (only the
-- rooms where something changed get a presence frame).
local function replace_members(label, first)
  local wanted = {}
  for i = first, #ARGV, 2 do
    wanted[ARGV[i]] = ARGV[i + 1]
  end
  for _, member in ipairs(redis.call('HKEYS', worker_key(label))) do
    if not wanted[member] then
      set_member(label, member, false)
    end
  end
  for member, name in pairs(wanted) do
    set_member(label, member, name)
  end
end

-- A worker is gone: its members leave all their rooms.
local function drop_worker(label)
  local key = worker_key(label)
  for _, member in ipairs(redis.call('HKEYS', key)) do
    set_member(label, member, false)
  end
  redis.call('DEL', key)
  redis.call('ZREM', WORKERS, label)
end

-- Workers whose lease ran out died without leaving: their users leave presence.
local function expire_workers()
  local expired = redis.call('ZRANGEBYSCORE', WORKERS, '-inf', NOW,
    'LIMIT', 0, WORKERS_EXPIRED_PER_CALL)
  for _, label in ipairs(expired) do
    drop_worker(label)
  end
end

local function is_member(label)
  return redis.call('ZSCORE', WORKERS, label) ~= false
end

-- Whether a worker may go on as it is: still a member, in the same run of ids, and Redis has
-- not gone back in time (a restart from an older snapshot, a lagging replica promoted) to
-- before an id the worker saw, which it would then give again.
local function in_step(label, epoch, seen)
  return is_member(label) and redis.call('GET', EPOCH) == epoch and last_id() >= seen
end

local function renew_lease(label)
  redis.call('ZADD', WORKERS, NOW + LEASE, label)
end

local function append_to_log(id, ...)
  redis.call('XADD', LOG, 'MAXLEN', '~', LOG_LENGTH, id, ...)
end

-- A presence frame's entry id: after the newest entry, never with sequence 0 (the messages').
local function presence_entry_id()
  local id = last_id()
  local top = redis.call('XREVRANGE', LOG, '+', '-', 'COUNT', 1)[1]
  if top then
    local ms, sequence = string.match(top[1], '^(%d+)-(%d+)$')
    if tonumber(ms) >= id then
      return ms .. '-' .. (tonumber(sequence) + 1)
    end
  end
  return id .. '-1'
end

-- The names in the room, sorted, at most MAX_LISTED of them, and how many there are in all.
local function listed_names(room)
  local names = redis.call('HKEYS', names_key(room))
  table.sort(names)
  local listed = {}
  for i = 1, math.min(#names, MAX_LISTED) do
    listed[i] = names[i]
  end
  return names, listed
end

-- The room's presence as of now, with the version of its last frame: version, online, the
-- listed names as JSON, how many names in all.
local function presence_state(room)
  local names, listed = listed_names(room)
  local state = redis.call('HMGET', room_key(room), 'version', 'online')
  return {tonumber(state[1] or '0'), tonumber(state[2] or '0'), json_list(listed), #names}
end

-- A presence frame of the room in the log: the state now, and the names that appeared and
-- disappeared since the room's previous frame.
local function publish_presence(room)
  local key = room_key(room)
  local version = redis.call('HINCRBY', key, 'version', 1)
  redis.call('HSET', key, 'presence_at', NOW)
  redis.call('ZREM', PRESENCE_DUE, room)
  local names, listed = listed_names(room)
  local shown_names = shown_key(room)
  local shown = {}
  for _, name in ipairs(redis.call('SMEMBERS', shown_names)) do
    shown[name] = true
  end
  local current, joined, left = {}, {}, {}
  for _, name in ipairs(names) do
    current[name] = true
    if not shown[name] then
      joined[#joined + 1] = name
    end
  end
  for name in pairs(shown) do
    if not current[name] then
      left[#left + 1] = name
    end
  end
  table.sort(left)
  redis.call('DEL', shown_names)
  for i = 1, #names, 1000 do
    redis.call('SADD', shown_names, unpack(names, i, math.min(i + 999, #names)))
  end
  append_to_log(presence_entry_id(),
    'r', room, 'v', version, 'o', redis.call('HGET', key, 'online') or '0',
    'u', json_list(listed), 'n', #names, 'j', json_list(joined), 'l', json_list(left))
end

-- Publishes the presence frames that are due; returns in how many ms the caller should call
-- again (the next frame held back, or its heartbeat, is due then).
local function settle_presence()
  for _, room in ipairs(redis.call('ZRANGEBYSCORE', PRESENCE_DUE, '-inf', NOW)) do
    publish_presence(room)
  end
  local next_due = redis.call('ZRANGE', PRESENCE_DUE, 0, 0, 'WITHSCORES')[2]
  if next_due then
    return math.min(HEARTBEAT, math.max(0, tonumber(next_due) - NOW))
  end
  return HEARTBEAT
end

-- History

local history_drops_left = HISTORY_DROPPED_PER_CALL

-- The message id of the oldest message the room keeps, or nil.
local function history_head(room)
  local head = redis.call('XRANGE', history_key(room), '-', '+', 'COUNT', 1)[1]
  return head and tonumber(string.match(head[1], '^%d+'))
end

-- The newest id the room no longer keeps: its first available id is one past it.
local function history_trimmed(room)
  local trimmed = redis.call('GET', trimmed_key(room))
  if trimmed then
    return tonumber(trimmed)
  end
  -- A history kept by an older version of the scripts (its oldest message on is kept), or
  -- none (never written, or expired): the room keeps nothing given so far.
  local head = history_head(room)
  return head and head - 1 or last_id()
end

-- Drops the head of the room's history: what is past RETENTION_MESSAGES, and what is older
-- than RETENTION (by its timestamp, up to the first message young enough: times go up with
-- the ids as long as Redis's clock does). The newest id dropped becomes the room's trimmed
-- id.
local function prune_history(room)
  local key = history_key(room)
  local excess = redis.call('XLEN', key) - RETENTION_MESSAGES
  local oldest_kept = NOW - RETENTION
  local start, dropped = '-', nil
  while history_drops_left > 0 do
    local entry = redis.call('XRANGE', key, start, '+', 'COUNT', 1)[1]
    -- Fields t, b: t is the message's time (ms); a malformed one counts as old.
    if not entry or (excess <= 0 and (tonumber(entry[2][2]) or 0) >= oldest_kept) then
      break
    end
    dropped, start = entry[1], '(' .. entry[1]
    excess = excess - 1
    history_drops_left = history_drops_left - 1
  end
  if dropped then
    local id = string.match(dropped, '^%d+')
    redis.call('XTRIM', key, 'MINID', id .. '-1')
    -- Its expiry stays that of the history (none only for a history of an older version).
    redis.call('SET', trimmed_key(room), id, 'KEEPTTL')
  end
end

-- The room keeps the message for RETENTION at most, among its last RETENTION_MESSAGES.
local function keep_in_history(room, id, body)
  local key, trimmed = history_key(room), trimmed_key(room)
  if redis.call('EXISTS', trimmed) == 0 then
    -- A history starts (again, if it had expired): nothing before this message is kept.
    redis.call('SET', trimmed, (history_head(room) or id) - 1)
  end
  redis.call('XADD', key, id .. '-0', 't', NOW, 'b', body)
  -- A history nobody writes to any more goes once all of it is past the retention.
  redis.call('PEXPIRE', key, RETENTION)
  redis.call('PEXPIRE', trimmed, RETENTION)
  prune_history(room)
end

-- Messages

-- Publishes the bodies ARGV[first..last] in order; returns the last id given. A body that is
-- not the chat body of a room is dropped (and counted): workers only send what
-- encode_chat_body made.
local function publish_messages(first, last)
  local id = last_id()
  for i = first, last do
    local body = ARGV[i]
    local room = body_room(body)
    if room then
      if not room_exists(room) then
        make_room(room)
      end
      id = id + 1
      append_to_log(id .. '-0', 't', NOW, 'r', room, 'b', body)
      -- At once: should a later command of this script fail, the ids given stay given.
      redis.call('SET', LAST_ID, id)
      keep_in_history(room, id, body)
      -- Written to: an empty room is active (only updated if it is empty).
      redis.call('ZADD', EMPTY_ROOMS, 'XX', NOW, room)
    else
      redis.call('INCR', BAD_BODIES)
    end
  end
  return id
end
