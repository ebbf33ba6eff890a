-- Append a batch of events to the log (T:events) in one step: consecutive
-- ids, one timestamp; keep the latest of each type, trim by count and age.
-- ARGV: tag, an epoch for a log that has none, the call's token, how long
-- (ms) its answer is kept, max count, max age in µs ('' for none), then per
-- event: type text, source timestamp ('' for none), payload JSON
-- -> {ms, first seq, timestamp, epoch}, all text (cjson and Lua numbers keep
-- 14 digits: numbers never leave as floats).
local key = T .. ':events'
local done_key = T .. ':events:batch:' .. ARGV[3]
local done = redis.call('GET', done_key)
if done then
  -- a repeat of this call (its reply was lost, the client retried): the
  -- events are in already, answer the same
  local reply = {}
  for part in string.gmatch(done, '[^ ]+') do reply[#reply + 1] = part end
  return reply
end

redis.call('SET', T .. ':events:epoch', ARGV[2], 'NX')
local epoch = redis.call('GET', T .. ':events:epoch')

local time = redis.call('TIME')
local usec = tonumber(time[2])
local now_ms = tonumber(time[1]) * 1000 + math.floor(usec / 1000)
local ts = time[1] .. '.' .. string.format('%06d', usec)

-- ms: Redis TIME in ms, or the last id's ms if the clock is not ahead of it
local function first_id(last)
  if not last then return now_ms, 0 end
  local dash = string.find(last, '-', 1, true)
  local lms = tonumber(string.sub(last, 1, dash - 1))
  local lseq = tonumber(string.sub(last, dash + 1))
  if now_ms <= lms then return lms, lseq + 1 end
  return now_ms, 0
end

local function stream_last()
  local info = redis.call('XINFO', 'STREAM', key)
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then return info[i + 1] end
  end
  return nil
end

local last = redis.call('GET', T .. ':events:last') or nil
local ms, seq = first_id(last)
local latest = T .. ':events:latest'
local n = 0
-- pv: the id before each event in the log, so that a follower that finds
-- another one before an entry knows that events between were trimmed
local previous = last or ''
for i = 7, #ARGV, 3 do
  local id = num(ms) .. '-' .. num(seq + n)
  local fields = {'t', ARGV[i], 'ts', ts, 'st', ARGV[i + 1], 'p', ARGV[i + 2],
    'e', epoch, 'pv', previous}
  if n == 0 then
    local added = redis.pcall('XADD', key, id, unpack(fields))
    if type(added) == 'table' and added.err then
      -- the stream went past T:events:last (written by another hand): go on
      -- from the stream's own last id
      previous = stream_last() or ''
      ms, seq = first_id(stream_last())
      id = num(ms) .. '-' .. num(seq)
      fields[#fields] = previous
      redis.call('XADD', key, id, unpack(fields))
    end
  else
    redis.call('XADD', key, id, unpack(fields))
  end
  previous = id
  redis.call('HSET', latest, ARGV[i],
    id .. '\n' .. ts .. '\n' .. ARGV[i + 1] .. '\n' .. ARGV[i + 2])
  n = n + 1
end
redis.call('SET', T .. ':events:last', num(ms) .. '-' .. num(seq + n - 1))

-- retention: the oldest beyond max count, then those older than max age
-- (by their id's ms); T:events:trimmed keeps the largest id removed
local trimmed = nil
local max_count = tonumber(ARGV[5])
local excess = redis.call('XLEN', key) - max_count
if excess > 0 then
  local gone = redis.call('XRANGE', key, '-', '+', 'COUNT', excess)
  trimmed = gone[#gone][1]
  redis.call('XTRIM', key, 'MAXLEN', max_count)
end
if ARGV[6] ~= '' then
  local oldest = math.floor((tonumber(time[1]) * 1000000 + usec
    - tonumber(ARGV[6])) / 1000)
  if oldest > 0 then
    local minid = num(oldest) .. '-0'
    local gone = redis.call('XREVRANGE', key, '(' .. minid, '-', 'COUNT', 1)
    if #gone > 0 then
      trimmed = gone[1][1]
      redis.call('XTRIM', key, 'MINID', minid)
    end
  end
end
if trimmed then redis.call('SET', T .. ':events:trimmed', trimmed) end

local reply = {num(ms), num(seq), ts, epoch}
redis.call('SET', done_key, table.concat(reply, ' '), 'PX', ARGV[4])
return reply
