-- A worker leaves: its connections leave presence.
-- ARGV: label.
drop_worker(ARGV[FIRST_ARG])
settle_presence(now_ms())
return 1
