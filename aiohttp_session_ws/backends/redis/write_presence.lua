-- ARGV: tag, node, lease_us, reset, grace_us,
--   then per session: session, count, handle, newest_us, want (1: list its
--   other holders, which the node does not know), addressed (the paths its
--   connections here handle when a request is addressed to the session:
--   '' no change, '=' then the whole set, '~' then changes, each '+path' or
--   '-path'; newline-separated)
--   -> {now, membership, {session, closed_at_us, ...}, started, ended,
--       {session, {other holder, ...}, ...}}
-- The last part lists the other holders of each session this node begins to
-- hold, of every session it writes in a rewrite, and of those it asks for.
-- reset is 0 for a change, else a full rewrite in batches: bit 1 marks its
-- first batch (it adds the node, and notes what Redis holds of it as stale),
-- bit 2 its last (what is still stale goes). A rewrite leaves the sessions
-- it writes again untouched: no start, no grace. A change to a node without
-- a live lease (reaped, Redis restarted empty, lease run out) writes nothing
-- and reports it.
local node = ARGV[2]
local reset = tonumber(ARGV[4])
local grace = tonumber(ARGV[5])
local nkey = T .. ':node:' .. node
local stale = T .. ':stale:' .. node
if reset % 2 == 0 then
  local absent = membership(node, grace)
  if absent ~= 0 then return {now, absent, {}, started, ended, {}} end
end
redis.call('ZADD', KEYS[1], num(now + tonumber(ARGV[3])), node)
if reset % 2 == 1 then
  redis.call('DEL', stale)
  for _, sid in ipairs(redis.call('HKEYS', nkey)) do
    redis.call('SADD', stale, sid)
  end
end
local closed, holders = {}, {}
for i = 6, #ARGV, 6 do
  local sid, count = ARGV[i], tonumber(ARGV[i + 1])
  redis.call('SREM', stale, sid)
  if count > 0 then
    local added = hold(node, sid, count, ARGV[i + 2], tonumber(ARGV[i + 3]))
    local spec = ARGV[i + 5]
    if spec ~= '' then
      local akey = T .. ':addr:' .. sid .. ':' .. node
      local kind, body = string.sub(spec, 1, 1), string.sub(spec, 2)
      if kind == '=' then redis.call('DEL', akey) end
      for item in string.gmatch(body, '[^\n]+') do
        if kind == '=' then
          redis.call('SADD', akey, item)
        elseif string.sub(item, 1, 1) == '+' then
          redis.call('SADD', akey, string.sub(item, 2))
        else
          redis.call('SREM', akey, string.sub(item, 2))
        end
      end
    end
    if added or reset > 0 or ARGV[i + 4] == '1' then
      holders[#holders + 1] = sid
      holders[#holders + 1] = other_holders(sid, node)
    end
    local at = redis.call('GET', T .. ':closed:' .. sid)
    if at then
      closed[#closed + 1] = sid
      closed[#closed + 1] = at
    end
  else
    release(node, sid, grace)
  end
end
if reset >= 2 then
  for _, sid in ipairs(redis.call('SMEMBERS', stale)) do release(node, sid, grace) end
  redis.call('DEL', stale)
end
return {now, 0, closed, started, ended, holders}
