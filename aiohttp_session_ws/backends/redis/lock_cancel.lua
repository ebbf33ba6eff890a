-- ARGV: tag, node, name, session
--   -> {session, sequence, scope, connection} if the session holds the lock,
--   else {}
-- This node's entry of the session leaves the queue (if it is there).
local name, sid = ARGV[3], ARGV[4]
lock_dequeue(name, ARGV[2], sid)
local h = lock_holder(name)
if h and h[1] == sid then return {h[1], h[2], h[3], h[4]} end
return {}
