-- Shared by every trio_chat hub script (prepended to each): the key layout, presence
-- bookkeeping, and the log. Each script runs atomically, so the state below is always
-- consistent and every worker sees one order of messages and presence frames.
--
-- Keys (all under the prefix, ARGV[1]):
--   :log               stream of everything workers read, in the one order: a message has the
--                      id "<message id>-0" (fields t: ms timestamp, b: body); a presence frame
--                      "<last message id>-<n>", n >= 1 (fields v o u n j l, publish_presence)
--   :history           stream of the last messages only (same ids and fields), for joins
--   :last_id           the last message id given
--   :epoch             names the run of ids; clients resume with since=<epoch>:<id>
--   :epoch:start       hash: where the run starts in the log (position, last id before it)
--   :workers           sorted set: worker label -> lease deadline (ms)
--   :worker:<label>    hash: connection id -> display name ("" for none)
--   :online            connections online, all workers
--   :names             hash: display name -> connections using it
--   :presence:version  version of the last presence frame
--   :presence:shown    set: the names in the last presence frame
--   :presence:at       when the last presence frame was published (ms)
--   :presence:dirty    exists while presence changed since the last frame
--
-- Common arguments: ARGV[1] prefix, ARGV[2] history size, ARGV[3] log length (approximate),
-- ARGV[4] names listed in a presence frame at most, ARGV[5] presence interval (ms),
-- ARGV[6] lease (ms), ARGV[7] heartbeat (ms). Each script's own arguments follow.

local P = ARGV[1]
local HISTORY_SIZE = tonumber(ARGV[2])
local LOG_LENGTH = tonumber(ARGV[3])
local MAX_LISTED = tonumber(ARGV[4])
local PRESENCE_INTERVAL = tonumber(ARGV[5])
local LEASE = tonumber(ARGV[6])
local HEARTBEAT = tonumber(ARGV[7])
local FIRST_ARG = 8

local LOG = P .. ':log'
local HISTORY = P .. ':history'
local LAST_ID = P .. ':last_id'
local EPOCH = P .. ':epoch'
local EPOCH_START = P .. ':epoch:start'
local WORKERS = P .. ':workers'
local ONLINE = P .. ':online'
local NAMES = P .. ':names'
local PRESENCE_VERSION = P .. ':presence:version'
local PRESENCE_SHOWN = P .. ':presence:shown'
local PRESENCE_AT = P .. ':presence:at'
local PRESENCE_DIRTY = P .. ':presence:dirty'

local function worker_key(label)
  return P .. ':worker:' .. label
end

local function now_ms()
  local time = redis.call('TIME')
  return tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end

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

-- Presence: one connection's name changes (name false: the connection is gone).
local function set_connection(label, connection, name)
  local key = worker_key(label)
  local previous = redis.call('HGET', key, connection)
  if previous == name then
    return
  end
  if previous then
    redis.call('HDEL', key, connection)
    redis.call('DECR', ONLINE)
    if previous ~= '' and redis.call('HINCRBY', NAMES, previous, -1) <= 0 then
      redis.call('HDEL', NAMES, previous)
    end
  end
  if name then
    redis.call('HSET', key, connection, name)
    redis.call('INCR', ONLINE)
    if name ~= '' then
      redis.call('HINCRBY', NAMES, name, 1)
    end
  end
  redis.call('SET', PRESENCE_DIRTY, 1)
end

-- Applies changes given as argument pairs (connection, name) from ARGV[first] on; a name of
-- "\0" (never a valid display name) means the connection is gone.
local function apply_presence(label, first)
  for i = first, #ARGV, 2 do
    local name = ARGV[i + 1]
    if name == '\0' then
      name = false
    end
    set_connection(label, ARGV[i], name)
  end
end

local function drop_worker(label)
  local key = worker_key(label)
  local connections = redis.call('HGETALL', key)
  for i = 1, #connections, 2 do
    set_connection(label, connections[i], false)
  end
  redis.call('DEL', key)
  redis.call('ZREM', WORKERS, label)
end

-- Workers whose lease ran out died without leaving: their users leave presence.
local function expire_workers(now)
  local expired = redis.call('ZRANGEBYSCORE', WORKERS, '-inf', now, 'LIMIT', 0, 64)
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

local function renew_lease(label, now)
  redis.call('ZADD', WORKERS, now + LEASE, label)
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

-- The names online, sorted, at most MAX_LISTED of them, and how many there are in all.
local function listed_names()
  local names = redis.call('HKEYS', NAMES)
  table.sort(names)
  local listed = {}
  for i = 1, math.min(#names, MAX_LISTED) do
    listed[i] = names[i]
  end
  return names, listed
end

local function presence_state()
  local names, listed = listed_names()
  return {
    tonumber(redis.call('GET', PRESENCE_VERSION) or '0'),
    tonumber(redis.call('GET', ONLINE) or '0'),
    json_list(listed),
    #names,
  }
end

-- A presence frame in the log: the state now, and the names that appeared and disappeared
-- since the previous frame.
local function publish_presence(now)
  local version = redis.call('INCR', PRESENCE_VERSION)
  redis.call('SET', PRESENCE_AT, now)
  redis.call('DEL', PRESENCE_DIRTY)
  local names, listed = listed_names()
  local shown = {}
  for _, name in ipairs(redis.call('SMEMBERS', PRESENCE_SHOWN)) do
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
  redis.call('DEL', PRESENCE_SHOWN)
  for i = 1, #names, 1000 do
    redis.call('SADD', PRESENCE_SHOWN, unpack(names, i, math.min(i + 999, #names)))
  end
  append_to_log(presence_entry_id(),
    'v', version, 'o', redis.call('GET', ONLINE) or '0', 'u', json_list(listed), 'n', #names,
    'j', json_list(joined), 'l', json_list(left))
end

-- Publishes a presence frame if presence changed and the interval has passed; returns in how
-- many ms the caller should call again (a presence frame or its heartbeat is due then).
local function settle_presence(now)
  if redis.call('EXISTS', PRESENCE_DIRTY) == 0 then
    return HEARTBEAT
  end
  local due = tonumber(redis.call('GET', PRESENCE_AT) or '0') + PRESENCE_INTERVAL
  if now >= due then
    publish_presence(now)
    return HEARTBEAT
  end
  return math.min(HEARTBEAT, due - now)
end

-- Publishes the bodies ARGV[first..last] in order; returns the last id given.
local function publish_messages(now, first, last)
  local id = last_id()
  for i = first, last do
    id = id + 1
    append_to_log(id .. '-0', 't', now, 'b', ARGV[i])
    -- At once: should a later command of this script fail, the ids given stay given.
    redis.call('SET', LAST_ID, id)
    redis.call('XADD', HISTORY, 'MAXLEN', HISTORY_SIZE, id .. '-0', 't', now, 'b', ARGV[i])
  end
  return id
end
