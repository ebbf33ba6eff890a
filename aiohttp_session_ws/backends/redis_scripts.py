"""The Lua scripts of the Redis backend: each change to shared state is atomic.

Every script gets the nodes sorted set as ``KEYS[1]`` (so a cluster client
routes it to the right slot) and the key tag as ``ARGV[1]``; the other keys
share that tag, hence that slot. Times are Redis ``TIME`` in microseconds.

Keys, with ``T`` the tag (``{prefix}``):
``T:nodes`` (zset: node -> lease deadline),
``T:node:<node>`` (hash: session -> this node's connection count),
``T:session:<session>`` (hash: node -> count), ``T:sessions`` (set),
``T:closed:<session>`` (string: time of the last close-all; expires).
"""

from __future__ import annotations

_PRELUDE = """
local T = ARGV[1]
local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local function num(x) return string.format('%.0f', x) end
local function set_count(node, sid, count)
  local skey = T .. ':session:' .. sid
  if count > 0 then
    redis.call('HSET', skey, node, count)
    redis.call('HSET', T .. ':node:' .. node, sid, count)
    redis.call('SADD', T .. ':sessions', sid)
  else
    redis.call('HDEL', T .. ':node:' .. node, sid)
    redis.call('HDEL', skey, node)
    if redis.call('EXISTS', skey) == 0 then
      redis.call('SREM', T .. ':sessions', sid)
    end
  end
end
local function drop_node(node)
  local nkey = T .. ':node:' .. node
  local sids = redis.call('HKEYS', nkey)
  for _, sid in ipairs(sids) do set_count(node, sid, 0) end
  redis.call('DEL', nkey)
  return #sids
end
-- 0: the node holds a live lease; 1: it has none (never joined, reaped,
-- Redis restarted empty); 2: its lease ran out and nobody reaped it yet. A
-- node whose lease ran out was skipped by close-alls meanwhile, so it is
-- dropped like a reaped one, and rejoins with a full rewrite.
local function membership(node, now)
  local deadline = redis.call('ZSCORE', KEYS[1], node)
  if not deadline then return 1 end
  if tonumber(deadline) >= now then return 0 end
  drop_node(node)
  redis.call('ZREM', KEYS[1], node)
  return 2
end
local function live_nodes(sid, now)
  local counts = redis.call('HGETALL', T .. ':session:' .. sid)
  local live = {}
  for i = 1, #counts, 2 do
    local deadline = redis.call('ZSCORE', KEYS[1], counts[i])
    if deadline and tonumber(deadline) >= now then
      live[#live + 1] = counts[i]
      live[#live + 1] = counts[i + 1]
    end
  end
  return live
end
"""

HEARTBEAT = (
    _PRELUDE
    + """
-- ARGV: tag, node, lease_us -> {now, membership, {dead node, sessions, ...}}
-- An absent node is not added back: only a full rewrite does that, so a
-- repeated call reports the absence again.
local now = now_us()
local absent = membership(ARGV[2], now)
if absent == 0 then
  redis.call('ZADD', KEYS[1], num(now + tonumber(ARGV[3])), ARGV[2])
end
local reaped = {}
for _, dead in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. num(now))) do
  reaped[#reaped + 1] = dead
  reaped[#reaped + 1] = drop_node(dead)
  redis.call('ZREM', KEYS[1], dead)
end
return {now, absent, reaped}
"""
)

WRITE_PRESENCE = (
    _PRELUDE
    + """
-- ARGV: tag, node, lease_us, reset, session, count, ...
--   -> {now, membership, {session, closed_at_us, ...}}
-- A reset (full rewrite) adds the node; a change to a node without a live
-- lease (reaped, Redis restarted empty, lease run out) writes nothing and
-- reports it.
local now = now_us()
local node = ARGV[2]
local reset = ARGV[4] == '1'
if not reset then
  local absent = membership(node, now)
  if absent ~= 0 then return {now, absent, {}} end
end
redis.call('ZADD', KEYS[1], num(now + tonumber(ARGV[3])), node)
if reset then drop_node(node) end
local closed = {}
for i = 5, #ARGV, 2 do
  local sid, count = ARGV[i], tonumber(ARGV[i + 1])
  set_count(node, sid, count)
  if count > 0 then
    local at = redis.call('GET', T .. ':closed:' .. sid)
    if at then
      closed[#closed + 1] = sid
      closed[#closed + 1] = at
    end
  end
end
return {now, 0, closed}
"""
)

LEAVE = (
    _PRELUDE
    + """
-- ARGV: tag, node -> sessions dropped
local dropped = drop_node(ARGV[2])
redis.call('ZREM', KEYS[1], ARGV[2])
return dropped
"""
)

SESSION_NODES = (
    _PRELUDE
    + """
-- ARGV: tag, session -> {now, {node, count, ...}}
local now = now_us()
return {now, live_nodes(ARGV[2], now)}
"""
)

MARK_CLOSED = (
    _PRELUDE
    + """
-- ARGV: tag, session, ago_us, remember_ms -> {now, at, {node, count, ...}}
local now = now_us()
local at = now - tonumber(ARGV[3])
local key = T .. ':closed:' .. ARGV[2]
local previous = redis.call('GET', key)
if not previous or tonumber(previous) < at then
  redis.call('SET', key, num(at), 'PX', ARGV[4])
end
return {now, at, live_nodes(ARGV[2], now)}
"""
)
