-- lib/state.lua: budget instances, attribution, hold records and bounded housekeeping.

local K_USAGE = nil
do
  local day = utc_day(NOW_S)
  for i = 8, 10 do
    if string.sub(KEYS[i], -8) == day then K_USAGE = KEYS[i] end
  end
end

-- Hold record fields (one string in the holds hash, fields joined by \31).
local R_STATE, R_HOLD, R_DEADLINE, R_CREATED, R_MODEL, R_IIDS, R_CHARGE = 1, 2, 3, 4, 5, 6, 7
local R_DIMS, R_TAGS, R_EST_IN, R_EST_OUT, R_COST, R_FINISHED = 8, 9, 10, 11, 12, 13
local R_RATES, R_RATE_TOKENS = 14, 15 -- rate-limit instances, tokens charged to their buckets
local R_COUNT = 15
-- States: H held, S settled, R released, X expired and charged, E expired and released.

local function rec_decode(raw)
  local rec = split(raw, FS)
  for i = #rec + 1, R_COUNT do rec[i] = '' end
  return rec
end

local function rec_encode(rec)
  return table.concat(rec, FS, 1, R_COUNT)
end

local function rec_finish(rid, rec, state, cost)
  rec[R_STATE], rec[R_COST], rec[R_FINISHED] = state, cost, NOW_MS
  redis.call('HSET', K_HOLDS, rid, rec_encode(rec))
  redis.call('ZREM', K_LEASES, rid)
  redis.call('ZADD', K_DONE, NOW_MS, rid)
end

-- One budget instance as stored, with its period brought up to the server clock in memory.
-- spec: the period spec the caller's policy has for it, or nil to keep the stored one.
local function budget_view(iid, spec)
  local v = redis.call('HMGET', K_BUDGETS, iid .. '|s', iid .. '|h', iid .. '|p', iid .. '|e',
    iid .. '|k', iid .. '|w', iid .. '|c', iid .. '|t', iid .. '|n', iid .. '|o', iid .. '|ou')
  local view = {
    iid = iid, spent = num(v[1]), held = num(v[2]), p = tonumber(v[3]), e = tonumber(v[4]),
    stored_spec = v[5], warned = v[6] or '', cap = num(v[7]), thresholds = v[8] or '',
    name = v[9] or iid, extra = 0, reset = false, dirty = false,
  }
  if tonumber(v[11]) and tonumber(v[11]) > NOW_MS then view.extra = num(v[10]) end
  view.spec = spec or view.stored_spec
  if not view.spec then return view end
  local current = view.spec == view.stored_spec and view.p ~= nil and NOW_S >= view.p
    and (view.e == 0 or NOW_S < view.e)
  if current then return view end
  local s, e = period_bounds(view.spec, NOW_S)
  if view.p ~= nil and view.spec == view.stored_spec then
    if s < view.p then return view end -- the clock went back: never reopen a closed period
    if s > view.p then view.reset = true; view.spent = 0; view.warned = '' end
  end
  view.p, view.e, view.dirty = s, e, true
  return view
end

local function budget_commit(view)
  local iid = view.iid
  if not view.dirty then return end
  redis.call('HSET', K_BUDGETS, iid .. '|p', view.p, iid .. '|e', view.e, iid .. '|k', view.spec)
  if view.reset then redis.call('HSET', K_BUDGETS, iid .. '|s', 0, iid .. '|w', '') end
  if view.e ~= 0 then redis.call('ZADD', K_BIDX, view.e, iid) else redis.call('ZREM', K_BIDX, iid) end
  view.dirty = false
end

