-- release.lua: return a reservation's hold unspent; idempotent, never releases twice.
-- needs: common audit period rate overrides instances state upkeep
--
-- KEYS: the common twelve (lib/common.lua).
-- ARGV[1..5]: the common head.
--   ARGV[6]  reservation id
--   ARGV[7]  "a" to abandon the id: its reserve's caller was cancelled while the reserve was
--            in flight, so the reserve may have run, may run later or never will. A hold it
--            took is released; an id this project does not know, or one denied before (a
--            reserve of it would be decided afresh), is ended here (a released record naming
--            nothing), so that a reserve still on its way takes nothing.
-- Reply: {"released", state before} (state before H: this call released it; S, R, X or E: the
--        hold had already ended and nothing changed; U: an unknown id abandoned; D: a denied id
--        abandoned), {"unknown"},
--        {"damaged"} (the id's record is unreadable: nothing changed), {"denied", why} (its
--        reserve was denied) or {"badargs", what}.

local function release(keys, argv)
  begin(keys, argv)
  if BAD_HEAD then return {'badargs', 'head'} end
  if not K_USAGE then return {'clock', NOW_S} end
  local rid = ARGV[6]
  if not rid or not (ARGV[7] == nil or ARGV[7] == 'a') then return {'badargs', 'release'} end
  local raw = redis.call('HGET', K_HOLDS, rid)
  local rec = rec_decode(raw)
  -- Abandoned: an unknown id, or one denied before (a retry of it is decided afresh, so the
  -- abandoned retry could still take a hold), is ended by a released record naming nothing.
  if ARGV[7] == 'a' and (not raw or (rec and rec[R_STATE] == 'D')) then
    W('HSET', K_HOLDS, rid, rec_encode({'R', 0, NOW_MS, NOW_MS, '', '', '', '', '', '', '', 0, NOW_MS}))
    W('ZADD', K_DONE, NOW_MS, rid)
    return {'released', raw and 'D' or 'U'}
  end
  if not raw then return {'unknown'} end
  if not rec then return {'damaged'} end
  if rec[R_STATE] == 'D' then return {'denied', rec[R_COST]} end
  if rec[R_STATE] ~= 'H' then return {'released', rec[R_STATE]} end
  local hold = num(rec[R_HOLD])
  local bviews, rviews = load_record(rec)
  for _, view in ipairs(bviews) do budget_post(view, hold, 0, rid, rec[R_MODEL]) end
  -- The call did not complete: its tokens go back to the buckets (a late settle takes them again).
  local rate_tokens = num(rec[R_RATE_TOKENS])
  for _, view in ipairs(rviews) do if view then rate_return(view, rate_tokens, true) end end
  store(bviews, rviews)
  rec_finish(rid, rec, 'R', 0)
  return {'released', 'H'}
end
