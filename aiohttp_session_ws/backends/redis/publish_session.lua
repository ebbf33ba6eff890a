-- ARGV: tag, session, node, frame -> {published node, ...}
-- The frame goes to every other live node holding the session.
return publish_to(live_nodes(ARGV[2]), 1, 2, ARGV[3], ARGV[4])
