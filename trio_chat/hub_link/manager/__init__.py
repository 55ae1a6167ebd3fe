"""The manager hub's worker side: ``client`` (the blocking manager client and the wire it shares
with the hub process), ``launcher`` (starting the automatic hub, exactly one per server) and
``hub`` (``ManagerHub``, the backend the bridge drives). Imports nothing by itself: the hub
process imports ``client`` from here."""
