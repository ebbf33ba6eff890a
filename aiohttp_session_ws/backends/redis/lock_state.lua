-- ARGV: tag, name
--   -> {{queued session, ...}} when free, else {{queued session, ...},
--   session, sequence, scope, connection}; the queue first first (a session
--   waiting on two nodes is there twice)
local name = ARGV[2]
local queue = {}
for _, entry in ipairs(redis.call('LRANGE', T .. ':lockq:' .. name, 0, -1)) do
  local _, sid = split_entry(entry)
  queue[#queue + 1] = sid
end
local h = lock_holder(name)
if not h then return {queue} end
return {queue, h[1], h[2], h[3], h[4]}
