-- ARGV: tag, node, grace_us -> {sessions dropped, ended}
-- A node that leaves is not dead: the sessions it alone held wait out their
-- grace period (a rolling restart must not end them).
local dropped = drop_node(ARGV[2], tonumber(ARGV[3]))
redis.call('ZREM', KEYS[1], ARGV[2])
return {dropped, ended}
