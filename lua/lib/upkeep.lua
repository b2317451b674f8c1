-- lib/upkeep.lua: bounded housekeeping run by the scripts themselves (no daemon): overdue
-- holds expire, ended records and finished budget periods go, idle rate instances are dropped.
-- Reserve runs it when the policy hash's "due" has passed; status and sweep always.

-- An overdue hold ends: each budget charges it or releases it as its policy says.
local function expire_hold(rid, rec)
  local hold = num(rec[R_HOLD])
  local flags = rec[R_CHARGE]
  local charged = false
  local bviews, rviews = load_record(rec)
  for i, view in ipairs(bviews) do
    local charge = 0
    if string.sub(flags, i, i) == '1' then charge, charged = hold, true end
    budget_post(view, hold, charge, rid, rec[R_MODEL])
  end
  -- Its usage is unknown: the tokens stay charged to the buckets; only the slot is freed.
  for _, view in ipairs(rviews) do if view then rate_return(view, 0, true) end end
  store(bviews, rviews)
  if charged then book_usage(rec[R_DIMS], hold, 1, 0, 0, 0, 0, 1) end
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

local function first_score(key)
  local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  return tonumber(first[2])
end

-- When housekeeping is next needed (ms): the first lease deadline, record to drop or period to
-- close (or timer to run: lib/overrides.lua), audit window to write (`audit_due`), and at the
-- latest DENIAL_KEEP_MS from now (so work a settle adds later, always due later than that,
-- never waits past it). Stored as "due" in the policy hash.
local function next_due(audit_due)
  local due = NOW_MS + math.max(DENIAL_KEEP_MS, 1000)
  if audit_due and audit_due < due then due = audit_due end
  local lease, done, ended = first_score(K_LEASES), first_score(K_DONE), first_score(K_BIDX)
  if lease and lease < due then due = lease end
  if done and done + RETENTION_MS < due then due = done + RETENTION_MS end
  if ended and ended * 1000 < due then due = math.floor(ended * 1000 + 0.5) end
  return math.max(due, NOW_MS + 1)
end

-- Bounded upkeep: overdue holds, old records, finished budget periods, idle rate instances,
-- overrides that ended, old override records and audit flood windows that ended.
-- Reserve runs it only when the policy hash's "due" has passed; status and sweep always.
-- Returns how many holds expired, and the next due time it stored.
local function housekeeping(limit)
  local expired = sweep(limit)
  local old = redis.call('ZRANGEBYSCORE', K_DONE, '-inf', NOW_MS - RETENTION_MS, 'LIMIT', 0, limit)
  for _, rid in ipairs(old) do
    W('HDEL', K_HOLDS, rid)
    W('ZREM', K_DONE, rid)
  end
  local ended = redis.call('ZRANGEBYSCORE', K_BIDX, '-inf', string.format('%.3f', NOW_MS / 1000),
    'LIMIT', 0, limit)
  for _, member in ipairs(ended) do
    local iid, kind = member, string.sub(member, 1, 2)
    if kind == 'o|' then
      ovr_timer(string.sub(member, 3))
    elseif kind == 'd|' then
      W('HDEL', K_OVERRIDES, string.sub(member, 3))
      W('ZREM', K_BIDX, member)
    elseif kind == 'r|' then
      if rate_drop_if_idle(string.sub(member, 3)) then
        W('ZREM', K_BIDX, member)
      else
        W('ZADD', K_BIDX, NOW_S + RATE_IDLE_CHECK_S, member)
      end
    else
      local v = redis.call('HMGET', K_BUDGETS, iid, iid .. '|o')
      local h, e = string.match(v[1] or '', '^%d+:(%d+):%d+:(%d+):')
      local held, ends = tonumber(h) or 0, tonumber(e)
      local o = ovr_parse(v[2])
      if ends == 0 then
        -- Its period became "total" (a policy change) after it was indexed: it never ends.
        W('ZREM', K_BIDX, iid)
      elseif ends and ends * 1000 > NOW_MS then
        W('ZADD', K_BIDX, ends, iid) -- indexed for a period it has left: look at its end
      elseif held <= 0 and not (o and o.until_ms > NOW_MS) then
        if o then ovr_end(iid, o, 'override.expired', '', 'expired') end
        W('HDEL', K_BUDGETS, iid, iid .. '|c', iid .. '|o', iid .. '|f')
        W('ZREM', K_BIDX, iid)
      else
        W('ZADD', K_BIDX, NOW_S + 3600, iid) -- a live hold or override needs it; look later
      end
    end
  end
  local due = next_due(audit_upkeep())
  -- Remembered in the policy hash, never creating it (a project without a stored policy).
  if redis.call('HEXISTS', K_POLICY, 'v') == 1 then W('HSET', K_POLICY, 'due', due) end
  return expired, due
end
