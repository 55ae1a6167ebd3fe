-- A worker publishes messages and reports presence changes; also its heartbeat.
-- ARGV: label, the number of bodies, the bodies, then presence pairs.
-- Returns: the last message id given (-1: the worker is not a member any more and must
-- re-join; nothing was published), and in how many ms to call again.
local label, count = ARGV[FIRST_ARG], tonumber(ARGV[FIRST_ARG + 1])
local bodies = FIRST_ARG + 2
local now = now_ms()
expire_workers(now)
if not is_member(label) then
  -- Its lease ran out, or Redis lost its data: publishing now could reuse ids.
  return {-1, 0}
end
renew_lease(label, now)
local id = last_id()
if count > 0 then
  id = publish_messages(now, bodies, bodies + count - 1)
end
apply_presence(label, bodies + count)
return {id, settle_presence(now)}
