-- A worker joins (or re-joins) with all its members.
-- ARGV: label, the last message id it saw (0: none), its epoch ("": none), a fresh epoch for a
-- new run of ids, the log position it read up to ("": none), the id and time (field t) of the
-- last message it read from the log ("", "": none), then presence pairs (member
-- "<connection id> <room>", name).
-- Returns: epoch, 1 if the worker can read on from its position without missing a message,
-- the position to read from, the last message id before that position (-1: the worker's own
-- position, kept), and in how many ms to call update.
local label, seen, epoch = ARGV[FIRST_ARG], tonumber(ARGV[FIRST_ARG + 1]), ARGV[FIRST_ARG + 2]
local fresh_epoch, position = ARGV[FIRST_ARG + 3], ARGV[FIRST_ARG + 4]
local read_id, read_time = ARGV[FIRST_ARG + 5], ARGV[FIRST_ARG + 6]

-- Whether the log has another message than the one the worker read under its id: Redis went
-- back in time (a restart that lost its last writes, a lagging replica promoted) to before
-- that message, and a worker that re-joined first was given its id again.
local function read_id_given_again()
  if read_id == '' then
    return false
  end
  local entry = redis.call('XRANGE', LOG, read_id .. '-0', read_id .. '-0')[1]
  return entry ~= nil and entry[2][2] ~= read_time
end

expire_workers()
local current = redis.call('GET', EPOCH)
if not current or (current == epoch and (last_id() < seen or read_id_given_again())) then
  -- A new Redis, one that lost its data, or one that went back in time: ids given before may
  -- be given again, so a new run of ids starts (clients resuming from the old one get the
  -- whole history, and the workers tell their clients messages may be missing).
  current = fresh_epoch
  redis.call('SET', EPOCH, current)
  -- Message ids must stay above every entry the log still has.
  local top = redis.call('XREVRANGE', LOG, '+', '-', 'COUNT', 1)[1]
  if top and tonumber(string.match(top[1], '^%d+')) > last_id() then
    redis.call('SET', LAST_ID, string.match(top[1], '^%d+'))
  end
  -- Where the new run starts in the log: workers of the old run read on from there, so that
  -- they miss nothing published in the new run before they re-join.
  redis.call('HSET', EPOCH_START, 'position', top and top[1] or '0-0', 'id', last_id())
end
local continuous = 0
if current == epoch then
  -- Continuous when nothing was published since, or the next message is still in the log
  -- (trimming drops the oldest first, so everything after it is there too).
  local next_id = (seen + 1) .. '-0'
  if last_id() == seen or #redis.call('XRANGE', LOG, next_id, next_id) == 1 then
    continuous = 1
  end
end
local position_id = -1
if current ~= epoch and epoch ~= '' then
  -- A worker of an older run: its position means nothing here; it reads the new run whole.
  local start = redis.call('HMGET', EPOCH_START, 'position', 'id')
  position, position_id = start[1] or '', tonumber(start[2] or '-1')
end
if position == '' then
  position_id = last_id()
  local top = redis.call('XREVRANGE', LOG, '+', '-', 'COUNT', 1)
  position = top[1] and top[1][1] or '0-0'
end
-- What the hub still has of this worker is replaced: only what changed shows in presence.
replace_members(label, FIRST_ARG + 7)
renew_lease(label)
forget_idle_rooms()
return {current, continuous, position, position_id, settle_presence()}
