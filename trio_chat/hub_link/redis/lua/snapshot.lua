-- A client joins: it enters presence and gets history and presence.
-- ARGV: label, the worker's epoch, the last message id it saw, since ("": none), "=" and
-- since's epoch ("": none given), connection, name.
-- Returns: false if the worker must re-join first (see in_step); else epoch, 1 if since
-- is valid, the last id, the first id kept, in how many ms to call update, the presence state
-- (version, online, listed names as JSON, number of names), then id, ts, body per message.
local label, worker_epoch, seen = ARGV[FIRST_ARG], ARGV[FIRST_ARG + 1], tonumber(ARGV[FIRST_ARG + 2])
local since, since_epoch = ARGV[FIRST_ARG + 3], ARGV[FIRST_ARG + 4]
local now = now_ms()
if not in_step(label, worker_epoch, seen) then
  return false
end
local epoch = worker_epoch
set_connection(label, ARGV[FIRST_ARG + 5], ARGV[FIRST_ARG + 6])
local due = settle_presence(now)
local last = last_id()
local valid = since == '' or (tonumber(since) <= last and (since_epoch == '' or since_epoch == '=' .. epoch))
local after = (since ~= '' and valid) and since or '0'
local entries = redis.call('XREVRANGE', HISTORY, '+', '(' .. after .. '-0', 'COUNT', HISTORY_SIZE)
local oldest = redis.call('XRANGE', HISTORY, '-', '+', 'COUNT', 1)
local first_available = oldest[1] and tonumber(string.match(oldest[1][1], '^%d+')) or last + 1
local reply = {epoch, valid and 1 or 0, last, first_available, due}
for _, value in ipairs(presence_state()) do
  reply[#reply + 1] = value
end
for i = #entries, 1, -1 do
  local id, fields = entries[i][1], entries[i][2]
  reply[#reply + 1] = string.match(id, '^%d+')
  reply[#reply + 1] = fields[2]
  reply[#reply + 1] = fields[4]
end
return reply