-- Book amount (may be negative: a correction) as spend; fire each warn threshold once a period.
local function budget_charge(iid, amount, rid, model)
  local view = budget_view(iid, nil)
  budget_commit(view)
  local spent = redis.call('HINCRBY', K_BUDGETS, iid .. '|s', amount)
  if spent < 0 then
    redis.call('HSET', K_BUDGETS, iid .. '|s', 0)
    spent = 0
  end
  if view.thresholds == '' then return spent end
  local warned = view.warned
  local changed = false
  local nb = split(view.name, LS)
  for i, pair in ipairs(split(view.thresholds, ',')) do
    local at, fraction = string.match(pair, '^(%d+):(.+)$')
    if spent >= tonumber(at) and string.sub(warned, i, i) ~= '1' then
      warned = string.sub(warned, 1, i - 1) .. string.rep('0', i - 1 - #warned) .. '1'
        .. string.sub(warned, i + 1)
      changed = true
      audit('budget.warn', {'budget', nb[1], 'split', nb[2] or '', 'threshold', fraction,
        'spent_usd', usd(spent), 'cap_usd', usd(view.cap), 'rid', rid, 'model', model})
    end
  end
  if changed then redis.call('HSET', K_BUDGETS, iid .. '|w', warned) end
  return spent
end

local function book_usage(dims, cost, requests, t_in, t_out, t_cr, t_cw, expired)
  local counters = {{'usd', cost}, {'req', requests}, {'in', t_in}, {'out', t_out},
    {'cr', t_cr}, {'cw', t_cw}, {'exp', expired}}
  for _, dim in ipairs(dims) do
    for _, c in ipairs(counters) do
      if c[2] ~= 0 then redis.call('HINCRBY', K_USAGE, dim .. '|' .. c[1], c[2]) end
    end
  end
  redis.call('EXPIRE', K_USAGE, USAGE_TTL_S)
end

local function budget_names(rec)
  local names = {}
  for _, iid in ipairs(split(rec[R_IIDS], LS)) do names[#names + 1] = iid end
  return table.concat(names, ',')
end

-- An overdue hold ends: each budget charges it or releases it as its policy says.
local function expire_hold(rid, rec)
  local hold = num(rec[R_HOLD])
  local flags = rec[R_CHARGE]
  local charged = false
  for i, iid in ipairs(split(rec[R_IIDS], LS)) do
    redis.call('HINCRBY', K_BUDGETS, iid .. '|h', -hold)
    if string.sub(flags, i, i) == '1' then
      budget_charge(iid, hold, rid, rec[R_MODEL])
      charged = true
    end
  end
  if charged then book_usage(split(rec[R_DIMS], LS), hold, 1, 0, 0, 0, 0, 1) end
  -- Its usage is unknown: the tokens stay charged to the buckets; only the slot is freed.
  for _, iid in ipairs(split(rec[R_RATES], LS)) do rate_return(iid, 0, true) end
  rec_finish(rid, rec, charged and 'X' or 'E', charged and hold or 0)
  audit('hold.expired', {'rid', rid, 'model', rec[R_MODEL], 'tags', rec[R_TAGS],
    'budget', budget_names(rec), 'amount_usd', usd(hold),
    'reason', charged and 'charged' or 'released'})
end

local function sweep(limit)
  local due = redis.call('ZRANGEBYSCORE', K_LEASES, '-inf', NOW_MS, 'LIMIT', 0, limit)
  for _, rid in ipairs(due) do
    local raw = redis.call('HGET', K_HOLDS, rid)
    local rec = raw and rec_decode(raw)
    if rec and rec[R_STATE] == 'H' then expire_hold(rid, rec) else redis.call('ZREM', K_LEASES, rid) end
  end
  return #due
end

-- Bounded upkeep run by every script: overdue holds, old records, finished budget periods.
local function housekeeping(limit)
  local expired = sweep(limit)
  local old = redis.call('ZRANGEBYSCORE', K_DONE, '-inf', NOW_MS - RETENTION_MS, 'LIMIT', 0, limit)
  for _, rid in ipairs(old) do
    redis.call('HDEL', K_HOLDS, rid)
    redis.call('ZREM', K_DONE, rid)
  end
  local ended = redis.call('ZRANGEBYSCORE', K_BIDX, '-inf', NOW_S, 'LIMIT', 0, limit)
  for _, member in ipairs(ended) do
    local iid = member
    if string.sub(member, 1, 2) == 'r|' then
      if rate_drop_if_idle(string.sub(member, 3)) then
        redis.call('ZREM', K_BIDX, member)
      else
        redis.call('ZADD', K_BIDX, NOW_S + 60, member)
      end
    elseif num(redis.call('HGET', K_BUDGETS, iid .. '|h')) == 0
      and num(redis.call('HGET', K_BUDGETS, iid .. '|ou')) <= NOW_MS then
      redis.call('HDEL', K_BUDGETS, iid .. '|s', iid .. '|h', iid .. '|p', iid .. '|e', iid .. '|k',
        iid .. '|w', iid .. '|c', iid .. '|t', iid .. '|n', iid .. '|o', iid .. '|ou')
      redis.call('ZREM', K_BIDX, iid)
    else
      redis.call('ZADD', K_BIDX, NOW_S + 3600, iid) -- a live hold or override needs it; look later
    end
  end
  return expired
end
