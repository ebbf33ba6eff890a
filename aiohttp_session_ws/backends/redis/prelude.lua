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

local function is_live(node)
  local deadline = redis.call('ZSCORE', KEYS[1], node)
  return deadline and tonumber(deadline) >= now
end

-- session locks (lock_*.lua). A lock is T:lock:<name> (hash: session,
-- sequence, scope, connection, node: the node that took it, or that weakened
-- it to connection scope) while held; its waiters are T:lockq:<name> (list of
-- 'node\tsession', first come first served) with T:lockw:<name> (hash: entry
-- -> 'scope\tconnection'); T:locknodes:<name> (set) the nodes to tell if the
-- holder loses it. T:lockrefs:<session> and T:node_lockrefs:<node> (hashes:
-- name -> count) index what an end or a drop must visit: the session's
-- entries in the queue of name, plus 1 if it holds name; the node's entries,
-- plus 1 if a connection-scoped holder is on that node. T:lock_clock
-- (string) is the last sequence issued, of any name.
local function bump(key, name, by)
  if redis.call('HINCRBY', key, name, by) <= 0 then redis.call('HDEL', key, name) end
end

-- 'node\tsession' -> node, session (a node id has no tab)
local function split_entry(entry)
  local tab = string.find(entry, '\t', 1, true)
  return string.sub(entry, 1, tab - 1), string.sub(entry, tab + 1)
end

-- a node-bus frame (base.node_frame) of a lock; the sequence is written
-- out by hand: cjson keeps 14 digits only
local function lock_frame(kind, name, sequence, sid, scope, conn)
  local body = '"name":' .. cjson.encode(name) .. ',"sequence":' .. num(sequence)
    .. ',"session":' .. cjson.encode(sid)
  if scope then
    body = body .. ',"scope":' .. scope .. ',"connection":' .. cjson.encode(conn)
  end
  return '{"kind":"' .. kind .. '","from":"","call":0,"body":{' .. body .. '}}'
end

-- the next sequence of a lock whose previous one was prev (0: none known)
local function lock_sequence(prev, floor)
  local clock = tonumber(redis.call('GET', T .. ':lock_clock') or '0')
  local sequence = math.max(now, clock + 1, floor + 1, prev + 1)
  redis.call('SET', T .. ':lock_clock', num(sequence))
  return sequence
end

-- grant name to node's entry of sid; return the sequence
local function lock_grant(name, node, sid, scope, conn, prev, floor)
  local sequence = lock_sequence(prev, floor)
  redis.call('HSET', T .. ':lock:' .. name, 'session', sid,
    'sequence', num(sequence), 'scope', scope, 'connection', conn, 'node', node)
  bump(T .. ':lockrefs:' .. sid, name, 1)
  if tonumber(scope) == 1 then bump(T .. ':node_lockrefs:' .. node, name, 1) end
  local told = T .. ':locknodes:' .. name
  redis.call('DEL', told)
  redis.call('SADD', told, node)
  return sequence
end

-- the holder of name ({session, sequence, scope, connection, node}), or nil
local function lock_holder(name)
  local h = redis.call('HMGET', T .. ':lock:' .. name,
    'session', 'sequence', 'scope', 'connection', 'node')
  if not h[1] then return nil end
  return h
end

-- add node's entry of sid to the queue of name (or keep its place, with the
-- weaker scope)
local function lock_enqueue(name, node, sid, scope, conn)
  local entry = node .. '\t' .. sid
  local wkey = T .. ':lockw:' .. name
  local known = redis.call('HGET', wkey, entry)
  if known then
    if string.sub(known, 1, 1) ~= '1' then
      redis.call('HSET', wkey, entry, scope .. '\t' .. conn)
    end
    return
  end
  redis.call('RPUSH', T .. ':lockq:' .. name, entry)
  redis.call('HSET', wkey, entry, scope .. '\t' .. conn)
  bump(T .. ':lockrefs:' .. sid, name, 1)
  bump(T .. ':node_lockrefs:' .. node, name, 1)
end

-- forget a queue entry's side of the indexes; return its 'scope\tconnection'
local function lock_unqueued(name, entry)
  local wkey = T .. ':lockw:' .. name
  local wanted = redis.call('HGET', wkey, entry)
  redis.call('HDEL', wkey, entry)
  local node, sid = split_entry(entry)
  bump(T .. ':lockrefs:' .. sid, name, -1)
  bump(T .. ':node_lockrefs:' .. node, name, -1)
  return wanted
