-- ARGV: tag, session -> 1 if it was alive, else 0
if end_session(ARGV[2]) then return 1 end
return 0
