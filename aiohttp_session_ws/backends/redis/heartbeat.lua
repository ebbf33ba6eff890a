-- ARGV: tag, node, lease_us, grace_us
--   -> {now, membership, {dead node, sessions, ...}, ended}
-- An absent node is not added back: only a full rewrite does that, so a
-- repeated call reports the absence again. Dead nodes' sessions that no live
-- node holds end at once; grace periods that ran out end their sessions (a
-- few at a time, so a beat stays short).
local absent = membership(ARGV[2], tonumber(ARGV[4]))
if absent == 0 then
  redis.call('ZADD', KEYS[1], num(now + tonumber(ARGV[3])), ARGV[2])
end
local reaped = {}
for _, dead in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. num(now))) do
  reaped[#reaped + 1] = dead
  reaped[#reaped + 1] = drop_node(dead, false)
  redis.call('ZREM', KEYS[1], dead)
end
local due = redis.call(
  'ZRANGEBYSCORE', T .. ':grace', '-inf', num(now), 'LIMIT', 0, 1000)
for _, sid in ipairs(due) do
  if end_session(sid) then ended[#ended + 1] = sid end
end
return {now, absent, reaped, ended}