end

-- withdraw node's entry of sid from the queue of name; true if it was there
local function lock_dequeue(name, node, sid)
  local entry = node .. '\t' .. sid
  if redis.call('LREM', T .. ':lockq:' .. name, 1, entry) == 0 then return false end
  lock_unqueued(name, entry)
  return true
end

-- withdraw every entry of the queue of name whose node (part 1) or session
-- (part 2) is who
local function lock_dequeue_all(name, part, who)
  local qkey = T .. ':lockq:' .. name
  for _, entry in ipairs(redis.call('LRANGE', qkey, 0, -1)) do
    local node, sid = split_entry(entry)
    if (part == 1 and node == who) or (part == 2 and sid == who) then
      redis.call('LREM', qkey, 1, entry)
      lock_unqueued(name, entry)
    end
  end
end

-- tell the nodes that asked for name (but skip) that holder h lost it
local function lock_tell_lost(name, h, skip)
  local frame = lock_frame('lock_lost', name, tonumber(h[2]), h[1])
  for _, node in ipairs(redis.call('SMEMBERS', T .. ':locknodes:' .. name)) do
    if node ~= skip then redis.call('PUBLISH', T .. ':inbox:' .. node, frame) end
  end
end

-- holder h lets go of name: the first waiter of a live node gets it (its node
-- is told), the entries of dead nodes before it go
local function lock_hand_on(name, h)
  redis.call('DEL', T .. ':lock:' .. name, T .. ':locknodes:' .. name)
  bump(T .. ':lockrefs:' .. h[1], name, -1)
  if tonumber(h[3]) == 1 then bump(T .. ':node_lockrefs:' .. h[5], name, -1) end
  local qkey = T .. ':lockq:' .. name
  while true do
    local entry = redis.call('LPOP', qkey)
    if not entry then return end
    local wanted = lock_unqueued(name, entry)
    local node, sid = split_entry(entry)
    if is_live(node) and redis.call('EXISTS', T .. ':alive:' .. sid) == 1 then
      local tab = string.find(wanted, '\t', 1, true)
      local scope = string.sub(wanted, 1, tab - 1)
      local conn = string.sub(wanted, tab + 1)
      local sequence = lock_grant(name, node, sid, scope, conn, tonumber(h[2]), 0)
      redis.call('PUBLISH', T .. ':inbox:' .. node,
        lock_frame('lock_granted', name, sequence, sid, scope, conn))
      return
    end
  end
end

-- a session ended: its entries go, its locks go to the next waiters
local function session_locks_end(sid)
  local rkey = T .. ':lockrefs:' .. sid
  local names = redis.call('HKEYS', rkey)
  for _, name in ipairs(names) do
    lock_dequeue_all(name, 2, sid)
    local h = lock_holder(name)
    if h and h[1] == sid then
      lock_tell_lost(name, h, nil)
      lock_hand_on(name, h)
    end
  end
  if #names > 0 then redis.call('DEL', rkey) end
end

-- a node left: its entries go, its connection-scoped locks go to the next
-- waiters (the other nodes that asked are told)
local function node_locks_drop(node)
  local rkey = T .. ':node_lockrefs:' .. node
  local names = redis.call('HKEYS', rkey)
  for _, name in ipairs(names) do
    lock_dequeue_all(name, 1, node)
    local h = lock_holder(name)
    if h and tonumber(h[3]) == 1 and h[5] == node then
      lock_tell_lost(name, h, node)
      lock_hand_on(name, h)
    end
  end
  if #names > 0 then redis.call('DEL', rkey) end
end

-- end a session: its alive marker, handle, properties, grace and locks go
-- (see session_locks_end); true if it was alive
local function end_session(sid)
  local akey = T .. ':alive:' .. sid
  local handle = redis.call('GET', akey)
  redis.call('ZREM', T .. ':grace', sid)
  if not handle then return false end
  redis.call('DEL', akey, T .. ':handle:' .. handle, T .. ':props:' .. sid)
  session_locks_end(sid)
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
  redis.call('DEL', T .. ':addr:' .. sid .. ':' .. node)
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

-- a node leaves (or is reaped): its locks' part (see node_locks_drop), its
-- presence and handlers go, and every live node hears that it is gone (work
-- waiting on it fails at once)
local function drop_node(node, grace)
  node_locks_drop(node) -- first: no hand-on below may pick its entries
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
