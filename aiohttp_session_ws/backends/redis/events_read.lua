-- Read the event log (T:events) with its state, in one step.
-- ARGV: tag, an epoch for a log that has none ('': leave it without, and
-- answer ''), after (an id, exclusive; '' for the start), limit (0: the
-- state only)
-- -> {epoch, trimmed or '', last or '', {{id, {field, value, ...}}, ...}}
if ARGV[2] ~= '' then redis.call('SET', T .. ':events:epoch', ARGV[2], 'NX') end
local epoch = redis.call('GET', T .. ':events:epoch') or ''
local entries = {}
local limit = tonumber(ARGV[4])
if limit > 0 then
  local start = '-'
  if ARGV[3] ~= '' then start = '(' .. ARGV[3] end
  entries = redis.call('XRANGE', T .. ':events', start, '+', 'COUNT', limit)
end
return {epoch, redis.call('GET', T .. ':events:trimmed') or '',
  redis.call('GET', T .. ':events:last') or '', entries}
