-- lib/state.lua: budget instances, attribution, hold records and bounded housekeeping.
--
-- Every stored value is read through int()/num() and every write goes through W(), so damaged
-- fields read as absent and no write can be refused half-way through a script.

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
local R_RATE_CFGS = 16 -- each rate instance's config when reserved (rebuilds a dropped one)
local R_COUNT = 16
-- States: H held, S settled, A charged its estimate (no settle came; a real one may correct it
-- once), R released, X expired and charged, E expired and released,
-- D denied (kept DENIAL_KEEP_MS so a settle or release of a denied id is refused; R_COST then
-- holds why it was denied).
local STATES = {H = true, S = true, A = true, R = true, X = true, E = true, D = true}
local DENIAL_KEEP_MS = math.min(RETENTION_MS or 0, 3600000)

local function optional_int(v)
  return v == '' or int(v) ~= nil
end

-- A stored record, or nil when it is damaged (such a record is never acted on).
local function rec_decode(raw)
  if type(raw) ~= 'string' then return nil end
  local rec = split(raw, FS)
  for i = #rec + 1, R_COUNT do rec[i] = '' end
  if not STATES[rec[R_STATE]] or not int(rec[R_HOLD]) or num(rec[R_HOLD]) < 0
    or not int(rec[R_DEADLINE]) or not string.match(rec[R_CHARGE], '^[01]*$')
    or not (rec[R_STATE] == 'D' or optional_int(rec[R_COST]))
    or not optional_int(rec[R_RATE_TOKENS]) then
    return nil
  end
  return rec
end

local function rec_encode(rec)
  local out = {}
  for i = 1, R_COUNT do
    local v = rec[i]
    if type(v) == 'number' then v = I(v) end
    out[i] = v or ''
  end
  return table.concat(out, FS)
end

local function rec_finish(rid, rec, state, cost)
  rec[R_STATE], rec[R_COST], rec[R_FINISHED] = state, cost, NOW_MS
  W('HSET', K_HOLDS, rid, rec_encode(rec))
  W('ZREM', K_LEASES, rid)
  W('ZADD', K_DONE, NOW_MS, rid)
end

-- A denied reserve leaves a short record: its id cannot be settled or released (a retried
-- reserve with it is decided afresh). Dropped by housekeeping after DENIAL_KEEP_MS.
local function rec_denied(rid, model, why)
  local rec = {'D', 0, NOW_MS, NOW_MS, model, '', '', '', '', '', '', why}
  W('HSET', K_HOLDS, rid, rec_encode(rec))
  W('ZADD', K_DONE, NOW_MS - RETENTION_MS + DENIAL_KEEP_MS, rid)
end

-- One budget instance as stored, with its period brought up to the server clock in memory.
-- spec: the period spec the caller's policy has for it, or nil to keep the stored one. A view
-- without a spec (an instance nothing was ever reserved on, or removed) is not written.
local function budget_view(iid, spec)
  local v = redis.call('HMGET', K_BUDGETS, iid .. '|s', iid .. '|h', iid .. '|p', iid .. '|e',
    iid .. '|k', iid .. '|w', iid .. '|c', iid .. '|t', iid .. '|n', iid .. '|o', iid .. '|ou')
  local stored_spec = spec_ok(v[5]) and v[5] or nil
  local view = {
    iid = iid, spent = math.max(0, num(v[1])), held = math.max(0, num(v[2])), p = int(v[3]),
    e = int(v[4]), stored_spec = stored_spec, warned = v[6] or '', cap = num(v[7]),
    thresholds = v[8] or '', name = v[9] or iid, extra = 0, reset = false, dirty = false,
  }
  if num(v[11]) > NOW_MS then view.extra = math.max(0, num(v[10])) end
  view.spec = spec or stored_spec
  if not view.spec then return view end
  local current = view.spec == stored_spec and view.p ~= nil and view.e ~= nil
    and NOW_S >= view.p and (view.e == 0 or NOW_S < view.e)
  if current then return view end
  local s, e = period_bounds(view.spec, NOW_S)
  if view.p ~= nil and view.spec == stored_spec then
    if s < view.p then return view end -- the clock went back: never reopen a closed period
    if s > view.p then view.reset = true; view.spent = 0; view.warned = '' end
  end
  view.p, view.e, view.dirty = s, e, true
  return view
