-- ARGV: tag, key -> the cluster's handle key
-- The first node to ask sets it; a node that knew it sets it again after
-- Redis lost it, so the handles stay the same.
local key = T .. ':handle_key'
redis.call('SET', key, ARGV[2], 'NX')
return redis.call('GET', key)
