-- ARGV: tag, then name, sequence per grant -> {1 if still held so, else 0, ...}
local found = {}
for i = 2, #ARGV, 2 do
  local sequence = redis.call('HGET', T .. ':lock:' .. ARGV[i], 'sequence')
  if sequence and tonumber(sequence) == tonumber(ARGV[i + 1]) then
    found[#found + 1] = 1
  else
    found[#found + 1] = 0
  end
end
return found
