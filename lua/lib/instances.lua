-- lib/instances.lua: the budget and rate-limit instances a request matched, from the
-- arguments reserve.lua (and settle.lua's booking of an unknown id) receive, and the fields
-- one HMGET reads for them.
--
-- The instances a request matched, as the client sends them in five arguments: the configs,
-- the same for every request of a (model, tags) shape whatever its split values, then the
-- budget instance ids (joined by \30), the budgets' split values (joined by \29, "" where a
-- budget is not split), the rate-limit instance ids and split values likewise. The configs:
-- budgets joined by \29, then \28, then rate limits joined by \29, each one's fields joined by
-- \31 (budget: id, cap nUSD, thresholds "nUSD:fraction,...", period spec, on expiry "1" charge
-- / "0" release, mode "e" / "s"; rate limit: id, config "rpm,tpm,max_concurrent,burst_milli",
-- mode). Their parse is kept across calls (bounded, like the configs; shared, never changed);
-- what names a split value is built per call, so the kept parses do not grow with the number
-- of customers (Lua's cost grows with its heap).
local STATIC, STATIC_KEPT = {}, 0
local function parse_items(part, width)
  local items = {}
  if part == '' then return items end
  for i, raw in ipairs(split(part, '\29')) do
    local f = split(raw, FS)
    if #f ~= width then return nil, i end
    items[i] = f
  end
  return items
end

-- One instance as instances() gives it: its config (id, label, stored config form), its
-- entry for load() and the fields load() reads for it.
local function budget_instance(b, iid, name)
  local cfg = {iid = iid, name = name, cap = b.cap, thresholds = b.thresholds, spec = b.spec,
    charge = b.charge, shadow = b.shadow, cold = b.cold_head .. name}
  return {cfg, {iid, b.spec, cfg}, {iid, iid .. '|c', iid .. '|o', iid .. '|f'}}
end

local function rate_instance(r, iid, name)
  return {{iid = iid, name = name, raw = r.raw, shadow = r.shadow}, {iid, r.raw, nil},
    {iid, iid .. '|cfg'}}
end

local function static_configs(block)
  local hit = STATIC[block]
  if hit then return hit end
  local cut = string.find(block, '\28', 1, true)
  if not cut then return nil, 'instances' end
  local bs, bad = parse_items(string.sub(block, 1, cut - 1), 6)
  if not bs then return nil, 'budget ' .. bad end
  local rs, rbad = parse_items(string.sub(block, cut + 1), 3)
  if not rs then return nil, 'rate ' .. rbad end
  local p = {budgets = {}, rates = {}, flags = {}, rcfgs = {}}
  for i, f in ipairs(bs) do
    local b = {id = f[1], cap = int(f[2]), thresholds = f[3], spec = f[4], charge = f[5],
      shadow = f[6] == 's'}
    if not (b.id ~= '' and b.cap and b.cap >= 0 and spec_ok(b.spec)
      and (b.charge == '0' or b.charge == '1') and (f[6] == 'e' or b.shadow)) then
      return nil, 'budget ' .. i
    end
    b.cold_head = table.concat({I(b.cap), b.thresholds, b.spec, ''}, FS) -- |c before the label
    -- The instance of a budget that is not split is the same on every call: built once.
    b.whole = budget_instance(b, b.id, b.id .. LS)
    p.budgets[i], p.flags[i] = b, b.charge
  end
  for i, f in ipairs(rs) do
    local r = {id = f[1], raw = f[2], shadow = f[3] == 's'}
    if not (r.id ~= '' and rate_cfg(r.raw) and (f[3] == 'e' or r.shadow)) then
      return nil, 'rate ' .. i
    end
    r.whole = rate_instance(r, 'r:' .. r.id, r.id .. LS)
    p.rates[i], p.rcfgs[i] = r, r.raw
  end
  p.flags, p.rcfgs = table.concat(p.flags), table.concat(p.rcfgs, LS)
  if STATIC_KEPT >= 256 then STATIC, STATIC_KEPT = {}, 0 end
  STATIC[block], STATIC_KEPT = p, STATIC_KEPT + 1
  return p
end

-- The fields one HMGET reads for budget instances ({iid, spec or nil}) and rate instances.
local function load_fields(budgets, rates)
  local fields = {}
  for _, b in ipairs(budgets) do
    local n = #fields
    fields[n + 1], fields[n + 2], fields[n + 3], fields[n + 4] = b[1], b[1] .. '|c', b[1] .. '|o',
      b[1] .. '|f'
  end
  for _, r in ipairs(rates) do
    fields[#fields + 1], fields[#fields + 2] = r[1], r[1] .. '|cfg'
  end
  return fields
end

local function append(into, items)
  local n = #into
  for i = 1, #items do into[n + i] = items[i] end
end

-- This call's instances: configs with their ids and labels ("limit\30split value"), the lists
-- load() takes with its fields, the record's joined ids and flags. Only the instances of a
-- split budget or rate limit are built; the others come from the kept parse. Returns nil and
-- what is malformed.
local function instances(static, b_ids, b_values, r_ids, r_values)
  if not (static and b_ids and b_values and r_ids and r_values) then return nil, 'instances' end
  if has_fs(b_ids, r_ids) then return nil, 'instance ids' end -- kept in the hold record
  local s, bad = static_configs(static)
  if not s then return nil, bad end
  local nb, nr = #s.budgets, #s.rates
  local ids, values = split_n(b_ids, LS, nb), split_n(b_values, '\29', nb)
  local rids, rvalues = split_n(r_ids, LS, nr), split_n(r_values, '\29', nr)
  if not (ids and values and rids and rvalues) then return nil, 'instance ids' end
  local p = {configs = {}, budgets = {}, rconfigs = {}, rates = {}, fields = {}, iids = b_ids,
    rids = r_ids, flags = s.flags, rcfgs = s.rcfgs}
  for i, b in ipairs(s.budgets) do
    local iid, value = ids[i], values[i] or ''
    local one = b.whole
    if not (value == '' and iid == b.id) then
      if iid == '' then return nil, 'budget ' .. i end
      one = budget_instance(b, iid, b.id .. LS .. value)
    end
    p.configs[i], p.budgets[i] = one[1], one[2]
    append(p.fields, one[3])
  end
  for i, r in ipairs(s.rates) do
    local iid, value = rids[i], rvalues[i] or ''
    local one = r.whole
    if not (value == '' and iid == one[1].iid) then
      if iid == '' then return nil, 'rate ' .. i end
      one = rate_instance(r, iid, r.id .. LS .. value)
    end
    p.rconfigs[i], p.rates[i] = one[1], one[2]
    append(p.fields, one[3])
  end
  return p
end

-- HMGET of the budgets hash; beyond LOAD_BATCH fields (status reads every instance of the
-- project, one per customer of a split budget) in several calls: unpack() cannot pass more
-- than a few thousand values.
local LOAD_BATCH = 1024
local function hmget(fields)
  local n = #fields
  if n <= LOAD_BATCH then return redis.call('HMGET', K_BUDGETS, unpack(fields)) end
  local v = {}
  for first = 1, n, LOAD_BATCH do
    local last = math.min(n, first + LOAD_BATCH - 1)
    local part = redis.call('HMGET', K_BUDGETS, unpack(fields, first, last))
    for j = 1, #part do v[first + j - 1] = part[j] end
  end
  return v
end

-- W(command, key, pairs...) for a flat list of pairs, in calls of at most LOAD_BATCH values
-- (a request that matches thousands of limits would pass unpack() too many at once).
local function write_pairs(command, key, pairs)
  local n = #pairs
  for first = 1, n, LOAD_BATCH do
    W(command, key, unpack(pairs, first, math.min(n, first + LOAD_BATCH - 1)))
  end
end
