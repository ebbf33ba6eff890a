-- ARGV: tag, node, path... -> {membership, added, removed}
-- The node's request handler paths become exactly the given ones; every
-- other live node hears of each path added ('path+') or removed ('path-'),
-- so that each keeps the cluster's table without asking Redis. A node
-- without a live lease writes nothing (its presence rewrite comes first).
local node = ARGV[2]
local deadline = redis.call('ZSCORE', KEYS[1], node)
if not deadline or tonumber(deadline) < now then return {1, 0, 0} end
local key = T .. ':paths:' .. node
local wanted = {}
for i = 3, #ARGV do wanted[ARGV[i]] = true end
local added, removed = 0, 0
for _, path in ipairs(redis.call('SMEMBERS', key)) do
  if wanted[path] then
    wanted[path] = nil
  else
    redis.call('SREM', key, path)
    tell_nodes('\0path-:' .. node .. ':' .. path, node)
    removed = removed + 1
  end
end
for path in pairs(wanted) do
  redis.call('SADD', key, path)
  tell_nodes('\0path+:' .. node .. ':' .. path, node)
  added = added + 1
end
return {0, added, removed}
