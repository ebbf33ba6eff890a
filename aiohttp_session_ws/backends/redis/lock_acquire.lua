-- ARGV: tag, node, name, session, scope, connection ('' for none), floor
--   -> {0}: the session is not alive; {1, session, sequence, scope,
--   connection}: the grant it holds (just now, or already); {2}: queued;
--   {3}: this node holds no live lease (what it takes would not go with it)
-- The weaker scope wins: a session-scoped holder asking with connection
-- scope becomes connection-scoped (on this node), and a queued entry of
-- connection scope stays so. This node is told if the holder loses it.
local node, name, sid = ARGV[2], ARGV[3], ARGV[4]
local scope, conn = ARGV[5], ARGV[6]
if not is_live(node) then return {3} end
if redis.call('EXISTS', T .. ':alive:' .. sid) == 0 then return {0} end
local h = lock_holder(name)
if not h then
  local sequence = lock_grant(name, node, sid, scope, conn, 0, tonumber(ARGV[7]))
  return {1, sid, num(sequence), scope, conn}
end
if h[1] == sid then
  redis.call('SADD', T .. ':locknodes:' .. name, node)
  if scope == '1' and h[3] ~= '1' then
    redis.call('HSET', T .. ':lock:' .. name,
      'scope', '1', 'connection', conn, 'node', node)
    bump(T .. ':node_lockrefs:' .. node, name, 1)
    h[3], h[4] = '1', conn
  end
  return {1, h[1], h[2], h[3], h[4]}
end
lock_enqueue(name, node, sid, scope, conn)
return {2}
