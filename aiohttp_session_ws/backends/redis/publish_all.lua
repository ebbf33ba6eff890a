-- ARGV: tag, node, frame -> {published node, ...}
-- The frame goes to every other live node.
local nodes = redis.call('ZRANGEBYSCORE', KEYS[1], num(now), '+inf')
return publish_to(nodes, 1, 1, ARGV[2], ARGV[3])
