-- ARGV: tag, node -> {other live node, {path, ...}, ...}
-- The request handler paths of every other live node.
local found = {}
for _, other in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], num(now), '+inf')) do
  if other ~= ARGV[2] then
    found[#found + 1] = other
    found[#found + 1] = redis.call('SMEMBERS', T .. ':paths:' .. other)
  end
end
return found
