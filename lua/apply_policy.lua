-- apply_policy.lua: store one project's policy if it is newer than the stored one; audited.
--
-- KEYS[1] <ns>:{<project>}:policy   KEYS[2] <ns>:{<project>}:audit
-- ARGV[1] project   ARGV[2] audit MAXLEN   ARGV[3] version (integer, increasing)
-- ARGV[4] project policy as JSON ("" = no policy: the project's requests are denied)
-- ARGV[5] actor   ARGV[6] number of zones n, then n pairs: zone, "<utc s>:<offset s>,..."
-- ARGV[7 + 2n] audit event: policy.applied, or policy.removed (the document no longer lists
--          the project: ARGV[4] is then its [defaults] part or "")
-- Reply: {"applied", version} or {"kept", stored version} when the stored one is as new or newer.

local function apply_policy(KEYS, ARGV)
  local version, maxlen, zones = tonumber(ARGV[3]), tonumber(ARGV[2]), tonumber(ARGV[6])
  if not (version and maxlen and zones and ARGV[4] and ARGV[5]) then return {'badargs', 'apply'} end
  for i = 1, zones do
    if not (ARGV[5 + 2 * i] and ARGV[6 + 2 * i]) then return {'badargs', 'zone ' .. i} end
  end
  local event = ARGV[7 + 2 * zones]
  if event ~= 'policy.applied' and event ~= 'policy.removed' then return {'badargs', 'event'} end
  local current = tonumber(redis.call('HGET', KEYS[1], 'v') or '0') or 0
  if current >= version then return {'kept', current} end
  local t = redis.call('TIME')
  local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'v', version, 'doc', ARGV[4], 'actor', ARGV[5], 'ts_ms', now_ms)
  for i = 1, zones do
    redis.call('HSET', KEYS[1], 'tz:' .. ARGV[5 + 2 * i], ARGV[6 + 2 * i])
  end
  local reason = 'applied'
  if ARGV[4] == '' then reason = 'no-policy' elseif event == 'policy.removed' then reason = 'defaults' end
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', maxlen, '*', 'event', event,
    'project', ARGV[1], 'ts_ms', now_ms, 'version', version, 'actor', ARGV[5], 'reason', reason)
  return {'applied', version}
end
