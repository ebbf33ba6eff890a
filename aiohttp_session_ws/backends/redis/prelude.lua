-- The shared part of every script: prepended to each one.
--
-- KEYS[1] is the nodes sorted set (so a cluster client routes the script to
-- the slot of the tag), ARGV[1] the tag; every other key shares that tag.
-- Times are Redis TIME in microseconds.
local T = ARGV[1]
local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local function num(x) return string.format('%.0f', x) end
local now = now_us()

-- the session starts and ends this call decided, for the node that made it
local started, ended = {}, {}

-- end a session: its alive marker, handle, properties and grace go; true if
-- it was alive
local function end_session(sid)
  local akey = T .. ':alive:' .. sid
  local handle = redis.call('GET', akey)
  redis.call('ZREM', T .. ':grace', sid)
  if not handle then return false end
  redis.call('DEL', akey, T .. ':handle:' .. handle, T .. ':props:' .. sid)
  return true
end

-- the presence of sid went from held to empty: a live session waits out its
-- grace period (a reload), or ends at once when grace is false or zero (its
-- last holder died)
local function presence_gone(sid, grace)
  if redis.call('EXISTS', T .. ':alive:' .. sid) == 0 then return end
  if grace and grace > 0 then
    redis.call('ZADD', T .. ':grace', num(now + grace), sid)
  else
    end_session(sid)
    ended[#ended + 1] = sid
  end
end

-- the presence of sid went from empty to held: a session in its grace period
-- resumes; one neither alive nor in grace starts, unless every connection of
-- the write predates a close-all of it (newest: the newest one's open time)
local function presence_came(sid, handle, newest)
  if redis.call('ZREM', T .. ':grace', sid) == 1 then return end
  local akey = T .. ':alive:' .. sid
  if redis.call('EXISTS', akey) == 1 then return end
  local closed_at = redis.call('GET', T .. ':closed:' .. sid)
  if closed_at and tonumber(closed_at) >= newest then return end
  redis.call('SET', akey, handle)
  redis.call('SET', T .. ':handle:' .. handle, sid)
  started[#started + 1] = sid
end

-- tell the other nodes holding sid that node now holds it ('hold') or no
-- longer ('drop'): each keeps the other holders of its sessions, so that a
-- push to a session held by no other node never needs Redis
local function tell_holders(sid, node, what)
  local note = '\0' .. what .. ':' .. node .. ':' .. sid
  for _, other in ipairs(redis.call('HKEYS', T .. ':session:' .. sid)) do
    if other ~= node then redis.call('PUBLISH', T .. ':inbox:' .. other, note) end
  end
end

-- the nodes other than node that hold sid
local function other_holders(sid, node)
  local others = {}
  for _, other in ipairs(redis.call('HKEYS', T .. ':session:' .. sid)) do
    if other ~= node then others[#others + 1] = other end
  end
  return others
end

-- node holds count > 0 connections of sid; true if it did not before
local function hold(node, sid, count, handle, newest)
  local skey = T .. ':session:' .. sid
  local was_empty = redis.call('EXISTS', skey) == 0
  local added = redis.call('HSET', skey, node, count) == 1
  redis.call('HSET', T .. ':node:' .. node, sid, count)
  redis.call('SADD', T .. ':sessions', sid)
  if was_empty then presence_came(sid, handle, newest) end
  if added then tell_holders(sid, node, 'hold') end
  return added
end

-- node holds no connection of sid any more (see presence_gone for grace)
local function release(node, sid, grace)
  local skey = T .. ':session:' .. sid
  redis.call('HDEL', T .. ':node:' .. node, sid)
  redis.call('HDEL', T .. ':addr:' .. sid, node)
  local held = redis.call('HDEL', skey, node) == 1
  if redis.call('EXISTS', skey) == 0 then
    redis.call('SREM', T .. ':sessions', sid)
    if held then presence_gone(sid, grace) end
  elseif held then
    tell_holders(sid, node, 'drop')
  end
end

-- publish note to the inbox of every live node but skip
local function tell_nodes(note, skip)
  for _, other in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], num(now), '+inf')) do
    if other ~= skip then redis.call('PUBLISH', T .. ':inbox:' .. other, note) end
  end
end

-- a node leaves (or is reaped): its presence and handlers go, and every
-- live node hears that it is gone (work waiting on it fails at once)
local function drop_node(node, grace)
  local nkey = T .. ':node:' .. node
  local sids = redis.call('HKEYS', nkey)
  for _, sid in ipairs(sids) do release(node, sid, grace) end
  redis.call('DEL', nkey, T .. ':stale:' .. node, T .. ':paths:' .. node)
  tell_nodes('\0gone:' .. node, node)
  return #sids
end

-- 0: the node holds a live lease; 1: it has none (never joined, reaped,
-- Redis restarted empty); 2: its lease ran out and nobody reaped it yet. A
-- node whose lease ran out was skipped by close-alls meanwhile, so it is
-- dropped like a reaped one, and rejoins with a full rewrite; its sessions
-- wait out their grace period (it was stalled, not dead).
local function membership(node, grace)
  local deadline = redis.call('ZSCORE', KEYS[1], node)
  if not deadline then return 1 end
  if tonumber(deadline) >= now then return 0 end
  drop_node(node, grace)
  redis.call('ZREM', KEYS[1], node)
  return 2
end

local function is_live(node)
  local deadline = redis.call('ZSCORE', KEYS[1], node)
  return deadline and tonumber(deadline) >= now
end

-- {node, count, ...} of the live nodes holding sid
local function live_nodes(sid)
  local counts = redis.call('HGETALL', T .. ':session:' .. sid)
  local live = {}
  for i = 1, #counts, 2 do
    if is_live(counts[i]) then
      live[#live + 1] = counts[i]
      live[#live + 1] = counts[i + 1]
    end
  end
  return live
end

-- publish frame to the inbox of each node of nodes[first], nodes[first +
-- step]... but skip; return those with a subscriber
local function publish_to(nodes, first, step, skip, frame)
  local sent = {}
  for i = first, #nodes, step do
    local node = nodes[i]
    if node ~= skip
        and redis.call('PUBLISH', T .. ':inbox:' .. node, frame) > 0 then
      sent[#sent + 1] = node
    end
  end
  return sent
end
