-- ARGV: tag, name, session, sequence, node -> 1 if the session held the lock
-- with that sequence (the next waiter of a live node has it now), else 0
-- The other nodes that asked for it (other tabs of the session) are told it
-- is gone: their equal locks are no longer held.
local name = ARGV[2]
local h = lock_holder(name)
if not h or h[1] ~= ARGV[3] or tonumber(h[2]) ~= tonumber(ARGV[4]) then
  return 0
end
lock_tell_lost(name, h, ARGV[5])
lock_hand_on(name, h)
return 1
