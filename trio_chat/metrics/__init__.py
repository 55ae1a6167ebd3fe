"""The server's figures: what each worker counts, and how the hub adds them up for everyone.

- ``figures``: the data (a worker's report, the whole server's figures), plain and picklable,
  with no Trio: the hub process uses it too;
- ``board``: ``MetricsBoard``, the whole server's figures as a hub keeps them (the manager
  hub's process and ``LocalHub``; the Redis hub keeps the same in Redis, ``lua/figures.lua``);
- ``exposition`` and ``access``: ``/metrics`` in the Prometheus text format, and who may read it.

Importing this package imports none of them.
"""
