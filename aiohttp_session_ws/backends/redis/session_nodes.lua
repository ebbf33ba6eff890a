-- ARGV: tag, session -> {now, {node, count, ...}}
return {now, live_nodes(ARGV[2])}
