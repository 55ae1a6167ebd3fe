-- A worker hands in its figures (every second, and a final report as it leaves) and gets its
-- server's back. The same books as trio_chat/metrics/board.py, per server (every worker
-- answering on one host's ports): a hash, :figures:<server>, with
--   retired      what gone workers had counted (Counts JSON, summed here)
--   <pid>        "<at ms> <state> <tally> <start>\n<baseline>\n<report>": its process start
--                time ("-": unknown), its first report here (JSON: the worker counts from its
--                counts on) and its newest report (JSON); state one of
--                  live    reporting: its newest report (one with a lower tally came late:
--                          ignored);
--                  lapsed  silent past the lease: shown with hub_up false, its counts kept,
--                          until LAPSED_KEPT after it was last heard from (then folded into
--                          retired and forgotten; should it report again before, it goes on);
--                  left    gone, its final counts in retired; late reports are ignored for a
--                          lease ("<at> left 0 -\n\n").
-- A worker's counts are its report's minus its baseline's. A report of a lapsed worker with a
-- lower tally, or of a process started at another time, is another process with that pid: the
-- old one's counts are folded into retired, and the report is the new one's baseline.
-- Counts are kept exactly: numbers are written back as integers ("%d"; Lua's numbers are
-- doubles, exact up to 2^53), never by cjson, which keeps 14 significant digits.
-- The hash expires KEPT after the last report: a server gone that long is gone for good.
-- ARGV: server, "report" or "final", the worker's pid, its report's tally, its process start
-- time ("-": unknown), its report (JSON), KEPT (ms), LAPSED_KEPT (ms).
-- Returns: rooms with someone in them, the retired counts (JSON), then for every worker live
-- or lapsed: its state, its baseline report (JSON) and its newest report (JSON).
local server, what, pid = ARGV[FIRST_ARG], ARGV[FIRST_ARG + 1], ARGV[FIRST_ARG + 2]
local tally, start, report = ARGV[FIRST_ARG + 3], ARGV[FIRST_ARG + 4], ARGV[FIRST_ARG + 5]
local KEPT, LAPSED_KEPT = tonumber(ARGV[FIRST_ARG + 6]), tonumber(ARGV[FIRST_ARG + 7])
local key = P .. ':figures:' .. server

-- a + sign * b, field by field: numbers add, tables (objects, and lists element by element)
-- add key by key, a missing one counting as 0. Never changes its arguments.
local function combine(a, b, sign)
  if type(b) == 'number' then
    return (type(a) == 'number' and a or 0) + sign * b
  end
  if type(b) ~= 'table' then
    return a
  end
  local sum = {}
  if type(a) == 'table' then
    for k, v in pairs(a) do
      sum[k] = v
    end
  end
  for k, v in pairs(b) do
    sum[k] = combine(sum[k], v, sign)
  end
  return sum
end

-- JSON of counts: integers exactly, other numbers with all 17 digits; a table with number keys
-- is a list.
local function encode(value)
  local kind = type(value)
  if kind == 'number' then
    if value == math.floor(value) and math.abs(value) < 2 ^ 53 then
      return string.format('%d', value)
    end
    return string.format('%.17g', value)
  elseif kind == 'table' then
    local items = {}
    if type(next(value)) == 'number' then
      for i = 1, #value do
        items[i] = encode(value[i])
      end
      return '[' .. table.concat(items, ',') .. ']'
    end
    for k, v in pairs(value) do
      items[#items + 1] = cjson.encode(tostring(k)) .. ':' .. encode(v)
    end
    return '{' .. table.concat(items, ',') .. '}'
  elseif kind == 'boolean' then
    return tostring(value)
  end
  return 'null'
end

local function counts_of(report_json)
  if report_json == '' then
    return {}
  end
  return cjson.decode(report_json)['counts'] or {}
end

-- What a worker counted since its baseline.
local function counted(entry)
  return combine(counts_of(entry.json), counts_of(entry.baseline), -1)
end

local retired = {}
local entries = {}
local stored = redis.call('HGETALL', key)
for i = 1, #stored, 2 do
  local field, value = stored[i], stored[i + 1]
  if field == 'retired' then
    retired = cjson.decode(value)
  else
    local at, state, entry_tally, entry_start, baseline, json =
      string.match(value, '^(%d+) (%a+) (%S+) (%S+)\n([^\n]*)\n(.*)$')
    if at then
      entries[field] = {at = tonumber(at), state = state, tally = entry_tally,
                        start = entry_start, baseline = baseline, json = json}
    end
  end
end

-- Workers silent past their lease lapse; what is no longer needed is forgotten.
for field, entry in pairs(entries) do
  if entry.state == 'live' and NOW - entry.at > LEASE then
    entry.state = 'lapsed'
  end
  if entry.state == 'lapsed' and NOW - entry.at > LAPSED_KEPT then
    retired = combine(retired, counted(entry), 1)
    entries[field] = nil
  elseif entry.state == 'left' and NOW - entry.at > LEASE then
    entries[field] = nil
  end
end

local function left()
  return {at = NOW, state = 'left', tally = '0', start = '-', baseline = '', json = ''}
end

local entry = entries[pid]
local behind = entry ~= nil and tonumber(tally) < tonumber(entry.tally)
if what == 'final' then
  if entry == nil then
    entries[pid] = left()  -- Not known here: its final report would have been its baseline.
  elseif entry.state ~= 'left' then
    if not behind then
      entry.json = report
    end
    retired = combine(retired, counted(entry), 1)
    entries[pid] = left()
  end
elseif not (entry and entry.state == 'left') then
  if entry and ((start ~= '-' and entry.start ~= '-' and start ~= entry.start)
                or (entry.state == 'lapsed' and behind)) then
    -- Another process got that pid.
    retired = combine(retired, counted(entry), 1)
    entry = nil
  end
  if entry == nil then
    entries[pid] = {at = NOW, state = 'live', tally = tally, start = start,
                    baseline = report, json = report}
  elseif not behind then
    entry.at, entry.state, entry.tally, entry.start, entry.json = NOW, 'live', tally, start, report
  end
end

redis.call('DEL', key)
local retired_json = encode(retired)
redis.call('HSET', key, 'retired', retired_json)
local rooms = redis.call('ZCOUNT', ROOMS, '-inf', -1)
local reply = {rooms, retired_json}
for field, kept in pairs(entries) do
  redis.call('HSET', key, field, string.format('%d %s %s %s\n%s\n%s',
    kept.at, kept.state, kept.tally, kept.start, kept.baseline, kept.json))
  if kept.state ~= 'left' then
    reply[#reply + 1] = kept.state
    reply[#reply + 1] = kept.baseline
    reply[#reply + 1] = kept.json
  end
end
redis.call('PEXPIRE', key, KEPT)
return reply
