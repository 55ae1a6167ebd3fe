-- A client joins: it enters presence (if its worker is a member) and gets history and presence.
-- ARGV: label, since ("": none), "=" and since's epoch ("": none given), connection, name.
-- Returns: false if the hub lost its state (the worker must re-join); else epoch, 1 if since
-- is valid, the last id, the first id kept, in how many ms to call update, the presence state
-- (version, online, listed names as JSON, number of names), then id, ts, body per message.
local label, since, since_epoch = ARGV[FIRST_ARG], ARGV[FIRST_ARG + 1], ARGV[FIRST_ARG + 2]
local now = now_ms()
local epoch = redis.call('GET', EPOCH)
if not epoch then
  return false
end
local due = HEARTBEAT
if is_member(label) then
  set_connection(label, ARGV[FIRST_ARG + 3], ARGV[FIRST_ARG + 4])
  due = settle_presence(now)
end
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
