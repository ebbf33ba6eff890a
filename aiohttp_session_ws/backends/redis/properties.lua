-- ARGV: tag, session -> {1, {key, value, ...}}, or {0, {}} when not alive
local sid = ARGV[2]
if redis.call('EXISTS', T .. ':alive:' .. sid) == 0 then return {0, {}} end
return {1, redis.call('HGETALL', T .. ':props:' .. sid)}