end

-- The thresholds booked spend has newly reached: the new flags and the audit entries to add.
local function budget_warnings(view, rid, model)
  if view.thresholds == '' then return nil, nil end
  local warned, entries = view.warned, {}
  local nb = split(view.name, LS)
  for i, pair in ipairs(split(view.thresholds, ',')) do
    local at, fraction = string.match(pair, '^(%d+):(.+)$')
    if at and view.spent >= tonumber(at) and string.sub(warned, i, i) ~= '1' then
      warned = string.sub(warned, 1, i - 1) .. string.rep('0', i - 1 - #warned) .. '1'
        .. string.sub(warned, i + 1)
      entries[#entries + 1] = {'budget', nb[1], 'split', nb[2] or '', 'threshold', fraction,
        'spent_usd', usd(view.spent), 'cap_usd', usd(view.cap), 'rid', rid, 'model', model}
    end
  end
  if #entries == 0 then return nil, nil end
  return warned, entries
end

-- Write a view back in one HSET: its period when it moved, held, spent, the warn flags, and
-- `more` field/value pairs. With `warn`, each threshold booked spend reached fires once.
local function budget_save(view, rid, model, warn, more)
  local iid = view.iid
  local fields = {iid .. '|h', view.held, iid .. '|s', view.spent}
  local warned, entries = nil, nil
  if warn then warned, entries = budget_warnings(view, rid, model) end
  if view.dirty then
    for _, x in ipairs({iid .. '|p', view.p, iid .. '|e', view.e, iid .. '|k', view.spec}) do
      fields[#fields + 1] = x
    end
  end
  if warned then
    fields[#fields + 1], fields[#fields + 2] = iid .. '|w', warned
  elseif view.reset then
    fields[#fields + 1], fields[#fields + 2] = iid .. '|w', ''
  end
  for _, x in ipairs(more or {}) do fields[#fields + 1] = x end
  W('HSET', K_BUDGETS, unpack(fields))
  if view.dirty then
    if view.e ~= 0 then W('ZADD', K_BIDX, view.e, iid) else W('ZREM', K_BIDX, iid) end
    view.dirty = false
  end
  for _, entry in ipairs(entries or {}) do audit('budget.warn', entry) end
end

-- A hold ends on one budget instance: `unhold` leaves held, `charge` (negative: a refund of an
-- earlier charge) is booked as spend. An instance that no longer exists is left alone.
local function budget_post(iid, unhold, charge, rid, model, spec)
  local view = budget_view(iid, spec)
  if not view.spec then return nil end
  view.held = math.max(0, view.held - unhold)
  view.spent = math.max(0, view.spent + charge)
  budget_save(view, rid, model, charge > 0)
  return view
end

-- Attribution: add to every counter of every row at once (read, add, write: a damaged counter
-- restarts from 0 instead of failing the script).
local function book_usage(dims, cost, requests, t_in, t_out, t_cr, t_cw, expired)
  local counters = {{'usd', cost}, {'req', requests}, {'in', t_in}, {'out', t_out},
    {'cr', t_cr}, {'cw', t_cw}, {'exp', expired}}
  local fields, deltas = {}, {}
  for _, dim in ipairs(dims) do
    for _, c in ipairs(counters) do
      if c[2] ~= 0 then
        fields[#fields + 1], deltas[#deltas + 1] = dim .. '|' .. c[1], c[2]
      end
    end
  end
  if #fields == 0 then return end
  local current = redis.call('HMGET', K_USAGE, unpack(fields))
  local out = {}
  for i, f in ipairs(fields) do
    out[#out + 1], out[#out + 2] = f, num(current[i]) + deltas[i]
  end
  W('HSET', K_USAGE, unpack(out))
  W('EXPIRE', K_USAGE, USAGE_TTL_S)
end

local function budget_names(rec)
  return table.concat(split(rec[R_IIDS], LS), ',')
end

-- The rate-limit instances of a record, each with the config it was reserved under.
local function rec_rates(rec)
  local out, cfgs = {}, split(rec[R_RATE_CFGS], LS)
  for i, iid in ipairs(split(rec[R_RATES], LS)) do out[i] = {iid, cfgs[i]} end
  return out
end

-- An overdue hold ends: each budget charges it or releases it as its policy says.
local function expire_hold(rid, rec)
  local hold = num(rec[R_HOLD])
  local flags = rec[R_CHARGE]
  local charged = false
  for i, iid in ipairs(split(rec[R_IIDS], LS)) do
    local charge = 0
    if string.sub(flags, i, i) == '1' then charge, charged = hold, true end
    budget_post(iid, hold, charge, rid, rec[R_MODEL])
  end
  if charged then book_usage(split(rec[R_DIMS], LS), hold, 1, 0, 0, 0, 0, 1) end
  -- Its usage is unknown: the tokens stay charged to the buckets; only the slot is freed.
  for _, r in ipairs(rec_rates(rec)) do rate_return(r[1], 0, true, r[2]) end
  rec_finish(rid, rec, charged and 'X' or 'E', charged and hold or 0)
  audit('hold.expired', {'rid', rid, 'model', rec[R_MODEL], 'tags', rec[R_TAGS],
    'budget', budget_names(rec), 'amount_usd', usd(hold),
    'reason', charged and 'charged' or 'released'})
end

local function sweep(limit)
  local due = redis.call('ZRANGEBYSCORE', K_LEASES, '-inf', NOW_MS, 'LIMIT', 0, limit)
  for _, rid in ipairs(due) do
    local raw = redis.call('HGET', K_HOLDS, rid)
    local rec = rec_decode(raw)
    if rec and rec[R_STATE] == 'H' then
      expire_hold(rid, rec)
    else
      -- Nothing live to expire: a record that ended, vanished or is damaged leaves the leases.
      W('ZREM', K_LEASES, rid)
      if raw and not rec then audit('hold.damaged', {'rid', rid, 'reason', 'unreadable-record'}) end
    end
  end
  return #due
end

-- Bounded upkeep run by every script: overdue holds, old records, finished budget periods.
local function housekeeping(limit)
  local expired = sweep(limit)
  local old = redis.call('ZRANGEBYSCORE', K_DONE, '-inf', NOW_MS - RETENTION_MS, 'LIMIT', 0, limit)
  for _, rid in ipairs(old) do
    W('HDEL', K_HOLDS, rid)
    W('ZREM', K_DONE, rid)
  end
  local ended = redis.call('ZRANGEBYSCORE', K_BIDX, '-inf', NOW_S, 'LIMIT', 0, limit)
  for _, member in ipairs(ended) do
    local iid = member
    if string.sub(member, 1, 2) == 'r|' then
      if rate_drop_if_idle(string.sub(member, 3)) then
        W('ZREM', K_BIDX, member)
      else
        W('ZADD', K_BIDX, NOW_S + 60, member)
      end
    elseif num(redis.call('HGET', K_BUDGETS, iid .. '|h')) <= 0
      and num(redis.call('HGET', K_BUDGETS, iid .. '|ou')) <= NOW_MS then
      W('HDEL', K_BUDGETS, iid .. '|s', iid .. '|h', iid .. '|p', iid .. '|e', iid .. '|k',
        iid .. '|w', iid .. '|c', iid .. '|t', iid .. '|n', iid .. '|o', iid .. '|ou')
      W('ZREM', K_BIDX, iid)
    else
      W('ZADD', K_BIDX, NOW_S + 3600, iid) -- a live hold or override needs it; look later
    end
  end
  return expired
end
