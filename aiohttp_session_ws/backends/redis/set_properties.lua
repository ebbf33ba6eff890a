-- ARGV: tag, session, n, then n pairs key, value to set, then keys to remove
--   -> 1, or 0 (nothing changed) when the session is not alive
local sid = ARGV[2]
if redis.call('EXISTS', T .. ':alive:' .. sid) == 0 then return 0 end
local pkey = T .. ':props:' .. sid
local last_set = 3 + 2 * tonumber(ARGV[3])
for i = 4, last_set, 2 do redis.call('HSET', pkey, ARGV[i], ARGV[i + 1]) end
for i = last_set + 1, #ARGV do redis.call('HDEL', pkey, ARGV[i]) end
return 1
