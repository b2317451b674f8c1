-- apply_policy.lua: store one project's policy if it is newer than the stored one; audited.
-- needs: common audit
--
-- KEYS[1] <ns>:{<project>}:policy   KEYS[2] <ns>:{<project>}:audit
-- KEYS[3] <ns>:{<project>}:audit:head (the audit stream's seq and chain: lib/audit.lua)
-- ARGV[1] project   ARGV[2] audit retention (integer ms)   ARGV[3] version (integer, increasing)
-- ARGV[4] project policy as JSON ("" = no policy: the project's requests are denied)
-- ARGV[5] actor   ARGV[6] number of zones n, then n pairs: zone, "<utc s>:<offset s>,..."
-- ARGV[7 + 2n] audit event: policy.applied, or policy.removed (the document no longer lists
--          the project: ARGV[4] is then its [defaults] part or "")
-- Reply: {"applied", version} or {"kept", stored version} when the stored one is as new or newer.

local function apply_policy(keys, argv)
  local version, retention, zones = arg_int(argv[3]), arg_int(argv[2]), arg_int(argv[6])
  if not (version and retention and retention > 0 and zones and zones >= 0 and argv[1] and argv[4]
    and argv[5] and keys[3]) then
    return {'badargs', 'apply'}
  end
  for i = 1, zones do
    if not (argv[5 + 2 * i] and argv[6 + 2 * i]) then return {'badargs', 'zone ' .. i} end
  end
  local event = argv[7 + 2 * zones]
  if event ~= 'policy.applied' and event ~= 'policy.removed' then return {'badargs', 'event'} end
  local current = int(redis.call('HGET', keys[1], 'v')) or 0
  if current >= version then return {'kept', current} end
  local t = redis.call('TIME')
  local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  audit_context(keys[1], keys[2], keys[3], argv[1], retention, now_ms)
  redis.call('DEL', keys[1])
  W('HSET', keys[1], 'v', version, 'doc', argv[4], 'actor', argv[5], 'ts_ms', now_ms)
  for i = 1, zones do
    redis.call('HSET', keys[1], 'tz:' .. argv[5 + 2 * i], argv[6 + 2 * i])
  end
  local reason = 'applied'
  if argv[4] == '' then reason = 'no-policy' elseif event == 'policy.removed' then reason = 'defaults' end
  audit(event, {'version', I(version), 'actor', argv[5], 'reason', reason})
  return {'applied', version}
end
