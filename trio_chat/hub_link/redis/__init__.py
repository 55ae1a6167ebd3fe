"""The Redis hub's worker side: ``hub`` (``RedisHub``, over redis-py's blocking client) and the
Lua scripts in ``lua/`` that make every change atomic in Redis."""
