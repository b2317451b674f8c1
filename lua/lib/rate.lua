-- lib/rate.lua: token buckets (requests and tokens per minute) and concurrency slots.
--
-- State lives in the budgets hash (KEYS[2]) under instance ids starting "r:", so that an expiring
-- hold, swept by any script, can free its slot without keys the caller did not declare:
--   <iid>|rl  request bucket level   <iid>|tl  token bucket level   <iid>|ts  last refill (ms)
--   <iid>|n   live holds (counted with or without max_concurrent)
--   <iid>|cfg "rpm,tpm,max_concurrent,burst_milli"
-- Levels are scaled by 60000 (units x ms per minute), so a rate of r per minute refills exactly
-- r per millisecond: integers only. A bucket holds rate x burst minutes; refill is continuous.
-- An overrun settled later leaves the token bucket negative (debt), at most one bucket deep.
-- The instance is listed in KEYS[3] (bidx) as "r|<iid>", scored (s) when it will be full again,
-- so housekeeping drops idle instances.

local SCALE = 60000

-- A config string, or nil when it is missing or damaged.
local function rate_cfg(raw)
  local rpm, tpm, maxc, burst = string.match(raw or '', '^(%d+),(%d+),(%d+),(%d+)$')
  if not rpm then return nil end
  return {rpm = tonumber(rpm), tpm = tonumber(tpm), maxc = tonumber(maxc), burst = tonumber(burst)}
end

local function capacity(rate, burst_milli)
  return rate * burst_milli * 60 -- rate x (burst_milli / 1000) minutes x 60000 ms
end

local function refill(level, rate, cap, elapsed)
  if level == nil then return cap end
  local l = level + elapsed * rate
  if l > cap then l = cap end
  return l
end

-- The instance's buckets refilled to now, in memory. cfg_raw: the caller's config, or nil to use
-- the stored one. nil when neither is a readable config (the instance is gone).
local function rate_view(iid, cfg_raw)
  local v = redis.call('HMGET', K_BUDGETS, iid .. '|rl', iid .. '|tl', iid .. '|ts', iid .. '|n',
    iid .. '|cfg')
  cfg_raw = cfg_raw or v[5]
  local cfg = rate_cfg(cfg_raw)
  if not cfg then return nil end
  local elapsed = 0
  if int(v[3]) then elapsed = math.max(0, NOW_MS - int(v[3])) end
  local view = {iid = iid, cfg = cfg, cfg_raw = cfg_raw, n = math.max(0, num(v[4])),
    cap_r = capacity(cfg.rpm, cfg.burst), cap_t = capacity(cfg.tpm, cfg.burst)}
  view.rl = refill(int(v[1]), cfg.rpm, view.cap_r, elapsed)
  view.tl = refill(int(v[2]), cfg.tpm, view.cap_t, elapsed)
  return view
end

-- Why a request of `tokens` cannot pass now: nil, or kind, retry after (ms, -1 = never/unknown).
local function rate_check(view, tokens)
  local c = view.cfg
  if c.rpm > 0 and view.rl < SCALE then
    return 'rpm', math.ceil((SCALE - view.rl) / c.rpm)
  end
  if c.tpm > 0 then
    local need = tokens * SCALE
    if need > view.cap_t then return 'tpm-too-large', -1 end
    if view.tl < need then return 'tpm', math.ceil((need - view.tl) / c.tpm) end
  end
  if c.maxc > 0 and view.n >= c.maxc then return 'concurrency', -1 end
  return nil
end

local function rate_write(view)
  local iid = view.iid
  W('HSET', K_BUDGETS, iid .. '|rl', view.rl, iid .. '|tl', view.tl, iid .. '|ts', NOW_MS,
    iid .. '|n', view.n, iid .. '|cfg', view.cfg_raw)
  -- When both buckets are full again (and no hold is live) the instance carries no state.
  local full_ms = 0
  if view.cfg.rpm > 0 then full_ms = math.max(full_ms, (view.cap_r - view.rl) / view.cfg.rpm) end
  if view.cfg.tpm > 0 then full_ms = math.max(full_ms, (view.cap_t - view.tl) / view.cfg.tpm) end
  W('ZADD', K_BIDX, math.ceil((NOW_MS + full_ms) / 1000) + 1, 'r|' .. iid)
end

-- Take one request and `tokens` from the buckets. Every live hold is counted in |n, with or
-- without max_concurrent, so housekeeping never drops an instance a hold still names.
local function rate_take(view, tokens)
  if view.cfg.rpm > 0 then view.rl = view.rl - SCALE end
  if view.cfg.tpm > 0 then view.tl = view.tl - tokens * SCALE end
  view.n = view.n + 1
  rate_write(view)
end

-- After a hold ends: give back `refund` tokens (negative: take more, down to one bucket of debt)
-- and, when free_slot, its slot. An instance dropped since (idle after a release) is rebuilt
-- from the config the hold was reserved under; without one there is nothing to correct.
local function rate_return(iid, refund, free_slot, rec_cfg)
  local view = rate_view(iid, nil) or (rate_cfg(rec_cfg) and rate_view(iid, rec_cfg))
  if not view then return end
  if view.cfg.tpm > 0 and refund ~= 0 then
    view.tl = math.max(-view.cap_t, math.min(view.cap_t, view.tl + refund * SCALE))
  end
  if free_slot and view.n > 0 then view.n = view.n - 1 end
  rate_write(view)
end

local function rate_drop_if_idle(iid)
  local v = redis.call('HMGET', K_BUDGETS, iid .. '|n')
  if num(v[1]) > 0 then return false end
  local view = rate_view(iid, nil)
  if view and (view.rl < view.cap_r or view.tl < view.cap_t) then return false end
  W('HDEL', K_BUDGETS, iid .. '|rl', iid .. '|tl', iid .. '|ts', iid .. '|n', iid .. '|cfg')
  return true
end
