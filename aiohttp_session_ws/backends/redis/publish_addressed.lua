-- ARGV: tag, handle, node, pick, frame, path... (most specific first)
--   -> {status, chosen node}: 0 sent, 1 no live session has the handle,
--   2 no other live node's connection of it handles a path, 3 the chosen
--   node does not listen.
-- Among the other live holders whose connections handle the most specific
-- path (the set T:addr:<session>:<node>), pick (in [0, 1)) chooses one, in
-- node id order.
local sid = redis.call('GET', T .. ':handle:' .. ARGV[2])
if not sid then return {1, false} end
local holders = {}
for _, node in ipairs(redis.call('HKEYS', T .. ':session:' .. sid)) do
  if node ~= ARGV[3] and is_live(node) then holders[#holders + 1] = node end
end
table.sort(holders)
for i = 6, #ARGV do
  local found = {}
  for _, node in ipairs(holders) do
    if redis.call('SISMEMBER', T .. ':addr:' .. sid .. ':' .. node, ARGV[i]) == 1 then
      found[#found + 1] = node
    end
  end
  if #found > 0 then
    local node = found[math.floor(tonumber(ARGV[4]) * #found) + 1]
    if redis.call('PUBLISH', T .. ':inbox:' .. node, ARGV[5]) > 0 then
      return {0, node}
    end
    return {3, node}
  end
end
return {2, false}
