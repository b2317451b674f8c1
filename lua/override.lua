-- override.lua: grant or revoke an approved, expiring raise of one budget instance's cap.
-- needs: common audit period rate state
--
-- KEYS: the common eleven (lib/common.lua).
-- ARGV[1..5]: the common head.
--   ARGV[6]  budget instance id     ARGV[7] "budget\30split value"
--   ARGV[8]  "grant" or "revoke"
--   ARGV[9]  extra cap (nUSD; grant)   ARGV[10] lifetime (integer ms; grant)
--   ARGV[11] actor (who approved it)   ARGV[12] reason
-- A grant replaces any override of the instance. While it lasts, reserves may use
-- cap + extra; a reserve that fits only thanks to it is audited override.used.
-- Reply: {"granted", until ms} | {"revoked", 1 (there was one) or 0} | {"badargs", what}

local function override(keys, argv)
  begin(keys, argv)
  if BAD_HEAD then return {'badargs', 'head'} end
  local iid, label, mode, actor, reason = ARGV[6], ARGV[7], ARGV[8], ARGV[11], ARGV[12]
  local extra, lifetime_ms = int(ARGV[9]), int(ARGV[10])
  if not (iid and label and actor and reason and extra and extra >= 0 and lifetime_ms
    and (mode == 'grant' or mode == 'revoke')) then
    return {'badargs', 'override'}
  end
  local nb = split(label, LS)
  if mode == 'grant' then
    local until_ms = NOW_MS + lifetime_ms
    local fields = {iid .. '|o', string.format('%d:%d', extra, until_ms)}
    if not redis.call('HGET', K_BUDGETS, iid .. '|c') then -- never reserved: make it listed
      fields[3], fields[4] = iid .. '|c', table.concat({0, '', '', label}, FS)
    end
    W('HSET', K_BUDGETS, unpack(fields))
    audit('override.granted', {'budget', nb[1], 'split', nb[2] or '', 'amount_usd', usd(extra),
      'until_ms', until_ms, 'actor', actor, 'reason', reason})
    return {'granted', until_ms}
  end
  local had = W('HDEL', K_BUDGETS, iid .. '|o')
  audit('override.revoked', {'budget', nb[1], 'split', nb[2] or '', 'actor', actor,
    'reason', reason})
  return {'revoked', had > 0 and 1 or 0}
end
