-- lib/common.lua: prelude shared by every project script (prepended by prism_limiter._scripts).
--
-- KEYS (the same ten, in this order, for every project script; all share the {project} hash tag)
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
-- ARGV (common head)
--   ARGV[1]  project name
--   ARGV[2]  audit stream MAXLEN (approximate trimming)
--   ARGV[3]  usage key TTL (integer seconds)
--   ARGV[4]  record retention after a hold ends (integer ms)
--   ARGV[5]  sweep batch: at most this many expired holds / finished records per call
--            (reserve, sweep and status do this upkeep; settle and release only touch their id)
-- Money is integer nano-dollars (nUSD, 1e-9 USD) everywhere; times come from the server clock.

local K_POLICY, K_BUDGETS, K_BIDX, K_HOLDS = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local K_LEASES, K_DONE, K_AUDIT = KEYS[5], KEYS[6], KEYS[7]
local PROJECT = ARGV[1]
local AUDIT_MAXLEN = tonumber(ARGV[2])
local USAGE_TTL_S = tonumber(ARGV[3])
local RETENTION_MS = tonumber(ARGV[4])
local SWEEP_BATCH = tonumber(ARGV[5])
local FS, LS = '\31', '\30'

local _t = redis.call('TIME')
local NOW_S = tonumber(_t[1])
local NOW_MS = NOW_S * 1000 + math.floor(tonumber(_t[2]) / 1000)

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

-- nUSD integer -> decimal USD string, exact ("0.000123450").
local function usd(n)
  n = tonumber(n) or 0
  local sign = ''
  if n < 0 then sign = '-'; n = -n end
  return string.format('%s%d.%09d', sign, math.floor(n / 1e9), n % 1e9)
end

local function audit(event, fields)
  redis.call('XADD', K_AUDIT, 'MAXLEN', '~', AUDIT_MAXLEN, '*',
    'event', event, 'project', PROJECT, 'ts_ms', NOW_MS, unpack(fields))
end

local function num(v)
  return tonumber(v) or 0
end
