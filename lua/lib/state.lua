-- lib/state.lua: budget instances, attribution, hold records and bounded housekeeping.
--
-- Stored values are parsed with strict patterns (a damaged value reads as absent) and every
-- write goes through W(), so no write can be refused half-way through a script. A script
-- reads every instance it touches in one HMGET and writes them back in one HSET.
--
-- Budget instance <iid> (budget id, or "<id>=<escaped split value>") in the budgets hash:
--   <iid>    "spent:held:start:end:warned:next" spent and held (nUSD), period start and end
--            (s, 0 = never ends), fired thresholds ("011": the 2nd and 3rd), the lowest
--            threshold not fired yet (nUSD, -1 = none: settle looks closer only past it)
--   <iid>|c  "cap\31thresholds\31period spec\31budget\30split value" (thresholds
--            "nUSD:fraction,...", ascending)
--   <iid>|o  the override in force (lib/overrides.lua)

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
local DENIAL_KEEP_MS -- min(record retention, an hour), set by begin()
local HOT = '^(%d+):(%d+):(%d+):(%d+):([01]*):(%-?%d+)$'
local USAGE_ROW = '^(%-?%d+):(%-?%d+):(%-?%d+):(%-?%d+):(%-?%d+):(%-?%d+):(%-?%d+)$'

local function optional_int(v)
  return v == '' or int(v) ~= nil
end

-- A stored record, or nil when it is damaged (such a record is never acted on).
local function rec_decode(raw)
  if type(raw) ~= 'string' then return nil end
  local rec = split_n(raw, FS, R_COUNT)
  if not rec then -- a record of another release: fewer fields read as empty
    rec = split(raw, FS)
    for i = #rec + 1, R_COUNT do rec[i] = '' end
  end
  local hold = int(rec[R_HOLD])
  if not STATES[rec[R_STATE]] or not hold or hold < 0 or not int(rec[R_DEADLINE])
    or not string.match(rec[R_CHARGE], '^[01]*$')
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
  rec[R_STATE], rec[R_COST], rec[R_FINISHED] = state, I(cost), I(NOW_MS)
  W('HSET', K_HOLDS, rid, table.concat(rec, FS, 1, R_COUNT))
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

-- The lowest threshold not fired yet (nUSD), or -1.
local function next_threshold(thresholds, warned)
  local i = 0
  for at in string.gmatch(thresholds, '(%d+):[^,]*') do
    i = i + 1
    if string.sub(warned, i, i) ~= '1' then return tonumber(at) end
  end
  return -1
end

-- A budget instance's stored config, parsed: cap, thresholds, label or nil, spec or nil. The
-- part before the label (cap, thresholds, spec) is the same for every split value of a budget
-- and rarely changes, so its parse is kept across calls (a Function library keeps its upvalues;
-- the cache is emptied when it grows past a bound); the label is cut off each time.
local COLD_CACHE, COLD_CACHED = {}, 0
local function cold_config(cold)
  local a = string.find(cold, FS, 1, true)
  local b = a and string.find(cold, FS, a + 1, true)
  local c = b and string.find(cold, FS, b + 1, true)
  if not c then return 0, '', nil, nil end
  local head = string.sub(cold, 1, c - 1)
  local parsed = COLD_CACHE[head]
  if not parsed then
    local spec = string.sub(cold, b + 1, c - 1)
    parsed = {int(string.sub(cold, 1, a - 1)) or 0, string.sub(cold, a + 1, b - 1),
      spec_ok(spec) and spec or nil}
    if COLD_CACHED >= 1024 then COLD_CACHE, COLD_CACHED = {}, 0 end
    COLD_CACHE[head], COLD_CACHED = parsed, COLD_CACHED + 1
  end
  local label = string.sub(cold, c + 1)
  return parsed[1], parsed[2], label ~= '' and label or nil, parsed[3]
end

