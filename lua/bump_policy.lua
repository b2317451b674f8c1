-- bump_policy.lua: store a whole policy document under the next global version.
--
-- KEYS[1] <ns>:policy (global, outside any project slot)
-- ARGV[1] policy document as JSON   ARGV[2] actor
-- Reply: the new version (integer). Versions only grow, so each project's copy can be written
-- "if newer" without a cross-slot transaction.

local t = redis.call('TIME')
local version = redis.call('HINCRBY', KEYS[1], 'v', 1)
redis.call('HSET', KEYS[1], 'doc', ARGV[1], 'actor', ARGV[2],
  'ts_ms', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
return version
