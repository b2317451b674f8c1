-- lib/audit.lua: the audit stream: a gapless seq, a hash chain, retention by time, and floods
-- of identical decisions aggregated into one entry with a count.
--
-- Every entry is the field/value pairs
--   event, project, ts_ms, seq, schema, <the event's fields>..., chain
-- seq counts the stream's entries from 1, without gaps. chain is
--   sha1hex(<previous entry's chain> .. "\n" .. for every field and value before chain, in
--           order: <byte length> .. ":" .. <text> .. ",")
-- with 40 zeros as the chain before seq 1. Where the server has no redis.sha1hex (the embedded
-- memory:// server) chain is "unavailable". The last seq and chain are kept in the head hash
-- (KEYS[11]) and written with the entry, in the same script; a head that is missing or
-- unreadable is rebuilt from the stream's last entry.
--
-- Retention is by time: every XADD trims with MINID ~ <now - retention>, so a flood can never
-- push recent history out (MAXLEN could).
--
-- Floods: an aggregatable event (a denial, a would-be denial in shadow mode, an unknown price)
-- is written at once; the identical ones (same event and identity fields: budget or limit,
-- split, model, tags, reason...) that follow within AGG_WINDOW_MS are only counted in a window
-- field of the head, "w:<event>\31<identity pairs joined by \30>" =
-- "<window end ms>:<count>:<first counted ms>:<last counted ms>\31<last varying pairs, \30>".
-- When the window has ended, the first script that writes an entry or does housekeeping
-- writes one entry for the counted ones: the last one's fields and count, first_ts_ms,
-- last_ts_ms. "wdue" (the earliest window end) and "wn" (open windows) are head fields too; at
-- most AGG_MAX windows are open, beyond that every decision gets its own entry.

local AUDIT_SCHEMA = '1'
local GENESIS = '0000000000000000000000000000000000000000'
local AGG_WINDOW_MS = 1000
local AGG_MAX = 16
local HEAD_SEQ, HEAD_CHAIN, HEAD_WN, HEAD_WDUE, HEAD_LOADED -- per call, see audit_context()

local function chain_ok(c)
  return c == 'unavailable' or (type(c) == 'string' and #c == 40 and not string.find(c, '[^0-9a-f]'))
end

-- Set the audit context of one call (begin() does it for the project scripts).
local function audit_context(k_policy, k_audit, k_head, project, retention_ms, now_ms)
  K_POLICY, K_AUDIT, K_AHEAD, PROJECT = k_policy, k_audit, k_head, project
  AUDIT_RETENTION_MS, NOW_MS = retention_ms, now_ms
  HEAD_LOADED = false
end

-- The stream's last seq and chain, from the head, or rebuilt from the last entry.
local function head_recover()
  local last = redis.call('XREVRANGE', K_AUDIT, '+', '-', 'COUNT', 1)[1]
  local seq, chain = 0, GENESIS
  if last then
    local f = last[2]
    local s, c
    for i = 1, #f - 1, 2 do
      if f[i] == 'seq' then s = int(f[i + 1]) elseif f[i] == 'chain' then c = f[i + 1] end
    end
    if s and s >= 0 and chain_ok(c) then seq, chain = s, c end
  end
  return seq, chain
end

local audit_flush

local function head_load()
  if HEAD_LOADED then return end
  HEAD_LOADED = true
  local h = redis.call('HMGET', K_AHEAD, 'seq', 'chain', 'wn', 'wdue')
  local seq = int(h[1])
  if seq and seq >= 0 and chain_ok(h[2]) then
    HEAD_SEQ, HEAD_CHAIN = seq, h[2]
  else
    HEAD_SEQ, HEAD_CHAIN = head_recover()
  end
  HEAD_WN, HEAD_WDUE = int(h[3]), int(h[4])
  if h[3] == nil and h[4] == nil then
    HEAD_WN = 0 -- no window open
  elseif not (HEAD_WN and HEAD_WN >= 0 and HEAD_WDUE) then
    HEAD_WN, HEAD_WDUE = nil, 0 -- unreadable: a flush counts the windows again
  end
  if HEAD_WDUE and NOW_MS >= HEAD_WDUE then audit_flush() end
end

-- Append one entry (fields: name/value pairs, numbers written as integers).
local function append(event, fields)
  local seq = HEAD_SEQ + 1
  local flat = {'event', event, 'project', PROJECT, 'ts_ms', I(NOW_MS), 'seq', I(seq),
    'schema', AUDIT_SCHEMA}
  for i = 1, #fields do
    local v = fields[i]
    if type(v) == 'number' then v = I(v) elseif type(v) ~= 'string' then v = '' end
    flat[#flat + 1] = v
  end
  local chain = 'unavailable'
  if redis.sha1hex then
    local parts = {HEAD_CHAIN, '\n'}
    for i = 1, #flat do
      local s = flat[i]
      parts[#parts + 1] = #s .. ':' .. s .. ','
    end
    chain = redis.sha1hex(table.concat(parts))
  end
  flat[#flat + 1], flat[#flat + 2] = 'chain', chain
  -- A retention longer than the clock's age trims nothing (a negative id is an error).
  local minid = math.max(0, NOW_MS - AUDIT_RETENTION_MS)
  redis.call('XADD', K_AUDIT, 'MINID', '~', I(minid), '*', unpack(flat))
  HEAD_SEQ, HEAD_CHAIN = seq, chain
  W('HSET', K_AHEAD, 'seq', seq, 'chain', chain)
end

-- Make the scripts' housekeeping come by at `ms` at the latest (never later than it was).
local function want_due(ms)
  local p = redis.call('HMGET', K_POLICY, 'v', 'due')
  if p[1] and (not int(p[2]) or ms < int(p[2])) then W('HSET', K_POLICY, 'due', ms) end
end

local function window_parse(raw)
  if type(raw) ~= 'string' or #raw > 16384 then return nil end
  local u, n, first, last, varying = string.match(raw, '^(%d+):(%d+):(%d+):(%d+)\31(.*)$')
  if not u or #u > 16 or #n > 12 or #first > 16 or #last > 16 then return nil end
  return {until_ms = tonumber(u), count = tonumber(n), first = tonumber(first),
    last = tonumber(last), varying = varying}
end

-- Write the entries of every ended window; count the open ones and find the next end.
audit_flush = function()
  local flat = redis.call('HGETALL', K_AHEAD)
  local ended, open, wdue = {}, 0, nil
  for i = 1, #flat - 1, 2 do
    local field = flat[i]
    if string.sub(field, 1, 2) == 'w:' then
      local w = window_parse(flat[i + 1])
      local event, identity = string.match(field, '^w:([^\31]+)\31(.*)$')
      if not (w and event) then
        W('HDEL', K_AHEAD, field)
      elseif w.until_ms <= NOW_MS then
        w.field, w.event, w.identity = field, event, identity
        ended[#ended + 1] = w
      else
        open = open + 1
        if not wdue or w.until_ms < wdue then wdue = w.until_ms end
      end
    end
  end
  table.sort(ended, function(a, b)
    if a.last ~= b.last then return a.last < b.last end
    return a.field < b.field
  end)
  for _, w in ipairs(ended) do
    W('HDEL', K_AHEAD, w.field)
    if w.count > 0 then
      local fields = split(w.identity, LS)
      for _, v in ipairs(split(w.varying, LS)) do fields[#fields + 1] = v end
      if #fields % 2 == 0 then
        fields[#fields + 1], fields[#fields + 2] = 'count', I(w.count)
        fields[#fields + 1], fields[#fields + 2] = 'first_ts_ms', I(w.first)
        fields[#fields + 1], fields[#fields + 2] = 'last_ts_ms', I(w.last)
        append(w.event, fields)
      end
    end
  end
  HEAD_WN, HEAD_WDUE = open, wdue
  if wdue then W('HSET', K_AHEAD, 'wn', open, 'wdue', wdue) else W('HDEL', K_AHEAD, 'wn', 'wdue') end
end

-- One audit entry.
local function audit(event, fields)
  head_load()
  append(event, fields)
end

-- A decision that may come in floods: `identity` (name/value pairs) says which decisions are
-- the same, `varying` (name/value pairs: rid, amounts) what differs between them.
local function audit_flood(event, identity, varying)
  head_load()
  local field = 'w:' .. event .. FS .. table.concat(identity, LS)
  local vtext = table.concat(varying, LS)
  local w = #field <= 8192 and window_parse(redis.call('HGET', K_AHEAD, field))
  if w and NOW_MS >= w.until_ms then -- ended but not written yet (its "wdue" was lost)
    audit_flush()
    w = nil
  end
  if w then
    local first = w.count > 0 and w.first or NOW_MS
    W('HSET', K_AHEAD, field,
      string.format('%d:%d:%d:%d', w.until_ms, w.count + 1, first, NOW_MS) .. FS .. vtext)
    return
  end
  local fields = {}
  for _, v in ipairs(identity) do fields[#fields + 1] = v end
  for _, v in ipairs(varying) do fields[#fields + 1] = v end
  fields[#fields + 1], fields[#fields + 2] = 'count', '1'
  append(event, fields)
  if #field <= 8192 and HEAD_WN and HEAD_WN < AGG_MAX then
    local until_ms = NOW_MS + AGG_WINDOW_MS
    W('HSET', K_AHEAD, field, string.format('%d:0:0:0', until_ms) .. FS)
    if not w then HEAD_WN = HEAD_WN + 1 end
    if not HEAD_WDUE or until_ms < HEAD_WDUE then HEAD_WDUE = until_ms end
    W('HSET', K_AHEAD, 'wn', HEAD_WN, 'wdue', HEAD_WDUE)
    want_due(HEAD_WDUE)
  end
end

-- Housekeeping: write the windows that have ended. Returns when the next one ends (or nil).
local function audit_upkeep()
  head_load()
  return HEAD_WDUE
end
