-- settle.lua: book the actual cost of a reservation, refund its unused hold; idempotent.
-- needs: common audit period rate overrides instances state upkeep
--
-- KEYS: the common twelve (lib/common.lua).
-- ARGV[1..5]: the common head.
--   ARGV[6]  reservation id
--   ARGV[7]  actual cost (nUSD); for a known id settled with ARGV[12] = "e" the record's hold
--            is booked instead
--   ARGV[8]  input tokens (total);  ARGV[9] output;  ARGV[10] cache read;  ARGV[11] cache write
--   ARGV[12] "e" when this books the estimate of a reservation left without a settle (a later
--            real settle then books the difference once), else ""
--   ARGV[13] how to book an id this project does not know: "" (do not: reply "unknown"), or the
--            model, and then ARGV[14] tags JSON, ARGV[15] attribution rows (\30), ARGV[16..20]
--            the instances as in reserve.lua (ARGV[17..21] there; rate limits are not booked)
-- Reply, one of:
--   {"badargs", what}    malformed ARGV: nothing was read or written
--   {"clock", server s}
--   {"unknown"}          an id this project does not know, or one abandoned before its reserve
--                        ran (release.lua): book it with ARGV[13..]
--   {"damaged"}          the id's record is unreadable: nothing changed
--   {"denied", why}      the id's reserve was denied: nothing to settle, nothing changed
--   {"settled", cost, hold, first (1/0), state before, over the hold (1/0)}
--     state before: H held, S settled (nothing changed: the first cost is returned),
--     R released / X expired-charged / E expired-released (a late settle, booked as a
--     correction), A charged its estimate (the difference to this actual is booked once),
--     U unknown id booked from ARGV[13..]

-- An actual above its hold is booked all the same, and audited: 1 if so, else 0.
local function over_estimate(rid, rec, cost, hold)
  if cost <= hold then return 0 end
  audit('settle.over_estimate', {'rid', rid, 'model', rec[R_MODEL], 'tags', rec[R_TAGS],
    'budget', budget_names(rec), 'amount_usd', usd(cost), 'hold_usd', usd(hold),
    'reason', 'actual-above-hold'})
  return 1
end

-- A correction of a booking made when the record ended (ms): booked on the instance's
-- current period; a refund (negative) of a booking in a period that has closed since is
-- dropped, or it would come out of the new period's spend and let that go past its cap.
local function correction(view, amount, booked_ms)
  if amount < 0 and view.p and view.p * 1000 > booked_ms then return 0 end
  return amount
end

