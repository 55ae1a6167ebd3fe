"""The hub process: ``python -m trio_chat.hub`` (or ``trio-chat-hub``).

One process per server (started by the first worker, or by hand) that gives every chat message
its place in one total order and hands the frames to every worker's mailbox. It runs a
multiprocessing manager server (``server``) around ``core.HubCore`` (the state behind a lock,
with blocking fetches), whose state is ``state.HubState`` (pure: no lock, no thread, no clock
of its own) with ``presence``. It loads neither the ASGI app, nor Trio, nor redis; what it
shares with the workers is in ``trio_chat.hub_link.interface`` and ``trio_chat.hub_address``.
"""
