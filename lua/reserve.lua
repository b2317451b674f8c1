-- reserve.lua: check model policy and every matching budget, then hold the estimate; atomic.
-- needs: common audit period rate overrides instances state upkeep
--
-- KEYS: the common twelve (lib/common.lua).
-- ARGV[1..5]: the common head.
--   ARGV[6]  policy version the caller computed this request from ("0": it found no policy)
--   ARGV[7]  reservation id (idempotency key)
--   ARGV[8]  denial found by the caller's model check ("" if none): model-denied, model-not-allowed,
--            no-policy, unknown-price
--   ARGV[9]  hold (nUSD, an upper bound of the cost)
--   ARGV[10] lease (integer ms)
--   ARGV[11] model
--   ARGV[12] tags as JSON (for the record and the audit)
--   ARGV[13] attribution rows, joined by \30
--   ARGV[14] estimated input tokens;  ARGV[15] max output tokens
--   ARGV[16] flags: "u" when the price is unknown and allowed at cost 0 (audited)
--   ARGV[17..21] the matched budget and rate-limit instances (instances() in lib/instances.lua):
--            their configs (the same for every request of a shape), the budget instance ids,
--            the budgets' split values, the rate-limit instance ids and split values. A budget:
--            id, cap (nUSD), thresholds "nUSD:fraction,...", period spec, on expiry ("1"
--            charge, "0" release), mode ("e" enforce, "s" shadow); a rate limit: id, config
--            "rpm,tpm,max_concurrent,burst (thousandths of a minute)" (0 = no such limit),
--            mode ("e" or "s"). TPM is charged ARGV[14] + ARGV[15] tokens.
-- Budgets are checked before rate limits: a request a budget blocks for the period is not told
-- to retry in a second. Shadow limits never deny: once the enforced ones allow the request,
-- each shadow budget it would overrun is audited budget.would_block (and still holds, so its
-- spend is tracked), each shadow rate limit that would refuse it rate.would_limit (and takes
-- nothing from its buckets, which so count what enforcement would have admitted).
-- Reply, one of:
--   {"stale", current version}                   the caller must reload the policy and retry
--   {"clock", server s}                           the caller's clock is more than a day off
--   {"badargs", what}                             malformed ARGV: nothing was read or written
--   {"dup", hold, lease deadline ms, model, now ms}  this id holds now (a retry): nothing changed
--   {"ended", state}                              this id's hold already ended (S, R, X, E): a
--                                                 new attempt needs a new id; nothing changed
--   (an id denied before, state D, is decided afresh; every denial leaves a D record)
--   {"damaged"}                                   this id's record is unreadable: nothing changed
--   {"denied", "model", reason}
--   {"denied", "budget", budget, split, cap, spent, held, hold, period start s, period end s}
--   {"denied", "rate", limit, split, kind (rpm, tpm, tpm-too-large, concurrency),
--    retry after ms (-1: no time can be promised), the limit's value}
--   {"ok", hold, lease deadline ms, now ms, then per budget: spent, held, cap (override
--    included), start s, end s, override extra; then the number k of shadow limits that would
--    have denied it and k values "b\30budget" or "r\30limit"}

local function reserve(keys, argv)
  begin(keys, argv)
  if BAD_HEAD then return {'badargs', 'head'} end
  if not K_USAGE then return {'clock', NOW_S} end

  -- Every argument is checked before anything is read or written.
  local rid, denial, model, tags = ARGV[7], ARGV[8], ARGV[11], ARGV[12]
  local hold, lease_ms = arg_int(ARGV[9]), arg_int(ARGV[10])
  local est_in, est_out = arg_int(ARGV[14]), arg_int(ARGV[15])
  if not (rid and denial and model and tags and ARGV[13] and ARGV[16] and hold and hold >= 0
    and lease_ms and lease_ms > 0 and est_in and est_in >= 0 and est_out and est_out >= 0)
    or has_fs(model, tags, ARGV[13]) then
    return {'badargs', 'reserve'}
  end
  local inst, bad = instances(ARGV[17], ARGV[18], ARGV[19], ARGV[20], ARGV[21])
  if not inst then return {'badargs', bad} end
  local configs, rconfigs = inst.configs, inst.rconfigs
  -- Per call (the parsed configs are shared across calls and never changed).
  local over, overridden, kinds, retries = {}, {}, {}, {}

  local pv = redis.call('HMGET', K_POLICY, 'v', 'due')
  local version = pv[1] or '0'
  if version ~= ARGV[6] then return {'stale', version} end

  local existing = redis.call('HGET', K_HOLDS, rid)
  if existing then
    local rec = rec_decode(existing)
    if not rec then return {'damaged'} end
    local state = rec[R_STATE]
    if state == 'H' then return {'dup', num(rec[R_HOLD]), num(rec[R_DEADLINE]), rec[R_MODEL], NOW_MS} end
    if state ~= 'D' then return {'ended', state} end
    -- denied before: decided afresh
  end

  local due = int(pv[2]) or 0
  if NOW_MS >= due then
    local _
    _, due = housekeeping(SWEEP_BATCH)
  end

  if denial ~= '' then
    audit_flood('model.denied', {'model', model, 'tags', tags, 'reason', denial}, {'rid', rid})
    rec_denied(rid, model, denial)
    return {'denied', 'model', denial}
  end

  -- Compute everything before the first write: a denial changes no budget.
  local bviews, rviews = load(inst.budgets, inst.rates, inst.fields)
  local function budget_audit(event, cfg, view, cap)
    local nb = split(cfg.name, LS)
    audit_flood(event, {'budget', nb[1], 'split', nb[2] or '', 'model', model, 'tags', tags,
      'reason', 'over-cap'}, {'rid', rid, 'amount_usd', usd(hold), 'spent_usd', usd(view.spent),
      'held_usd', usd(view.held), 'cap_usd', usd(cap)})
    return nb
  end
  for i, cfg in ipairs(configs) do
    local view = bviews[i]
    local cap = cfg.cap + view.extra
    over[i] = view.spent + view.held + hold > cap
    if over[i] and not cfg.shadow then
      local nb = budget_audit('budget.blocked', cfg, view, cap)
      rec_denied(rid, model, 'budget ' .. nb[1] .. (nb[2] and nb[2] ~= '' and (' for ' .. nb[2]) or ''))
      return {'denied', 'budget', nb[1], nb[2] or '', cap, view.spent, view.held, hold, view.p, view.e}
    end
    overridden[i] = not over[i] and view.spent + view.held + hold > cfg.cap
  end

  local tokens = est_in + est_out
  local function rate_audit(event, rc, rview, kind, retry_ms)
    local nb = split(rc.name, LS)
    audit_flood(event, {'limit', nb[1], 'split', nb[2] or '', 'kind', kind, 'model', model,
      'tags', tags, 'reason', kind}, {'rid', rid, 'retry_after_ms', retry_ms})
    return nb
  end
  for i, rc in ipairs(rconfigs) do
    local rview = rviews[i]
    local kind, retry_ms = rate_check(rview, tokens)
    if kind and not rc.shadow then
      local c = rview.cfg
      local value = c.maxc
      if kind == 'rpm' then value = c.rpm elseif kind ~= 'concurrency' then value = c.tpm end
      local nb = rate_audit('rate.limited', rc, rview, kind, retry_ms)
      rec_denied(rid, model, 'rate limit ' .. nb[1] .. ' (' .. kind .. ')')
      return {'denied', 'rate', nb[1], nb[2] or '', kind, retry_ms, value}
    end
    kinds[i], retries[i] = kind, retry_ms
  end

  local reply = {'ok', hold, NOW_MS + lease_ms, NOW_MS}
  local more = {}
  for i, cfg in ipairs(configs) do
    local view = bviews[i]
    if view.cap ~= cfg.cap or view.thresholds ~= cfg.thresholds or view.name ~= cfg.name
      or view.spec ~= view.stored_spec then
      more[#more + 1] = cfg.iid .. '|c'
      more[#more + 1] = cfg.cold
      view.thresholds = cfg.thresholds
      view.fresh = true -- the thresholds may have changed: find the next one again
    end
    view.held = view.held + hold
    view.changed = true
    if view.reset or view.fresh then view.next = next_threshold(view.thresholds, view.warned) end
    local r = #reply
    reply[r + 1], reply[r + 2], reply[r + 3] = view.spent, view.held, cfg.cap + view.extra
    reply[r + 4], reply[r + 5], reply[r + 6] = view.p, view.e, view.extra
    local o = view.ovr
    if overridden[i] and o then
      -- Counted on every use; audited on the first use in each budget period.
      local first_use = o.used_p ~= view.p
      o.uses, o.used_p = o.uses + 1, view.p
      more[#more + 1], more[#more + 2] = cfg.iid .. '|o', ovr_encode(o)
      if first_use then
        local nb = split(cfg.name, LS)
        local requested, approved = ovr_names(o.oid)
        audit('override.used', {'override', o.oid, 'budget', nb[1], 'split', nb[2] or '',
          'model', model, 'tags', tags, 'rid', rid, 'amount_usd', usd(hold),
          'spent_usd', usd(view.spent), 'cap_usd', usd(cfg.cap), 'period_start', I(view.p),
          'requested_by', requested, 'approved_by', approved, 'reason', 'over-base-cap'})
      end
    end
  end

  -- Shadow limits that would have denied it: audited, and the request goes ahead.
  local shadowed = {}
  for i, cfg in ipairs(configs) do
    if over[i] then
      local view = bviews[i]
      local nb = budget_audit('budget.would_block', cfg, view, cfg.cap + view.extra)
      shadowed[#shadowed + 1] = 'b' .. LS .. nb[1]
    end
  end
  local rids, rcfgs, rtaken = {}, {}, {}
  for i, rc in ipairs(rconfigs) do
    if kinds[i] then
      local nb = rate_audit('rate.would_limit', rc, rviews[i], kinds[i], retries[i])
      shadowed[#shadowed + 1] = 'r' .. LS .. nb[1]
    else
      rate_take(rviews[i], tokens)
      rids[#rids + 1], rcfgs[#rcfgs + 1], rtaken[#rtaken + 1] = rc.iid, rc.raw, rviews[i]
    end
  end
  -- The rate instances the hold took from: all of them unless a shadow one would refuse it.
  local took_ids, took_cfgs = inst.rids, inst.rcfgs
  if #rtaken < #rconfigs then took_ids, took_cfgs = table.concat(rids, LS), table.concat(rcfgs, LS) end
  reply[#reply + 1] = #shadowed
  for _, label in ipairs(shadowed) do reply[#reply + 1] = label end
  store(bviews, rtaken, more)

  local deadline = NOW_MS + lease_ms
  -- The record (lib/state.lua R_*), in one format call.
  local rec = string.format('H\31%d\31%d\31%d\31%s\31%s\31%s\31%s\31%s\31%d\31%d\31\31\31%s\31%d\31%s',
    hold, deadline, NOW_MS, model, inst.iids, inst.flags, ARGV[13], tags, est_in, est_out, took_ids,
    tokens, took_cfgs)
  W('HSET', K_HOLDS, rid, rec)
  W('ZADD', K_LEASES, deadline, rid)
  if existing then W('ZREM', K_DONE, rid) end -- it replaces a denial record
  -- Housekeeping must come by when this lease or a new period ends.
  local soonest = deadline
  for _, view in ipairs(bviews) do
    if view.dirty and view.e ~= 0 and view.e * 1000 < soonest then soonest = view.e * 1000 end
  end
  if soonest < due then want_due(soonest) end
  if string.find(ARGV[16], 'u', 1, true) then
    audit_flood('price.unknown', {'model', model, 'tags', tags, 'reason', 'allowed-at-zero'},
      {'rid', rid})
  end
  return reply
end