local function settle(keys, argv)
  begin(keys, argv)
  if BAD_HEAD then return {'badargs', 'head'} end
  if not K_USAGE then return {'clock', NOW_S} end

  local rid, cost, estimate = ARGV[6], arg_int(ARGV[7]), ARGV[12] == 'e'
  -- A settle of the estimate ends in A: a real settle may still correct it, once.
  local final = estimate and 'A' or 'S'
  local t_in, t_out, t_cr, t_cw = arg_int(ARGV[8]), arg_int(ARGV[9]), arg_int(ARGV[10]), arg_int(ARGV[11])
  if not (rid and cost and cost >= 0 and t_in and t_in >= 0 and t_out and t_out >= 0
    and t_cr and t_cr >= 0 and t_cw and t_cw >= 0 and (ARGV[12] == '' or ARGV[12] == 'e')
    and ARGV[13]) then
    return {'badargs', 'settle'}
  end
  local raw = redis.call('HGET', K_HOLDS, rid)
  local rec = rec_decode(raw)
  -- An id abandoned before its reserve ran (release.lua "a") is ended by a released record
  -- naming no model: nothing was held, so a settle books it like an id never seen.
  if rec and rec[R_STATE] == 'R' and rec[R_MODEL] == '' then raw = nil end

  if not raw then
    if ARGV[13] == '' then return {'unknown'} end
    local model, tags, dims = ARGV[13], ARGV[14], ARGV[15]
    if not (tags and dims) or has_fs(model, tags, dims) then return {'badargs', 'fallback'} end
    local inst, bad = instances(ARGV[16], ARGV[17], ARGV[18], ARGV[19], ARGV[20])
    if not inst then return {'badargs', bad} end
    local configs, more = inst.configs, {}
    local bviews = load(inst.budgets, {}, inst.fields)
    for i, cfg in ipairs(configs) do
      local view = bviews[i]
      if view.cap ~= cfg.cap or view.thresholds ~= cfg.thresholds or view.name ~= cfg.name
        or view.spec ~= view.stored_spec then
        more[#more + 1] = cfg.iid .. '|c'
        more[#more + 1] = cfg.cold
        view.cap, view.thresholds, view.name, view.fresh = cfg.cap, cfg.thresholds, cfg.name, true
      end
      budget_post(view, 0, cost, rid, model)
    end
    store(bviews, {}, more)
    book_usage(dims, cost, 1, t_in, t_out, t_cr, t_cw, 0)
    -- A charged estimate (of a reservation taken without Redis) ends in A, as for a known
    -- id: a real settle later books the difference to it, once.
    local est_in, est_out = '', ''
    if estimate then est_in, est_out = t_in, t_out end
    local rec = {final, 0, NOW_MS, NOW_MS, model, inst.iids, '', dims, tags, est_in, est_out,
      cost, NOW_MS, '', 0, ''}
    W('HSET', K_HOLDS, rid, rec_encode(rec))
    W('ZADD', K_DONE, NOW_MS, rid)
    audit('settle.unknown', {'rid', rid, 'model', model, 'tags', tags, 'amount_usd', usd(cost),
      'budget', string.gsub(inst.iids, LS, ','), 'reason', 'unknown-reservation'})
    return {'settled', cost, 0, 1, 'U', 0}
  end

  if not rec then return {'damaged'} end
  local state, hold = rec[R_STATE], num(rec[R_HOLD])
  if state == 'D' then return {'denied', rec[R_COST]} end
  if state == 'S' or (state == 'A' and estimate) then
    return {'settled', num(rec[R_COST]), hold, 0, state, 0}
  end
  -- The estimate is the hold: an upper bound of whatever usage a real settle reports later.
  -- Priced at the plain input rate it could be less (a cache write costs more), and the later
  -- settle would book more than the room this one frees, past the cap other holds took.
  if estimate then cost = hold end

  local dims = rec[R_DIMS]
  local bviews, rviews = load_record(rec)
  local rate_tokens = num(rec[R_RATE_TOKENS])
  local model = rec[R_MODEL]
  if state == 'H' then
    for _, view in ipairs(bviews) do budget_post(view, hold, cost, rid, model) end
    for _, view in ipairs(rviews) do
      if view then rate_return(view, rate_tokens - (t_in + t_out), true) end
    end
    store(bviews, rviews)
    book_usage(dims, cost, 1, t_in, t_out, t_cr, t_cw, 0)
    rec_finish(rid, rec, final, cost)
    return {'settled', cost, hold, 1, 'H', over_estimate(rid, rec, cost, hold)}
  end

  if state == 'A' then
    -- The estimate was booked everywhere (budgets, attribution, buckets): book the difference.
    local booked, est_in, est_out = num(rec[R_COST]), num(rec[R_EST_IN]), num(rec[R_EST_OUT])
    local booked_ms = num(rec[R_FINISHED])
    for _, view in ipairs(bviews) do
      budget_post(view, 0, correction(view, cost - booked, booked_ms), rid, model)
    end
    for _, view in ipairs(rviews) do
      if view then rate_return(view, est_in + est_out - (t_in + t_out), false) end
    end
    store(bviews, rviews)
    book_usage(dims, cost - booked, 0, t_in - est_in, t_out - est_out, t_cr, t_cw, 0)
    rec_finish(rid, rec, 'S', cost)
    audit('settle.late', {'rid', rid, 'model', model, 'tags', rec[R_TAGS],
      'budget', budget_names(rec), 'amount_usd', usd(cost), 'correction_usd', usd(cost - booked),
      'reason', 'after-estimate-charged'})
    return {'settled', cost, hold, 1, 'A', over_estimate(rid, rec, cost, hold)}
  end

  -- A late settle (after a release or an expiry): book what the budgets have not yet booked.
  local charged_before = 0
  if state == 'X' then charged_before = hold end
  local booked_ms = num(rec[R_FINISHED])
  for i, view in ipairs(bviews) do
    local booked = 0
    if state == 'X' and string.sub(rec[R_CHARGE], i, i) == '1' then booked = hold end
    budget_post(view, 0, correction(view, cost - booked, booked_ms), rid, model)
  end
  -- A release gave every token back; an expiry kept the charged ones. Correct to the actual.
  local given_back = 0
  if state == 'R' then given_back = rate_tokens end
  for _, view in ipairs(rviews) do
    if view then rate_return(view, rate_tokens - given_back - (t_in + t_out), false) end
  end
  store(bviews, rviews)
  -- The expiry already counted the request in attribution; a correction adds no request.
  local requests = 1
  if state == 'X' then requests = 0 end
  book_usage(dims, cost - charged_before, requests, t_in, t_out, t_cr, t_cw, 0)
  rec_finish(rid, rec, final, cost)
  audit('settle.late', {'rid', rid, 'model', model, 'tags', rec[R_TAGS],
    'budget', budget_names(rec), 'amount_usd', usd(cost), 'correction_usd', usd(cost - charged_before),
    'reason', state == 'R' and 'after-release' or (state == 'X' and 'after-expiry-charged'
      or 'after-expiry-released')})
  return {'settled', cost, hold, 1, state, 0}
end
