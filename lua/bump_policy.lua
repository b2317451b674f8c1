-- bump_policy.lua: store the whole effective policy document under the next global version,
-- if the stored version is still the one the caller merged into (check-and-set).
--
-- KEYS[1] <ns>:policy (global, outside any project slot)
-- ARGV[1] policy document as JSON   ARGV[2] actor   ARGV[3] the version the caller read (0: none)
-- Reply: {"bumped", new version} or {"conflict", stored version} (nothing written: read again).
-- Versions only grow, so each project's copy can be written "if newer" without a cross-slot
-- transaction.

local function bump_policy(KEYS, ARGV)
  local expected = tonumber(ARGV[3])
  if not (ARGV[1] and ARGV[2] and expected) then return {'badargs', 'bump'} end
  local current = tonumber(redis.call('HGET', KEYS[1], 'v') or '0') or 0
  if current ~= expected then return {'conflict', current} end
  local t = redis.call('TIME')
  local version = current + 1
  redis.call('HSET', KEYS[1], 'v', version, 'doc', ARGV[1], 'actor', ARGV[2],
    'ts_ms', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
  return {'bumped', version}
end
