-- lib/common.lua: helpers shared by every project script (assembled by prism_limiter._scripts).
--
-- KEYS (the same twelve, in this order, for every project script; all share the {project} hash tag)
--   KEYS[1]  policy   hash: v (version), doc, actor, ts_ms, tz:<zone> (UTC offset transitions)
--   KEYS[2]  budgets  hash: <instance>|s spent, |h held, |p period start s, |e period end s
--                      (0 = never), |w warned flags, |c cap, |t thresholds, |k period spec (nUSD)
--   KEYS[3]  bidx     zset: budget instance -> period end s (cleanup of finished periods)
--   KEYS[4]  holds    hash: reservation id -> record (fields joined by \31, lists by \30)
--   KEYS[5]  leases   zset: reservation id -> lease deadline ms (live holds only)
--   KEYS[6]  done     zset: reservation id -> finish ms (records kept for idempotency)
--   KEYS[7]  audit    stream
--   KEYS[8..10] usage:<YYYYMMDD> for yesterday, today, tomorrow by the client clock; the server
--                      clock picks one (attribution counters per UTC day)
--   KEYS[11] audit:head  hash: seq and chain of the last audit entry, open flood windows
--                      (lib/audit.lua)
--   KEYS[12] overrides hash: override id -> record, live and ended (lib/overrides.lua)
-- ARGV (common head)
--   ARGV[1]  project name
--   ARGV[2]  audit retention (integer ms, > 0): entries older than that are trimmed (XADD MINID ~)
--   ARGV[3]  usage key TTL (integer seconds, > 0)
--   ARGV[4]  record retention after a hold ends (integer ms, >= 0)
--   ARGV[5]  sweep batch (> 0): at most this many expired holds / finished records per call
--            (reserve, sweep and status do this upkeep; settle and release only touch their id)
-- Money is integer nano-dollars (nUSD, 1e-9 USD) everywhere; times come from the server clock.

-- Stored values are read strictly: an integer field holding anything else ("", "1.5", "nan",
-- "1e5") reads as nil, never as an error later. Every script computes from such reads and
-- validated ARGV first and only then writes, so no call below can fail after a write.
local function int(v)
  if type(v) == 'number' then
    if v == v and v > -9007199254740992 and v < 9007199254740992 and v == math.floor(v) then
      return v
    end
    return nil
  end
  if type(v) ~= 'string' or not string.match(v, '^-?%d+$') or #v > 16 then return nil end
  return tonumber(v)
end

-- An argument the client built: any integral number below 2^53 (cheaper than int()).
local function arg_int(v)
  local n = tonumber(v)
  if n and n == n and n == math.floor(n) and n > -9007199254740992 and n < 9007199254740992 then
    return n
  end
  return nil
end

local function num(v)
  return int(v) or 0
end

-- Per-call context, set by begin() (lib/state.lua) at the start of every script. These are
-- upvalues of the library, not globals: loaded as a Redis Function library the helpers below
-- are defined once, and every call sets the context before it reads any of it.
local KEYS, ARGV
local K_POLICY, K_BUDGETS, K_BIDX, K_HOLDS, K_LEASES, K_DONE, K_AUDIT, K_USAGE
local K_AHEAD, K_OVERRIDES
local PROJECT, AUDIT_RETENTION_MS, USAGE_TTL_S, RETENTION_MS, SWEEP_BATCH, BAD_HEAD
local NOW_S, NOW_MS
local FS, LS = '\31', '\30'

local function split(s, sep)
  local out = {}
  if s == nil or s == '' then return out end
  local start = 1
  while true do
    local i = string.find(s, sep, start, true)
    if not i then out[#out + 1] = string.sub(s, start); return out end
    out[#out + 1] = string.sub(s, start, i - 1)
    start = i + 1
  end
end

-- s split by the one-character separator sep (a control character) into exactly n parts, or
-- nil when it has another number of parts. One string.match with n captures, gathered by a
-- table constructor: a table grown item by item is rehashed as it grows, and that costs more
-- than the splitting. Patterns hold at most 32 captures; beyond, split() does it.
local SPLIT_PATTERNS = {}
local function split_n(s, sep, n)
  if type(s) ~= 'string' then return nil end
  if n == 0 then
    if s == '' then return {} end
    return nil
  end
  if n > 32 then
    local out = split(s, sep)
    if s == '' then out = {''} end
    if #out ~= n then return nil end
    return out
  end
  local key = sep .. n
  local pattern = SPLIT_PATTERNS[key]
  if not pattern then
    local one = '([^' .. sep .. ']*)'
    pattern = '^' .. one .. string.rep(sep .. one, n - 1) .. '$'
    SPLIT_PATTERNS[key] = pattern
  end
  local out = {string.match(s, pattern)}
  if out[1] == nil then return nil end
  return out
end

-- Whether any of the strings holds the hold record's field separator: an argument stored in
-- a record must not, or it would shift every field after it (and the record, unreadable,
-- could never be settled or released).
local function has_fs(...)
  for i = 1, select('#', ...) do
    if string.find(select(i, ...), FS, 1, true) then return true end
  end
  return false
end

-- An integer as exact text: Lua would write 1.2345677552675e+14 or -0 (which HINCRBY and a
-- later parse refuse); '%d' writes every integer below 2^53 exactly.
local function I(n)
  return string.format('%d', n)
end

-- redis.call for writes: numbers go out as exact integer text.
local function W(...)
  local args = {...}
  for i = 1, select('#', ...) do
    if type(args[i]) == 'number' then args[i] = I(args[i]) end
  end
  return redis.call(unpack(args, 1, select('#', ...)))
end

-- nUSD integer -> decimal USD string, exact ("0.000123450").
local function usd(n)
  n = num(n)
  local sign = ''
  if n < 0 then sign = '-'; n = -n end
  return string.format('%s%d.%09d', sign, math.floor(n / 1e9), n % 1e9)
end
