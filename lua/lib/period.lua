-- lib/period.lua: calendar periods in an IANA timezone, on the server clock.
--
-- A period spec is "<kind>:<week start>:<zone>", kind one of day|week|month|quarter|year|total,
-- week start 1 (Monday) or 0 (Sunday). The zone's UTC offsets are stored by apply_policy in the
-- policy hash as "tz:<zone>" = "<utc s>:<offset s>,..." (transitions, ascending), computed from
-- the tz database by the client; UTC needs none. Period boundaries are local midnights.

-- Howard Hinnant's days_from_civil / civil_from_days (proleptic Gregorian, day 0 = 1970-01-01).
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = (m + 9) % 12
  local doy = math.floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

local function civil_from_days(z)
  z = z + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
    - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return y, m, d
end

local TZ_CACHE = {} -- per call: begin() empties it (a policy change may bring new offsets)
local function tz_table(zone)
  if zone == 'UTC' then return nil end
  local tbl = TZ_CACHE[zone]
  if tbl then return tbl end
  tbl = {}
  local raw = redis.call('HGET', K_POLICY, 'tz:' .. zone)
  if raw then
    for ts, off in string.gmatch(raw, '(-?%d+):(-?%d+)') do
      tbl[#tbl + 1] = {tonumber(ts), tonumber(off)}
    end
  end
  TZ_CACHE[zone] = tbl
  return tbl
end

local function offset_at(tbl, utc)
  if not tbl or #tbl == 0 then return 0 end
  local off = tbl[1][2]
  for i = 1, #tbl do
    if tbl[i][1] <= utc then off = tbl[i][2] else break end
  end
  return off
end

-- A local wall time (seconds since the local epoch) as a UTC instant, the way Python's
-- zoneinfo does with fold=0: the earlier instant when the time occurs twice, and in a DST gap
-- the instant the clock jumps (offset from before the gap).
local function local_to_utc(tbl, local_s, hint)
  local near = {hint, offset_at(tbl, local_s - hint - 86400), offset_at(tbl, local_s - hint + 86400)}
  local best, lowest = nil, near[1]
  for _, off in ipairs(near) do
    local utc = local_s - off
    if offset_at(tbl, utc) == off and (best == nil or utc < best) then best = utc end
    if off < lowest then lowest = off end
  end
  return best or (local_s - lowest)
end

local function utc_day(now_s)
  local y, m, d = civil_from_days(math.floor(now_s / 86400))
  return string.format('%04d%02d%02d', y, m, d)
end

local PERIOD_KINDS = {day = true, week = true, month = true, quarter = true, year = true,
  total = true}

-- Whether a period spec can be computed (a stored spec may be damaged: it is then ignored).
local SPECS_OK, SPECS_SEEN = {}, 0 -- specs already checked, kept across calls
local function spec_ok(spec)
  if type(spec) ~= 'string' then return false end
  local ok = SPECS_OK[spec]
  if ok == nil then
    local kind = string.match(spec, '^(%a+):[01]:.+$')
    ok = kind ~= nil and PERIOD_KINDS[kind] == true
    if SPECS_SEEN >= 1024 then SPECS_OK, SPECS_SEEN = {}, 0 end
    SPECS_OK[spec], SPECS_SEEN = ok, SPECS_SEEN + 1
  end
  return ok
end

-- Returns start_s, end_s of the period holding now_s; total gives 0, 0 (never ends).
-- spec must pass spec_ok.
local function period_bounds(spec, now_s)
  local kind, week, zone = string.match(spec, '^(%a+):(%d):(.+)$')
  if kind == 'total' then return 0, 0 end
  local tbl = tz_table(zone)
  local off = offset_at(tbl, now_s)
  local days = math.floor((now_s + off) / 86400)
  local y, m = civil_from_days(days)
  local s, e
  if kind == 'day' then
    s, e = days, days + 1
  elseif kind == 'week' then
    local weekday = (days + 4) % 7 -- 0 = Sunday; 1970-01-01 was a Thursday
    s = days - (weekday - tonumber(week)) % 7
    e = s + 7
  elseif kind == 'month' then
    s = days_from_civil(y, m, 1)
    if m == 12 then e = days_from_civil(y + 1, 1, 1) else e = days_from_civil(y, m + 1, 1) end
  elseif kind == 'quarter' then
    local qm = m - (m - 1) % 3
    s = days_from_civil(y, qm, 1)
    if qm == 10 then e = days_from_civil(y + 1, 1, 1) else e = days_from_civil(y, qm + 3, 1) end
  else -- year
    s, e = days_from_civil(y, 1, 1), days_from_civil(y + 1, 1, 1)
  end
  return local_to_utc(tbl, s * 86400, off), local_to_utc(tbl, e * 86400, off)
end
