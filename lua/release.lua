-- release.lua: return a reservation's hold unspent; idempotent, never releases twice.
-- needs: common period rate state
--
-- KEYS: the common ten (lib/common.lua).
-- ARGV[1..5]: the common head.
--   ARGV[6]  reservation id
-- Reply: {"released", state before} (state before H: this call released it; S, R, X or E: the
--        hold had already ended and nothing changed), or {"unknown"}.

if not K_USAGE then return {'clock', NOW_S} end
local rid = ARGV[6]
local raw = redis.call('HGET', K_HOLDS, rid)
if not raw then return {'unknown'} end
local rec = rec_decode(raw)
if rec[R_STATE] ~= 'H' then return {'released', rec[R_STATE]} end
local hold = num(rec[R_HOLD])
for _, iid in ipairs(split(rec[R_IIDS], LS)) do
  redis.call('HINCRBY', K_BUDGETS, iid .. '|h', -hold)
end
-- The call did not complete: its tokens go back to the buckets (a late settle takes them again).
for _, r in ipairs(split(rec[R_RATES], LS)) do rate_return(r, num(rec[R_RATE_TOKENS]), true) end
rec_finish(rid, rec, 'R', 0)
return {'released', 'H'}
