-- sweep.lua: expire overdue holds now (scripts also do this lazily, a batch per call).
-- needs: common audit period rate overrides instances state upkeep
--
-- KEYS: the common twelve (lib/common.lua).
-- ARGV[1..5]: the common head (ARGV[5] is the batch for this call).
-- Reply: {"swept", holds expired, holds still overdue after this batch}

local function sweep(keys, argv)
  begin(keys, argv)
  if BAD_HEAD then return {'badargs', 'head'} end
  if not K_USAGE then return {'clock', NOW_S} end
  local expired = housekeeping(SWEEP_BATCH)
  return {'swept', expired, redis.call('ZCOUNT', K_LEASES, '-inf', NOW_MS)}
end
