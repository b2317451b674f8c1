-- lib/overrides.lua: approved, expiring raises of one budget instance's cap.
--
-- The override in force on instance <iid> is the budgets hash field
--   <iid>|o  "extra nUSD:until ms:override id:period start of its last override.used (-1:
--            never):reserves that needed it"
-- read by every reserve with the instance. Its record, live and ended, is in the overrides
-- hash (KEYS[12]): override id -> fields joined by \31 (O_* below; state A active, X expired,
-- R revoked or replaced). Timers in bidx (KEYS[3]): "o|<iid>" at the end of the override in
-- force (s, with ms decimals), "d|<id>" when an ended record is dropped (the audit retention
-- after it ended). Every override ends exactly once, audited override.expired (its end came)
-- or override.revoked (revoked, or replaced by a new grant), with both names.

local O_STATE, O_IID, O_LABEL, O_EXTRA, O_GRANTED, O_UNTIL = 1, 2, 3, 4, 5, 6
local O_REQUESTED, O_APPROVED, O_REASON, O_USES, O_ENDED, O_ENDED_BY, O_END_REASON =
  7, 8, 9, 10, 11, 12, 13
local O_COUNT = 13
local OVR_HOT = '^(%d+):(%d+):([%w]+):(%-?%d+):(%d+)$'

-- The hot field parsed, or nil (missing or unreadable: no override).
local function ovr_parse(raw)
  if type(raw) ~= 'string' or #raw > 96 then return nil end
  local x, u, oid, used_p, uses = string.match(raw, OVR_HOT)
  if not x or #x > 16 or #u > 16 or #used_p > 16 or #uses > 12 or #oid > 32 then return nil end
  return {extra = tonumber(x), until_ms = tonumber(u), oid = oid, used_p = tonumber(used_p),
    uses = tonumber(uses)}
end

local function ovr_encode(o)
  return string.format('%d:%d:%s:%d:%d', o.extra, o.until_ms, o.oid, o.used_p, o.uses)
end

-- An override's record as a list of O_COUNT strings, or nil when missing or unreadable.
local function ovr_record(oid)
  local raw = redis.call('HGET', K_OVERRIDES, oid)
  if type(raw) ~= 'string' then return nil end
  local rec = split(raw, FS)
  if #rec ~= O_COUNT or not (rec[O_STATE] == 'A' or rec[O_STATE] == 'X' or rec[O_STATE] == 'R') then
    return nil
  end
  return rec
end

-- The names and reason of an override's grant (empty when its record is unreadable).
local function ovr_names(oid)
  local rec = ovr_record(oid) or {}
  return rec[O_REQUESTED] or '', rec[O_APPROVED] or '', rec[O_REASON] or '', rec
end

-- The override `o` in force on `iid` ends now: audited once (event override.expired or
-- override.revoked), its record marked, the hot field and its timer dropped.
local function ovr_end(iid, o, event, by, why)
  local requested, approved, granted_for, rec = ovr_names(o.oid)
  local nb = split(rec[O_LABEL] or iid, LS)
  audit(event, {'override', o.oid, 'budget', nb[1] or iid, 'split', nb[2] or '',
    'amount_usd', usd(o.extra), 'until_ms', I(o.until_ms), 'requested_by', requested,
    'approved_by', approved, 'grant_reason', granted_for, 'uses', I(o.uses), 'actor', by,
    'reason', why})
  W('HDEL', K_BUDGETS, iid .. '|o')
  W('ZREM', K_BIDX, 'o|' .. iid)
  if rec[O_STATE] then
    rec[O_STATE] = event == 'override.expired' and 'X' or 'R'
    rec[O_USES], rec[O_ENDED], rec[O_ENDED_BY], rec[O_END_REASON] = I(o.uses), I(NOW_MS), by, why
    W('HSET', K_OVERRIDES, o.oid, table.concat(rec, FS))
    W('ZADD', K_BIDX, math.ceil((NOW_MS + AUDIT_RETENTION_MS) / 1000), 'd|' .. o.oid)
  end
end

-- Housekeeping of timer "o|<iid>": the override in force there ends if its time has come.
local function ovr_timer(iid)
  local o = ovr_parse(redis.call('HGET', K_BUDGETS, iid .. '|o'))
  if not o then
    W('ZREM', K_BIDX, 'o|' .. iid) -- revoked, or unreadable: nothing to end
  elseif o.until_ms <= NOW_MS then
    ovr_end(iid, o, 'override.expired', '', 'expired')
  else
    redis.call('ZADD', K_BIDX, string.format('%.3f', o.until_ms / 1000), 'o|' .. iid)
  end
end
