-- A worker publishes messages and reports presence changes; also its heartbeat.
-- ARGV: label, its epoch, the last message id it saw, the number of bodies, the bodies, then
-- presence pairs (member "<connection id> <room>", name; "\0": gone).
-- Returns: the last message id given (-1: the worker is not a member any more and must
-- re-join; nothing was published), in how many ms to call again, and how many of the bodies
-- were published (one that is not a chat body of a room is dropped).
local label, epoch, seen = ARGV[FIRST_ARG], ARGV[FIRST_ARG + 1], tonumber(ARGV[FIRST_ARG + 2])
local count = tonumber(ARGV[FIRST_ARG + 3])
local bodies = FIRST_ARG + 4
expire_workers()
if not in_step(label, epoch, seen) then
  -- Its lease ran out, or Redis lost its data or went back: it must re-join first.
  return {-1, 0, 0}
end
renew_lease(label)
local before = last_id()
local id = before
if count > 0 then
  id = publish_messages(bodies, bodies + count - 1)
end
apply_presence(label, bodies + count)
forget_idle_rooms()
return {id, settle_presence(), id - before}