-- One budget instance from its stored fields, with its period brought up to the server clock
-- in memory. spec: the period spec the caller's policy has for it, or nil to keep the stored
-- one. A view without a spec (nothing was ever reserved on it) is never written. The view is
-- built in one constructor of at most 16 fields (a table that grows is rehashed, and Lua's
-- cost follows what a script allocates); reset, dirty and ovr are added only when set.
local function budget_view(iid, spec, hot, cold, ovr, forecast_p, known)
  local s, h, p, e, w, nx
  if hot and #hot <= 96 then s, h, p, e, w, nx = string.match(hot, HOT) end
  local spent, held, warned, next_at, fresh = 0, 0, '', -1, true
  if s and #s <= 16 and #h <= 16 and #p <= 12 and #e <= 12 and #nx <= 17 then
    spent, held, p, e = tonumber(s), tonumber(h), tonumber(p), tonumber(e)
    warned, next_at, fresh = w, tonumber(nx), false
  else
    p, e = nil, nil
  end
  local cap, thresholds, label, stored_spec = 0, '', nil, nil
  if known and cold == known.cold then -- stored as the caller's policy has it: nothing to parse
    cap, thresholds, label, stored_spec = known.cap, known.thresholds, known.name, known.spec
  elseif cold then
    cap, thresholds, label, stored_spec = cold_config(cold)
  end
  local view = {iid = iid, spent = spent, held = held, p = p, e = e, warned = warned,
    next = next_at, extra = 0, cap = cap, thresholds = thresholds, name = label or iid,
    stored_spec = stored_spec, spec = spec or stored_spec, fresh = fresh, changed = false,
    forecast_p = forecast_p}
  if ovr then
    local o = ovr_parse(ovr)
    if o then
      view.ovr = o
      if o.until_ms > NOW_MS then view.extra = o.extra end
    end
  end
  if not view.spec then return view end
  local current = view.spec == stored_spec and p ~= nil and NOW_S >= p and (e == 0 or NOW_S < e)
  if current then return view end
  local ps, pe = period_bounds(view.spec, NOW_S)
  if p ~= nil and view.spec == stored_spec then
    if ps < p then return view end -- the clock went back: never reopen a closed period
    if ps > p then view.reset = true; view.spent = 0; view.warned = '' end
  end
  view.p, view.e, view.dirty = ps, pe, true
  return view
end

-- Load budget instances ({iid, spec or nil}) and rate instances ({iid, config or nil, the
-- config a hold was reserved under or nil}) in one HMGET. Rate views are nil when gone.
local function load(budgets, rates, fields)
  fields = fields or load_fields(budgets, rates)
  local bviews, rviews = {}, {}
  if #fields == 0 then return bviews, rviews end
  local v = hmget(fields)
  for i, b in ipairs(budgets) do
    local j = 4 * (i - 1)
    bviews[i] = budget_view(b[1], b[2], v[j + 1], v[j + 2], v[j + 3], int(v[j + 4]), b[3])
  end
  local base = 4 * #budgets
  for i, r in ipairs(rates) do
    local j = base + 2 * (i - 1)
    rviews[i] = rate_view(r[1], r[2], v[j + 1], v[j + 2], r[3]) or false
  end
  return bviews, rviews
end

