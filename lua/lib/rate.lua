-- lib/rate.lua: token buckets (requests and tokens per minute) and concurrency slots.
--
-- State lives in the budgets hash (KEYS[2]), so that an expiring hold, swept by any script, can
-- free its slot without keys the caller did not declare. Per instance "r:<id>[=<value>]":
--   r:<iid>      "<request level>:<token level>:<last refill ms>:<live holds>"
--   r:<iid>|cfg  "rpm,tpm,max_concurrent,burst_milli"
-- Levels are scaled by 60000 (units x ms per minute), so a rate of r per minute refills exactly
-- r per millisecond: integers only. A bucket holds rate x burst minutes; refill is continuous.
-- An overrun settled later leaves the token bucket negative (debt), at most one bucket deep.
-- Every live hold counts in <live holds>, with or without max_concurrent, so an instance a hold
-- names is never dropped. The instance is listed in KEYS[3] (bidx) as "r|<iid>" when created;
-- housekeeping looks at it hourly and drops it once idle (no live hold, both buckets full).

local SCALE = 60000
local RATE_HOT = '^(%-?%d+):(%-?%d+):(%d+):(%d+)$'
local RATE_IDLE_CHECK_S = 3600

-- A config string parsed (kept across calls, like budget configs), or nil when it is missing
-- or damaged. The table is shared: never changed.
local RATE_CACHE, RATE_CACHED = {}, 0
local function rate_cfg(raw)
  if not raw then return nil end
  local cfg = RATE_CACHE[raw]
  if cfg then return cfg end
  local rpm, tpm, maxc, burst = string.match(raw, '^(%d+),(%d+),(%d+),(%d+)$')
  if not rpm or #raw > 64 then return nil end
  cfg = {rpm = tonumber(rpm), tpm = tonumber(tpm), maxc = tonumber(maxc), burst = tonumber(burst)}
  if RATE_CACHED >= 4096 then RATE_CACHE, RATE_CACHED = {}, 0 end
  RATE_CACHE[raw], RATE_CACHED = cfg, RATE_CACHED + 1
  return cfg
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

-- The instance's buckets refilled to now, from its stored hot field and config. cfg_raw: the
-- caller's config (wins), else the stored one, else `fallback` (the config a hold was reserved
-- under). nil when none is readable: the instance is gone and there is nothing to correct.
local function rate_view(iid, cfg_raw, hot, stored_cfg, fallback)
  local raw = cfg_raw or (rate_cfg(stored_cfg) and stored_cfg) or fallback
  local cfg = rate_cfg(raw)
  if not cfg then return nil end
  local rl, tl, ts, n
  if hot and #hot <= 64 then rl, tl, ts, n = string.match(hot, RATE_HOT) end
  if rl and (#rl > 17 or #tl > 17 or #ts > 16 or #n > 12) then rl, tl, ts, n = nil, nil, nil, nil end
  local elapsed = 0
  if ts then elapsed = math.max(0, NOW_MS - tonumber(ts)) end
  local view = {iid = iid, cfg = cfg, cfg_raw = raw, cfg_changed = raw ~= stored_cfg,
    fresh = rl == nil, n = tonumber(n) or 0, changed = false,
    cap_r = capacity(cfg.rpm, cfg.burst), cap_t = capacity(cfg.tpm, cfg.burst)}
  view.rl = refill(tonumber(rl), cfg.rpm, view.cap_r, elapsed)
  view.tl = refill(tonumber(tl), cfg.tpm, view.cap_t, elapsed)
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

-- Take one request, `tokens` and a live-hold slot.
local function rate_take(view, tokens)
  if view.cfg.rpm > 0 then view.rl = view.rl - SCALE end
  if view.cfg.tpm > 0 then view.tl = view.tl - tokens * SCALE end
  view.n = view.n + 1
  view.changed = true
end

-- After a hold ends: give back `refund` tokens (negative: take more, down to one bucket of debt)
-- and, when free_slot, its slot.
local function rate_return(view, refund, free_slot)
  if view.cfg.tpm > 0 and refund ~= 0 then
    view.tl = math.max(-view.cap_t, math.min(view.cap_t, view.tl + refund * SCALE))
  end
  if free_slot and view.n > 0 then view.n = view.n - 1 end
  view.changed = true
end

-- The field/value pairs that store a changed view, and whether it needs indexing (new).
local function rate_fields(view, out)
  local iid = view.iid
  out[#out + 1] = iid
  out[#out + 1] = string.format('%d:%d:%d:%d', view.rl, view.tl, NOW_MS, view.n)
  if view.cfg_changed then
    out[#out + 1], out[#out + 2] = iid .. '|cfg', view.cfg_raw
  end
  return view.fresh
end

-- Housekeeping: drop an idle instance (no live hold, both buckets full), or look again later.
local function rate_drop_if_idle(iid)
  local v = redis.call('HMGET', K_BUDGETS, iid, iid .. '|cfg')
  local view = rate_view(iid, nil, v[1], v[2], nil)
  if view and (view.n > 0 or view.rl < view.cap_r or view.tl < view.cap_t) then return false end
  W('HDEL', K_BUDGETS, iid, iid .. '|cfg')
  return true
end
