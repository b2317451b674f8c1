-- override.lua: grant, revoke or list approved, expiring raises of a budget instance's cap.
-- needs: common audit period rate overrides instances state upkeep
--
-- KEYS: the common twelve (lib/common.lua).
-- ARGV[1..5]: the common head.
--   ARGV[6]  "grant", "revoke" or "list"
-- grant:  ARGV[7] budget instance id   ARGV[8] "budget\30split value"
--         ARGV[9] extra cap (nUSD)      ARGV[10] lifetime (integer ms)
--         ARGV[11] requested by         ARGV[12] approved by (a different person)
--         ARGV[13] reason               ARGV[14] override id (client-chosen: a retried grant
--         with the same id changes nothing)
-- revoke: ARGV[7] budget instance id   ARGV[8] revoked by   ARGV[9] reason
-- list:   nothing more; housekeeping runs first, so overrides whose end has come are ended
--         (an active record reports the uses counted so far).
-- A grant replaces the instance's override in force (which ends as override.revoked, reason
-- "replaced"). While an override is in force, reserves may use cap + extra; the first reserve
-- of each budget period that fits only thanks to it is audited override.used.
-- Reply: {"granted", until ms, granted ms} | {"revoked", 1 (there was one in force) or 0}
--      | {"overrides", now ms, then id, record (lib/overrides.lua) pairs} | {"badargs", what}
--      | {"clock", server s}

local function override_grant()
  local iid, label, extra, lifetime_ms = ARGV[7], ARGV[8], arg_int(ARGV[9]), arg_int(ARGV[10])
  local requested, approved, reason, oid = ARGV[11], ARGV[12], ARGV[13], ARGV[14]
  if not (iid and label and extra and extra >= 0 and lifetime_ms and lifetime_ms > 0 and requested
    and approved and reason and requested ~= '' and approved ~= '' and requested ~= approved
    and reason ~= '' and oid and string.match(oid, '^[%w]+$') and #oid <= 32) then
    return {'badargs', 'grant'}
  end
  local known = ovr_record(oid)
  if known then return {'granted', int(known[O_UNTIL]) or 0, int(known[O_GRANTED]) or 0} end
  local v = redis.call('HMGET', K_BUDGETS, iid .. '|o', iid .. '|c')
  local old = ovr_parse(v[1])
  local until_ms = NOW_MS + lifetime_ms
  -- Every value is checked and computed: the writes follow.
  if old then
    if old.until_ms <= NOW_MS then
      ovr_end(iid, old, 'override.expired', '', 'expired')
    else
      ovr_end(iid, old, 'override.revoked', approved, 'replaced')
    end
  end
  local o = {extra = extra, until_ms = until_ms, oid = oid, used_p = -1, uses = 0}
  local fields = {iid .. '|o', ovr_encode(o)}
  if not v[2] then -- never reserved: make it listed
    fields[3], fields[4] = iid .. '|c', table.concat({0, '', '', label}, FS)
  end
  W('HSET', K_BUDGETS, unpack(fields))
  local rec = {'A', iid, label, I(extra), I(NOW_MS), I(until_ms), requested, approved, reason,
    '0', '', '', ''}
  W('HSET', K_OVERRIDES, oid, table.concat(rec, FS))
  redis.call('ZADD', K_BIDX, string.format('%.3f', until_ms / 1000), 'o|' .. iid)
  want_due(until_ms)
  local nb = split(label, LS)
  audit('override.granted', {'override', oid, 'budget', nb[1] or iid, 'split', nb[2] or '',
    'amount_usd', usd(extra), 'until_ms', I(until_ms), 'requested_by', requested,
    'approved_by', approved, 'reason', reason})
  return {'granted', until_ms, NOW_MS}
end

local function override_revoke()
  local iid, by, reason = ARGV[7], ARGV[8], ARGV[9]
  if not (iid and by and reason and by ~= '' and reason ~= '') then return {'badargs', 'revoke'} end
  local o = ovr_parse(redis.call('HGET', K_BUDGETS, iid .. '|o'))
  if not o then return {'revoked', 0} end
  if o.until_ms <= NOW_MS then -- it has just ended by itself
    ovr_end(iid, o, 'override.expired', '', 'expired')
    return {'revoked', 0}
  end
  ovr_end(iid, o, 'override.revoked', by, reason)
  return {'revoked', 1}
end

local function override(keys, argv)
  begin(keys, argv)
  if BAD_HEAD then return {'badargs', 'head'} end
  local mode = ARGV[6]
  if mode == 'grant' then return override_grant() end
  if mode == 'revoke' then return override_revoke() end
  if mode ~= 'list' then return {'badargs', 'override'} end
  if not K_USAGE then return {'clock', NOW_S} end
  housekeeping(SWEEP_BATCH)
  local reply = {'overrides', NOW_MS}
  local flat = redis.call('HGETALL', K_OVERRIDES)
  for i = 1, #flat - 1, 2 do
    local oid, raw = flat[i], flat[i + 1]
    local rec = ovr_record(oid)
    if rec and rec[O_STATE] == 'A' then -- in force: its uses are counted in the hot field
      local o = ovr_parse(redis.call('HGET', K_BUDGETS, rec[O_IID] .. '|o'))
      if o and o.oid == oid then rec[O_USES] = I(o.uses); raw = table.concat(rec, FS) end
    end
    reply[#reply + 1], reply[#reply + 2] = oid, raw
  end
  return reply
end
