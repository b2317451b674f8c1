-- status.lua: every budget instance of the project, with its period brought to the server clock.
-- needs: common audit period rate overrides instances state upkeep
--
-- KEYS: the common twelve (lib/common.lua).
-- ARGV[1..5]: the common head.
--   ARGV[6]  the ids of the budgets the current policy has, joined by \30: only their instances
--            are reported (a removed budget's stored spend stays until its period ends, so
--            adding it back within the period does not reset it).
--   ARGV[7]  optional: each of those budgets' cap (nUSD) and period spec, "cap\31spec", joined
--            by \30 in the same order: reported as in force (a policy change reaches an
--            instance's stored copy only with its next reserve), nothing is written.
-- Overdue holds are swept first (one batch), so what it reports is current.
-- Every budget instance with a config (|c): reserved at least once, or given an override.
-- Reply: {"status", now s, live holds, then per instance 8 values:
--         instance id, "budget\30split", cap (nUSD, override included), spent, held,
--         period start s, period end s (0 = never), override extra (nUSD)}

local function status(keys, argv)
  begin(keys, argv)
  if BAD_HEAD then return {'badargs', 'head'} end
  if not K_USAGE then return {'clock', NOW_S} end
  if not ARGV[6] then return {'badargs', 'status'} end
  local current, ids = {}, split(ARGV[6], LS)
  for _, id in ipairs(ids) do current[id] = true end
  local configs = ARGV[7] and split(ARGV[7], LS) or {}
  if ARGV[7] and #configs ~= #ids then return {'badargs', 'status configs'} end
  for i, raw in ipairs(configs) do
    local cap, spec = string.match(raw, '^(%d+)\31(.*)$')
    if not (cap and int(cap) and spec_ok(spec)) then return {'badargs', 'status configs'} end
    current[ids[i]] = {cap = int(cap), spec = spec}
  end
  housekeeping(SWEEP_BATCH)
  local reply = {'status', NOW_S, redis.call('ZCARD', K_LEASES)}
  local fields = redis.call('HKEYS', K_BUDGETS)
  table.sort(fields)
  local budgets = {}
  for _, field in ipairs(fields) do
    local iid = string.match(field, '^(.*)|c$')
    if iid and string.sub(iid, 1, 2) ~= 'r:' then
      -- the budget id is the instance id up to its split value (ids hold no "=")
      local cfg = current[string.match(iid, '^[^=]*')]
      budgets[#budgets + 1] = {iid, type(cfg) == 'table' and cfg.spec or nil}
    end
  end
  local bviews = load(budgets, {})
  for _, view in ipairs(bviews) do
    local cfg = current[split(view.name, LS)[1] or '']
    if cfg then
      if type(cfg) == 'table' then view.cap = cfg.cap end
      local r = #reply
      reply[r + 1], reply[r + 2], reply[r + 3] = view.iid, view.name, view.cap + view.extra
      reply[r + 4], reply[r + 5], reply[r + 6] = view.spent, view.held, view.p or 0
      reply[r + 7], reply[r + 8] = view.e or 0, view.extra
    end
  end
  return reply
end
