-- ARGV: tag, node, 'reset', path... | tag, node, 'delta', ('+' or '-')path...
--   -> {membership, added, removed}
-- 'reset': the node's request handler paths become exactly the given ones
-- (after a resync); 'delta': the given paths are added or removed (every
-- other write, so that a registration costs its own path, not the node's
-- whole set). Every other live node hears of each path added ('path+') or
-- removed ('path-'), so that each keeps the cluster's table without asking
-- Redis. A node without a live lease writes nothing (its presence rewrite
-- comes first).
local node = ARGV[2]
local deadline = redis.call('ZSCORE', KEYS[1], node)
if not deadline or tonumber(deadline) < now then return {1, 0, 0} end
local key = T .. ':paths:' .. node
local added, removed = 0, 0
local function add(path)
  if redis.call('SADD', key, path) == 1 then
    tell_nodes('\0path+:' .. node .. ':' .. path, node)
    added = added + 1
  end
end
local function remove(path)
  if redis.call('SREM', key, path) == 1 then
    tell_nodes('\0path-:' .. node .. ':' .. path, node)
    removed = removed + 1
  end
end
if ARGV[3] == 'reset' then
  local wanted = {}
  for i = 4, #ARGV do wanted[ARGV[i]] = true end
  for _, path in ipairs(redis.call('SMEMBERS', key)) do
    if not wanted[path] then remove(path) end
  end
  for i = 4, #ARGV do add(ARGV[i]) end
else
  for i = 4, #ARGV do
    local change, path = string.sub(ARGV[i], 1, 1), string.sub(ARGV[i], 2)
    if change == '+' then add(path) else remove(path) end
  end
end
return {0, added, removed}
