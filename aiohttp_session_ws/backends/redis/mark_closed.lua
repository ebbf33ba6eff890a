-- ARGV: tag, session, ago_us, remember_ms, node[, frame]
--   -> {now, at, {node, count, ...}, ended (0/1), {published node, ...}}
-- The close is remembered for the nodes whose presence comes late, the
-- session ends, and the frame (if any) goes to the other live holders.
local sid = ARGV[2]
local at = now - tonumber(ARGV[3])
local key = T .. ':closed:' .. sid
local previous = redis.call('GET', key)
if not previous or tonumber(previous) < at then
  redis.call('SET', key, num(at), 'PX', ARGV[4])
end
local live = live_nodes(sid)
local was_alive = 0
if end_session(sid) then was_alive = 1 end
local published = {}
if ARGV[6] then published = publish_to(live, 1, 2, ARGV[5], ARGV[6]) end
return {now, at, live, was_alive, published}
