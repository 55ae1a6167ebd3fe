-- A client joins a room: it enters the room's presence and gets its history and presence. A
-- room that does not exist is made, if one can make way for it (else the join is refused).
-- ARGV: label, the worker's epoch, the last message id it saw, room, since ("": none), "=" and
-- since's epoch ("": none given), connection, name.
-- Returns: false if the worker must re-join first (see in_step); else epoch, 1 if since is
-- valid, the last id, the room's first id kept (of a resume: from which the messages sent
-- miss none), in how many ms to call update, 1 if refused (and nothing follows), 1 if
-- nothing older than the messages sent is kept, then the room's presence state (version,
-- online, listed names as JSON, number of names), then id, ts, body per message.
local label, worker_epoch, seen = ARGV[FIRST_ARG], ARGV[FIRST_ARG + 1], tonumber(ARGV[FIRST_ARG + 2])
local room, since, since_epoch = ARGV[FIRST_ARG + 3], ARGV[FIRST_ARG + 4], ARGV[FIRST_ARG + 5]
local connection, name = ARGV[FIRST_ARG + 6], ARGV[FIRST_ARG + 7]
if not in_step(label, worker_epoch, seen) then
  return false
end
local epoch = worker_epoch
local last = last_id()
if not room_exists(room) then
  if not (valid_room(room) and make_way_for_a_room()) then
    redis.call('INCR', REFUSED_ROOMS)
    return {epoch, 1, last, last + 1, settle_presence(), 1}
  end
  make_room(room)
end
set_member(label, connection .. ' ' .. room, name)
-- A room nobody has written to for a while has its old messages dropped before they show.
prune_history(room)
local due = settle_presence()
local valid = since == '' or (tonumber(since) <= last and (since_epoch == '' or since_epoch == '=' .. epoch))
local resuming = since ~= '' and valid
local after = resuming and since or '0'
-- One more than is sent tells whether a resume is sent all it missed.
local entries = redis.call('XREVRANGE', history_key(room), '+', '(' .. after .. '-0',
  'COUNT', HISTORY_SIZE + 1)
local first_available = history_trimmed(room) + 1
if #entries > HISTORY_SIZE then
  local left_out = table.remove(entries)
  if resuming then
    -- More than a join gets (the rest is a scroll away): say where what is sent starts.
    first_available = tonumber(string.match(left_out[1], '^%d+')) + 1
  end
end
-- Whether the room keeps nothing older than the oldest message sent (nothing at all, if none).
local oldest = entries[#entries]
local older_kept = redis.call('XREVRANGE', history_key(room),
  oldest and ('(' .. oldest[1]) or '+', '-', 'COUNT', 1)
local reply = {epoch, valid and 1 or 0, last, first_available, due, 0, #older_kept == 0 and 1 or 0}
for _, value in ipairs(presence_state(room)) do
  reply[#reply + 1] = value
end
for i = #entries, 1, -1 do
  local id, fields = entries[i][1], entries[i][2]
  reply[#reply + 1] = string.match(id, '^%d+')
  reply[#reply + 1] = fields[2]
  reply[#reply + 1] = fields[4]
end
return reply
