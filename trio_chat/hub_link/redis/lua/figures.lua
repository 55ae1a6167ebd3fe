-- A worker hands in its figures (every second, and a final report as it leaves) and gets its
-- server's back. The same books as trio_chat/metrics/board.py, per server (the workers of one
-- master on one host): a hash, :figures:<server>, with
--   retired      what gone workers had counted (Counts JSON, summed here)
--   <pid>        "<at ms> <state> <tally> <report JSON>", state one of
--                  live    reporting: its newest report (one with a lower tally came late:
--                          ignored);
--                  lapsed  silent past the lease: its counts show as retired, but are kept
--                          apart for LAPSED_KEPT, should it report again (then its new counts,
--                          which go on from them, take their place);
--                  left    gone, its final counts in retired; late reports are ignored for a
--                          lease ("<at> left 0 ").
-- The hash expires KEPT after the last report: a server gone that long is gone for good.
-- ARGV: server, "report" or "final", the worker's pid, its report's tally, its report (JSON),
-- KEPT (ms), LAPSED_KEPT (ms).
-- Returns: rooms with someone in them, the retired counts (JSON, lapsed workers' included),
-- then the report (JSON) of every live worker.
local server, what, pid = ARGV[FIRST_ARG], ARGV[FIRST_ARG + 1], ARGV[FIRST_ARG + 2]
local tally, report = ARGV[FIRST_ARG + 3], ARGV[FIRST_ARG + 4]
local KEPT, LAPSED_KEPT = tonumber(ARGV[FIRST_ARG + 5]), tonumber(ARGV[FIRST_ARG + 6])
local key = P .. ':figures:' .. server

-- Counts add field by field: numbers add, tables (objects, and lists element by element) add
-- key by key. Never changes its arguments.
local function add(a, b)
  if type(a) == 'number' and type(b) == 'number' then
    return a + b
  end
  if type(a) ~= 'table' or type(b) ~= 'table' then
    return b
  end
  local sum = {}
  for k, v in pairs(a) do
    sum[k] = v
  end
  for k, v in pairs(b) do
    if sum[k] == nil then
      sum[k] = v
    else
      sum[k] = add(sum[k], v)
    end
  end
  return sum
end

local function counts_of(report_json)
  return cjson.decode(report_json)['counts'] or {}
end

local retired = {}
local entries = {}
local stored = redis.call('HGETALL', key)
for i = 1, #stored, 2 do
  local field, value = stored[i], stored[i + 1]
  if field == 'retired' then
    retired = cjson.decode(value)
  else
    local at, state, entry_tally, json = string.match(value, '^(%d+) (%a+) (%S+) (.*)$')
    if at then
      entries[field] = {at = tonumber(at), state = state, tally = entry_tally, json = json}
    end
  end
end

-- Workers silent past their lease lapse; what is no longer needed is forgotten.
for field, entry in pairs(entries) do
  if entry.state == 'live' and NOW - entry.at > LEASE then
    entry.state = 'lapsed'
  end
  if entry.state == 'lapsed' and NOW - entry.at > LAPSED_KEPT then
    retired = add(retired, counts_of(entry.json))
    entries[field] = nil
  elseif entry.state == 'left' and NOW - entry.at > LEASE then
    entries[field] = nil
  end
end

local entry = entries[pid]
local behind = entry ~= nil and tonumber(tally) < tonumber(entry.tally)
if what == 'final' then
  if not (entry and entry.state == 'left') then
    retired = add(retired, counts_of(behind and entry.json or report))
    entries[pid] = {at = NOW, state = 'left', tally = '0', json = ''}
  end
elseif not (entry and (entry.state == 'left' or (entry.state == 'live' and behind))) then
  if entry and entry.state == 'lapsed' and behind then
    -- Counts that do not go on from the old ones: another process got that pid.
    retired = add(retired, counts_of(entry.json))
  end
  entries[pid] = {at = NOW, state = 'live', tally = tally, json = report}
end

redis.call('DEL', key)
redis.call('HSET', key, 'retired', cjson.encode(retired))
local shown, live = retired, {}
for field, kept in pairs(entries) do
  redis.call('HSET', key, field,
    string.format('%d %s %s %s', kept.at, kept.state, kept.tally, kept.json))
  if kept.state == 'lapsed' then
    shown = add(shown, counts_of(kept.json))
  elseif kept.state == 'live' then
    live[#live + 1] = kept.json
  end
end
redis.call('PEXPIRE', key, KEPT)
local rooms = redis.call('ZCOUNT', ROOMS, '-inf', -1)
return {rooms, cjson.encode(shown), unpack(live)}
