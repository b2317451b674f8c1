-- settle.lua: book the actual cost of a reservation, refund its unused hold; idempotent.
-- needs: common period rate state
--
-- KEYS: the common ten (lib/common.lua).
-- ARGV[1..5]: the common head.
--   ARGV[6]  reservation id
--   ARGV[7]  actual cost (nUSD)
--   ARGV[8]  input tokens (total);  ARGV[9] output;  ARGV[10] cache read;  ARGV[11] cache write
--   ARGV[12] how to book an id this project does not know: "" (do not: reply "unknown"), or the
--            model, and then ARGV[13] tags JSON, ARGV[14] attribution rows (\30), ARGV[15] n
--            budget instances and 6 values each as in reserve.lua
-- Reply, one of:
--   {"clock", server s}
--   {"unknown"}
--   {"settled", cost, hold, first (1/0), state before, over the hold (1/0)}
--     state before: H held, S settled (nothing changed: the first cost is returned),
--     R released / X expired-charged / E expired-released (a late settle, booked as a
--     correction), U unknown id booked from ARGV[12..]

if not K_USAGE then return {'clock', NOW_S} end

local rid, cost = ARGV[6], tonumber(ARGV[7])
local t_in, t_out, t_cr, t_cw = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10]),
  tonumber(ARGV[11])
local raw = redis.call('HGET', K_HOLDS, rid)

if not raw then
  if ARGV[12] == '' then return {'unknown'} end
  local model, tags, dims = ARGV[12], ARGV[13], ARGV[14]
  local n = tonumber(ARGV[15])
  local iids = {}
  for i = 1, n do
    local base = 15 + (i - 1) * 6
    local iid = ARGV[base + 1]
    local view = budget_view(iid, ARGV[base + 5])
    view.dirty = true
    budget_commit(view)
    redis.call('HSET', K_BUDGETS, iid .. '|c', ARGV[base + 3], iid .. '|t', ARGV[base + 4],
      iid .. '|n', ARGV[base + 2])
    budget_charge(iid, cost, rid, model)
    iids[i] = iid
  end
  book_usage(split(dims, LS), cost, 1, t_in, t_out, t_cr, t_cw, 0)
  local rec = {'S', 0, NOW_MS, NOW_MS, model, table.concat(iids, LS), '', dims, tags, '', '', cost,
    NOW_MS, '', 0}
  redis.call('HSET', K_HOLDS, rid, rec_encode(rec))
  redis.call('ZADD', K_DONE, NOW_MS, rid)
  audit('settle.unknown', {'rid', rid, 'model', model, 'tags', tags, 'amount_usd', usd(cost),
    'budget', table.concat(iids, ','), 'reason', 'unknown-reservation'})
  return {'settled', cost, 0, 1, 'U', 0}
end

local rec = rec_decode(raw)
local state, hold = rec[R_STATE], num(rec[R_HOLD])
if state == 'S' then return {'settled', num(rec[R_COST]), hold, 0, 'S', 0} end

local iids = split(rec[R_IIDS], LS)
local dims = split(rec[R_DIMS], LS)
if state == 'H' then
  for _, iid in ipairs(iids) do
    redis.call('HINCRBY', K_BUDGETS, iid .. '|h', -hold)
    budget_charge(iid, cost, rid, rec[R_MODEL])
  end
  book_usage(dims, cost, 1, t_in, t_out, t_cr, t_cw, 0)
  for _, r in ipairs(split(rec[R_RATES], LS)) do
    rate_return(r, num(rec[R_RATE_TOKENS]) - (t_in + t_out), true)
  end
  rec_finish(rid, rec, 'S', cost)
  local over = 0
  if cost > hold then
    over = 1
    audit('settle.over_estimate', {'rid', rid, 'model', rec[R_MODEL], 'tags', rec[R_TAGS],
      'budget', budget_names(rec), 'amount_usd', usd(cost), 'hold_usd', usd(hold),
      'reason', 'actual-above-hold'})
  end
  return {'settled', cost, hold, 1, 'H', over}
end

-- A late settle (after a release or an expiry): book what the budgets have not yet booked.
local charged_before = 0
if state == 'X' then charged_before = hold end
for i, iid in ipairs(iids) do
  local booked = 0
  if state == 'X' and string.sub(rec[R_CHARGE], i, i) == '1' then booked = hold end
  budget_charge(iid, cost - booked, rid, rec[R_MODEL])
end
-- The expiry already counted the request in attribution; a correction adds no request.
local requests = 1
if state == 'X' then requests = 0 end
book_usage(dims, cost - charged_before, requests, t_in, t_out, t_cr, t_cw, 0)
-- A release gave every token back; an expiry kept the charged ones. Correct to the actual.
local given_back = 0
if state == 'R' then given_back = num(rec[R_RATE_TOKENS]) end
for _, r in ipairs(split(rec[R_RATES], LS)) do
  rate_return(r, num(rec[R_RATE_TOKENS]) - given_back - (t_in + t_out), false)
end
rec_finish(rid, rec, 'S', cost)
audit('settle.late', {'rid', rid, 'model', rec[R_MODEL], 'tags', rec[R_TAGS],
  'budget', budget_names(rec), 'amount_usd', usd(cost), 'correction_usd', usd(cost - charged_before),
  'reason', state == 'R' and 'after-release' or (state == 'X' and 'after-expiry-charged'
    or 'after-expiry-released')})
return {'settled', cost, hold, 1, state, 0}