-- The thresholds booked spend has newly reached, fired (audited) once a period.
local function budget_warn(view, rid, model)
  local nb = split(view.name, LS)
  local i, warned = 0, view.warned
  for at, fraction in string.gmatch(view.thresholds, '(%d+):([^,]*)') do
    i = i + 1
    if view.spent >= tonumber(at) and string.sub(warned, i, i) ~= '1' then
      warned = string.sub(warned, 1, i - 1) .. string.rep('0', i - 1 - #warned) .. '1'
        .. string.sub(warned, i + 1)
      audit('budget.warn', {'budget', nb[1], 'split', nb[2] or '', 'threshold', fraction,
        'spent_usd', usd(view.spent), 'cap_usd', usd(view.cap), 'rid', rid, 'model', model})
    end
  end
  view.warned = warned
end

-- The burn rate of the period so far predicts the cap is reached before the period ends:
-- audited budget.forecast, once a period (AWS Budgets' forecasted alert). Only once a tenth of
-- the period has passed (earlier, one request would extrapolate wildly) and while spend is
-- still under the cap (past it, budget.warn and budget.blocked say more).
local function budget_forecast(view, rid, model)
  local length = view.e - view.p
  local elapsed = NOW_S - view.p
  if view.e == 0 or view.forecast_p == view.p or length <= 0 or elapsed * 10 < length
    or view.spent >= view.cap or view.cap <= 0 then
    return
  end
  local forecast = math.floor(view.spent * length / elapsed)
  if forecast < view.cap then return end
  local nb = split(view.name, LS)
  local runs_out = view.p + math.ceil(view.cap * elapsed / view.spent)
  audit('budget.forecast', {'budget', nb[1], 'split', nb[2] or '', 'spent_usd', usd(view.spent),
    'cap_usd', usd(view.cap), 'forecast_usd', usd(forecast), 'period_end', view.e,
    'runs_out_at', runs_out, 'rid', rid, 'model', model})
  view.forecast_p, view.forecast_fired = view.p, true
end

-- A hold ends on one instance: `unhold` leaves held, `charge` (negative: a refund of an earlier
-- charge) is booked as spend and fires the thresholds it reaches. A view without a spec (the
-- instance no longer exists) is left alone.
local function budget_post(view, unhold, charge, rid, model)
  if not view.spec then return end
  view.held = math.max(0, view.held - unhold)
  view.spent = math.max(0, view.spent + charge)
  view.changed = true
  if view.reset or view.fresh then view.next = next_threshold(view.thresholds, view.warned) end
  if charge > 0 and view.next >= 0 and view.spent >= view.next then
    budget_warn(view, rid, model)
    view.next = next_threshold(view.thresholds, view.warned)
  end
  if charge > 0 then budget_forecast(view, rid, model) end
end

-- Write every changed view in one HSET (plus `more` field/value pairs), index new periods and
-- rate instances in one ZADD.
local function store(bviews, rviews, more)
  local fields, index = more or {}, {}
  for _, view in ipairs(bviews) do
    if view.changed and view.spec then
      fields[#fields + 1], fields[#fields + 2] = view.iid, string.format('%d:%d:%d:%d:%s:%d',
        view.spent, view.held, view.p, view.e, view.warned, view.next)
      if view.dirty and view.e ~= 0 then
        index[#index + 1], index[#index + 2] = view.e, view.iid
      end
      if view.forecast_fired then
        fields[#fields + 1], fields[#fields + 2] = view.iid .. '|f', view.p
      end
    end
  end
  for _, view in ipairs(rviews) do
    if view and view.changed and rate_fields(view, fields) then
      index[#index + 1], index[#index + 2] = NOW_S + RATE_IDLE_CHECK_S, 'r|' .. view.iid
    end
  end
  write_pairs('HSET', K_BUDGETS, fields)
  write_pairs('ZADD', K_BIDX, index)
end

-- Attribution: the day's usage hash has one field per attribution shape, named by its rows
-- joined by \30 ("total\30model=<m>\30tag:<k>=<v>..."), holding
-- "usd:requests:input:output:cache read:cache write:expired holds". A booking reads, adds to and
-- writes that one small field, whatever the number of rows; a report adds each shape to every
-- row it names, so the rows still sum exactly. (Lua's cost grows with the bytes a script
-- allocates, so nothing larger is read.) Field "~" marks a hash whose TTL is set. A damaged
-- field restarts from 0 (the reader counts it 0) instead of failing the script.
local function book_usage(dims, cost, requests, t_in, t_out, t_cr, t_cw, expired)
  if dims == '' then return end
  local row = redis.call('HGET', K_USAGE, dims)
  if row and #row > 128 then row = nil end -- an absurd value restarts from 0
  local a, b, c, d, e, f, g = string.match(row or '', USAGE_ROW)
  W('HSET', K_USAGE, dims, string.format('%d:%d:%d:%d:%d:%d:%d', (tonumber(a) or 0) + cost,
    (tonumber(b) or 0) + requests, (tonumber(c) or 0) + t_in, (tonumber(d) or 0) + t_out,
    (tonumber(e) or 0) + t_cr, (tonumber(f) or 0) + t_cw, (tonumber(g) or 0) + expired))
  if not row and redis.call('HEXISTS', K_USAGE, '~') == 0 then -- a new day's hash
    W('HSET', K_USAGE, '~', 1)
    W('EXPIRE', K_USAGE, USAGE_TTL_S)
  end
end

local function budget_names(rec)
  return table.concat(split(rec[R_IIDS], LS), ',')
end

-- The instances a record names, loaded: budget views and rate views (false when gone).
local function load_record(rec)
  local budgets, rates = {}, {}
  -- One charge flag per budget: the count lets one pattern match split the ids.
  local ids = split_n(rec[R_IIDS], LS, #rec[R_CHARGE]) or split(rec[R_IIDS], LS)
  for i, iid in ipairs(ids) do budgets[i] = {iid, nil} end
  local cfgs = split(rec[R_RATE_CFGS], LS)
  for i, iid in ipairs(split(rec[R_RATES], LS)) do rates[i] = {iid, nil, cfgs[i]} end
  return load(budgets, rates)
end

-- The context of one call: keys, the common ARGV head, the server clock. Every script calls it
-- first. A malformed head sets BAD_HEAD (the script then refuses before reading anything).
local USAGE_DAY, USAGE_DAY_UNTIL = nil, 0 -- the UTC day's key suffix, kept across calls
local ARGV_HEAD = {} -- the last common ARGV head and its parse, kept across calls
local function begin(keys, argv)
  KEYS, ARGV = keys, argv
  K_POLICY, K_BUDGETS, K_BIDX, K_HOLDS = keys[1], keys[2], keys[3], keys[4]
  K_LEASES, K_DONE, K_AUDIT = keys[5], keys[6], keys[7]
  K_AHEAD, K_OVERRIDES = keys[11], keys[12]
  PROJECT = argv[1]
  local h = ARGV_HEAD
  if not (h[1] == argv[2] and h[2] == argv[3] and h[3] == argv[4] and h[4] == argv[5]) then
    -- a new head (the same one comes on every call of a limiter): parse it once
    h = {argv[2], argv[3], argv[4], argv[5], int(argv[2]), int(argv[3]), int(argv[4]),
      int(argv[5])}
    ARGV_HEAD = h
  end
  AUDIT_RETENTION_MS, USAGE_TTL_S, RETENTION_MS, SWEEP_BATCH = h[5], h[6], h[7], h[8]
  BAD_HEAD = not (AUDIT_RETENTION_MS and AUDIT_RETENTION_MS > 0 and USAGE_TTL_S
    and USAGE_TTL_S > 0 and RETENTION_MS and RETENTION_MS >= 0 and SWEEP_BATCH
    and SWEEP_BATCH > 0 and K_AHEAD and K_OVERRIDES)
  HEAD_LOADED = false
  DENIAL_KEEP_MS = math.min(RETENTION_MS or 0, 3600000)
  local t = redis.call('TIME')
  NOW_S = tonumber(t[1])
  NOW_MS = NOW_S * 1000 + math.floor(tonumber(t[2]) / 1000)
  TZ_CACHE = {}
  if NOW_S >= USAGE_DAY_UNTIL or NOW_S < USAGE_DAY_UNTIL - 86400 then
    USAGE_DAY = utc_day(NOW_S)
    USAGE_DAY_UNTIL = (math.floor(NOW_S / 86400) + 1) * 86400
  end
  K_USAGE = nil
  for i = 8, 10 do
    if keys[i] and string.sub(keys[i], -8) == USAGE_DAY then K_USAGE = keys[i] end
  end
end
