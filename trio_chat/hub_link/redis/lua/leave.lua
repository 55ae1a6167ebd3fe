-- A worker leaves: its members leave all their rooms.
-- ARGV: label.
drop_worker(ARGV[FIRST_ARG])
settle_presence()
return 1
