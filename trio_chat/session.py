"""One WebSocket connection on ``/chat``: accept it, then a reader and a writer task.

Lifetime: the session owns a nursery holding the writer task, while the session task itself
reads. The session ends when the client leaves (the reader returns), when the fan-out evicts it
(its ``on_evict`` cancels the nursery; the session then closes with the code the fan-out gave:
1013 for falling behind, 1001 at shutdown), or when the server cancels it (it closes with 1001
on its way out). In every case the subscription, its rooms and both tasks end with it.

Rooms: the connection starts in one (``?room=``, else the default room), and joins and leaves
others with ``join`` and ``leave`` frames, up to ``Limits.max_rooms``. A join enters the room
in the fan-out first, then asks the hub for the room's snapshot, so that nothing published
meanwhile is missed; the writer sends the snapshot where the room's frames begin in its
channel (``PendingJoin``) and skips the live frames it covers.

Only the writer task ever sends to the client; the reader hands error frames, and the answers
to ``rooms`` and ``older`` frames, to it through the same bounded channel, so frames never
interleave and nothing else waits on this client.

Counted in the worker's figures (``WorkerFigures``): handshakes refused by reason, error frames
by code, sessions ended by close code, and each frame the writer sends with its bytes (one
``+=`` pair per frame: a batch-mode frame is one).
"""

from __future__ import annotations

import enum
import functools
import logging
import math

import trio

from .asgi_types import Receive, Scope, Send
from .catch_up import CatchUp, opening_frames
from .fanout import PendingJoin, Subscriber, queued_frames
from .guards import TokenBucket, origin_allowed
from .hub_link import HubUnavailable
from .logs import log_event
from .protocol import (
    ChatMessage,
    CloseCode,
    ErrorCode,
    HandshakeRefusal,
    Join,
    Leave,
    ListRooms,
    Older,
    ProtocolError,
    Rename,
    encode_chat_body,
    error_frame,
    invalid_resume_error,
    older_frame,
    parse_chat_frame,
    parse_connect_query,
    rooms_frame,
    welcome_frame,
)
from .worker import Worker

CHAT_PATH = "/chat"
#: The opt-in subprotocol in which several frames waiting for a client go out as one text
#: frame, one JSON object per line: under load, Hypercorn's cost per frame is shared.
BATCH_SUBPROTOCOL = "trio-chat.batch"
#: Frames joined into one batched text frame at most.
MAX_FRAMES_PER_BATCH = 512
#: A batch client is sent at most this many frames a second on average, and this many back to
#: back: beyond that, what arrives waits (up to 1 / rate) and joins the next frame. Under load
#: this is what makes batching pay (Hypercorn's cost is per frame, and the hub delivers a worker
#: a few messages at a time), while a client that gets a frame now and then gets it at once. The
#: wait also ends as soon as half the client's buffer is waiting, so that being batched never
#: takes a client near eviction (1013).
BATCH_FRAMES_PER_SECOND = 20
BATCH_BURST_FRAMES = 10
_ORDINARY_CLOSE_CODES = frozenset(
    {
        CloseCode.NORMAL,
        CloseCode.GOING_AWAY,
        CloseCode.MESSAGE_TOO_BIG,
        CloseCode.NO_STATUS,
        CloseCode.ABNORMAL,
    }
)
#: How long a close frame may take to go out when the server shuts a session down.
CLOSE_TIMEOUT_SECONDS = 1.0
#: A connection's refused frames are logged at most once per this many seconds (the line says
#: how many went unlogged since the last one), and counted in its disconnect line: a client
#: sending junk as fast as it can must not be able to fill the disk with our log.
ERROR_LOG_INTERVAL_SECONDS = 10.0


async def serve_websocket(
    scope: Scope, receive: Receive, send: Send, worker: Worker | None
) -> None:
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    refusal = _refusal(scope, worker)
    if refusal is not None:
        log_event("refused", path=_clip(scope["path"]), reason=refusal.value)
        if worker is not None:
            worker.figures.handshakes_refused[refusal.value] += 1
        # Closing before accepting makes Hypercorn answer the handshake with 403.
        await send({"type": "websocket.close", "code": CloseCode.POLICY_VIOLATION})
        return
    assert worker is not None
    address = _client_address(scope)
    if not worker.addresses.try_open(address):
        refusal = HandshakeRefusal.TOO_MANY_CONNECTIONS
        log_event("refused", client=address, reason=refusal.value)
        worker.figures.handshakes_refused[refusal.value] += 1
        await send({"type": "websocket.close", "code": CloseCode.POLICY_VIOLATION})
        return
    batching = BATCH_SUBPROTOCOL in scope.get("subprotocols", ())
    try:
        await send(
            {"type": "websocket.accept", "subprotocol": BATCH_SUBPROTOCOL}
            if batching
            else {"type": "websocket.accept"}
        )
        await Session(scope, receive, send, worker, batching=batching).run()
    finally:
        worker.addresses.close(address)


def _refusal(scope: Scope, worker: Worker | None) -> HandshakeRefusal | None:
    """Why a handshake is refused, or None."""
    if scope["path"] != CHAT_PATH:
        return HandshakeRefusal.UNKNOWN_PATH
    if worker is None or worker.closing:
        return HandshakeRefusal.NOT_SERVING
    settings = worker.settings
    if not origin_allowed(
        scope.get("headers", ()), settings.allowed_origins, require_origin=settings.require_origin
    ):
        return HandshakeRefusal.ORIGIN
    return None


def _client_address(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "-"


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


class Ending(enum.Enum):
    """How a session ended: the ``by=`` of its disconnect log line."""

    #: Still running; a session that ends while undecided was cancelled from outside.
    UNDECIDED = "undecided"
    #: The client closed, or its connection died.
    CLIENT = "client"
    #: Evicted: too slow (1013), or the worker is shutting down (1001).
    SERVER = "server"
    #: A bug of ours: the client is told 1011.
    ERROR = "error"
    #: Cancelled from outside: the server gave up waiting at shutdown.
    CANCELLED = "cancelled"


class Session:
    def __init__(
        self, scope: Scope, receive: Receive, send: Send, worker: Worker, *, batching: bool = False
    ) -> None:
        self._batching = batching
        self._receive = receive
        self._send = send
        self._worker = worker
        self._figures = worker.figures
        self._fanout = worker.fanout
        self._link = worker.link
        self._id = worker.next_connection_id()
        self._request = parse_connect_query(scope.get("query_string", b""), worker.limits)
        self._first_room = self._request.room or worker.settings.default_room
        self._bucket = TokenBucket(worker.settings.rate, worker.settings.burst)
        self._name = self._request.name
        client = scope.get("client")
        self._peer = f"{client[0]}:{client[1]}" if client else "-"
        self._cancel_scope = trio.CancelScope()
        self._subscriber: Subscriber | None = None
        self._errors = 0
        self._errors_unlogged = 0
        self._error_logged_at = -math.inf

    async def run(self) -> None:
        log_event("connect", conn=self._id, client=self._peer, online=len(self._fanout) + 1)
        ended_by = Ending.UNDECIDED
        code: int = CloseCode.GOING_AWAY
        self._worker.open_sessions += 1
        try:
            async with trio.open_nursery() as nursery:
                self._cancel_scope = nursery.cancel_scope
                with self._fanout.subscribe(on_evict=self._on_evict) as subscriber:
                    self._subscriber = subscriber
                    # In the first room before the snapshot is asked for, so that nothing
                    # published from here on can be missed.
                    first = self._fanout.enter(subscriber, self._first_room)
                    nursery.start_soon(self._write, subscriber, self._greeting())
                    request = self._request
                    await self._join(
                        subscriber, first, request.since, request.since_epoch, first=True
                    )
                    code = await self._read(subscriber)
                    ended_by = Ending.CLIENT
                    nursery.cancel_scope.cancel()
            if ended_by is Ending.UNDECIDED and subscriber.close_code is not None:
                # Evicted: too slow (1013), or the worker is shutting down (1001).
                ended_by, code = Ending.SERVER, subscriber.close_code
                with trio.move_on_after(CLOSE_TIMEOUT_SECONDS):
                    await self._close(code)
        except BaseException as error:
            if not _is_cancellation(error):
                # A bug of ours: the client is told (1011) and Hypercorn logs the traceback.
                ended_by, code = Ending.ERROR, CloseCode.INTERNAL_ERROR
            raise
        finally:
            self._worker.open_sessions -= 1
            if self._subscriber is not None:
                for room in self._subscriber.rooms:
                    self._link.absent(self._id, room)
            if ended_by in (Ending.UNDECIDED, Ending.ERROR):
                # Cancelled from outside (the server gave up waiting at shutdown), or failed:
                # say goodbye before the socket goes.
                if ended_by is Ending.UNDECIDED:
                    ended_by = Ending.CANCELLED
                    self._worker.shutting_down.set()
                with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT_SECONDS):
                    await self._close(code)
            level = logging.INFO if code in _ORDINARY_CLOSE_CODES else logging.WARNING
            errors = {"errors": self._errors} if self._errors else {}
            log_event(
                "disconnect", level, conn=self._id, by=ended_by.value, code=int(code), **errors
            )
            self._figures.disconnects[int(code)] += 1

    def _greeting(self) -> list[str]:
        """The frames a client gets first: welcome, and what was wrong with its URL."""
        frames = [welcome_frame(self._worker.pid, self._worker.limits)]
        for error in self._request.errors:
            # ``since`` in the URL is for the first room.
            room = self._first_room if error.code is ErrorCode.INVALID_RESUME else error.room
            frames.append(self._error_frame(error.code, error.message, room))
        return frames

    def _error_frame(self, code: ErrorCode, message: str, room: str | None = None) -> str:
        """An error frame for this client, counted by its code (every one made is sent,
        unless the client goes first)."""
        self._figures.frames_refused[code.value] += 1
        return error_frame(code, message, room=room)

    async def _join(
        self,
        subscriber: Subscriber,
        pending: PendingJoin,
        since: int | None,
        epoch: str | None,
        *,
        first: bool = False,
    ) -> None:
        """Ask the hub for the room's snapshot, and settle the join with what it answers: the
        history (or what was missed) and presence, or why the client is not in the room.

        The first room is special, as it was the only one: if the hub cannot be reached, the
        client stays in it, gets live frames as they come, and is in presence once the link is
        back (the worker's next join of the hub carries it).
        """
        room = pending.room
        try:
            snapshot = await self._link.snapshot(room, since, epoch, self._id, self._name)
        except HubUnavailable:
            if first:
                self._link.present(self._id, room, self._name)
                message = (
                    "The history cannot be fetched right now: the server cannot reach the "
                    "other workers. New messages will show as they come."
                )
                pending.settle([self._error_frame(ErrorCode.HUB_UNAVAILABLE, message, room)], None)
                return
            self._link.absent(self._id, room)  # In case the hub took it in before failing.
            message = (
                f"You did not join {room}: the server cannot reach the other workers right "
                "now. Try again in a moment."
            )
            self._undo_join(subscriber, pending, ErrorCode.HUB_UNAVAILABLE, message)
            return
        if snapshot.refused:
            message = f"You did not join {room}: the server holds as many rooms as it can."
            self._undo_join(subscriber, pending, ErrorCode.ROOM_LIMIT, message)
            return
        if not snapshot.since_valid:
            # The opening frames begin with an ``invalid_resume`` error frame.
            self._figures.frames_refused[ErrorCode.INVALID_RESUME.value] += 1
        pending.settle(opening_frames(snapshot, since), snapshot)

    def _undo_join(
        self, subscriber: Subscriber, pending: PendingJoin, code: ErrorCode, message: str
    ) -> None:
        self._fanout.leave(subscriber, pending.room, announce=False)
        pending.fail([self._error_frame(code, message, pending.room)])

    def _on_evict(self, code: CloseCode) -> None:
        # Logged now: the close frame itself may wait for a stalled client to read again.
        if code == CloseCode.TRY_AGAIN_LATER:
            log_event("evicted", logging.WARNING, conn=self._id, reason="too_slow", code=int(code))
        self._cancel_scope.cancel()

    async def _read(self, subscriber: Subscriber) -> int:
        """Handle client frames until the client leaves; returns its close code."""
        limits = self._worker.limits
        while True:
            message = await self._receive()
            if message["type"] == "websocket.disconnect":
                return int(message.get("code", CloseCode.NORMAL))
            if not self._bucket.take():
                self._reject(
                    subscriber,
                    ErrorCode.RATE_LIMITED,
                    "Too many messages: slow down (your message was not sent).",
                )
                continue
            try:
                frame = parse_chat_frame(message.get("text"), message.get("bytes"), limits)
                if isinstance(frame, ChatMessage):
                    await self._publish(subscriber, frame)
                elif isinstance(frame, Rename):
                    self._rename(subscriber, frame.name)
                elif isinstance(frame, Join):
                    await self._handle_join(subscriber, frame)
                elif isinstance(frame, Leave):
                    self._leave(subscriber, frame.room)
                elif isinstance(frame, Older):
                    await self._send_older(subscriber, frame)
                else:
                    assert isinstance(frame, ListRooms)
                    await self._list_rooms(subscriber)
            except ProtocolError as error:
                self._reject(subscriber, error.code, error.message, error.room)

    async def _publish(self, subscriber: Subscriber, chat: ChatMessage) -> None:
        room = joined_room(
            subscriber,
            chat.room,
            not_in="Your message was not sent: you are not in {room}.",
            in_none="Your message was not sent: you are in no room. Join one first.",
        )
        self._rename(subscriber, chat.sender)  # Sending under another name is a rename too.
        not_published = functools.partial(
            self._reject,
            subscriber,
            ErrorCode.HUB_UNAVAILABLE,
            "Your message was not sent: the server cannot reach the other workers right now. "
            "Try again in a moment.",
            room,
        )
        try:
            # The next frame is read while this message is on its way: under load, one hub
            # round trip carries several of them.
            await self._link.submit(encode_chat_body(room, chat), not_published)
        except HubUnavailable:
            not_published()

    async def _handle_join(self, subscriber: Subscriber, join: Join) -> None:
        room = join.room
        if room in subscriber.rooms:
            raise ProtocolError(ErrorCode.ALREADY_JOINED, f"You are in {room} already.", room)
        max_rooms = self._worker.limits.max_rooms
        if len(subscriber.rooms) >= max_rooms:
            raise ProtocolError(
                ErrorCode.TOO_MANY_ROOMS,
                f"You did not join {room}: a connection may be in {max_rooms} rooms at most. "
                "Leave one first.",
                room,
            )
        if join.since_invalid:
            # Told first; the join goes on as a fresh one.
            self._reject(subscriber, ErrorCode.INVALID_RESUME, invalid_resume_error().message, room)
        pending = self._fanout.enter(subscriber, room)
        await self._join(subscriber, pending, join.since, join.since_epoch)

    def _leave(self, subscriber: Subscriber, room: str) -> None:
        if room not in subscriber.rooms:
            raise ProtocolError(ErrorCode.NOT_JOINED, f"You are not in {room}.", room)
        self._fanout.leave(subscriber, room)
        self._link.absent(self._id, room)

    async def _list_rooms(self, subscriber: Subscriber) -> None:
        try:
            rooms = await self._worker.busiest_rooms()
        except HubUnavailable:
            raise ProtocolError(
                ErrorCode.HUB_UNAVAILABLE,
                "The list of rooms cannot be fetched right now: the server cannot reach the "
                "other workers.",
            ) from None
        self._fanout.send_to(subscriber, rooms_frame(rooms))

    async def _send_older(self, subscriber: Subscriber, request: Older) -> None:
        """A page of a room's scrollback, to this client alone. Like a join or the list of
        rooms, it holds up the connection's next frames for one hub round trip."""
        room = joined_room(
            subscriber,
            request.room,
            not_in="You are not in {room}: join it to read its older messages.",
            in_none="You are in no room. Join one first.",
        )
        try:
            page = await self._link.older(room, request.before, request.limit)
        except HubUnavailable:
            raise ProtocolError(
                ErrorCode.HUB_UNAVAILABLE,
                "Older messages cannot be fetched right now: the server cannot reach the other "
                "workers. Try again in a moment.",
                room,
            ) from None
        self._fanout.send_to(subscriber, older_frame(room, page.messages, complete=page.complete))

    def _rename(self, subscriber: Subscriber, name: str) -> None:
        if name != self._name:
            self._name = name
            for room in subscriber.rooms:  # One name in all its rooms.
                self._link.present(self._id, room, name)

    def _reject(
        self, subscriber: Subscriber, code: ErrorCode, message: str, room: str | None = None
    ) -> None:
        self._errors += 1
        now = trio.current_time()
        if now - self._error_logged_at >= ERROR_LOG_INTERVAL_SECONDS:
            unlogged = {"unlogged": self._errors_unlogged} if self._errors_unlogged else {}
            log_event("client_error", conn=self._id, code=code.value, **unlogged)
            self._error_logged_at, self._errors_unlogged = now, 0
        else:
            self._errors_unlogged += 1
        self._fanout.send_to(subscriber, self._error_frame(code, message, room))

    async def _write(self, subscriber: Subscriber, greeting: list[str]) -> None:
        send = self._send
        figures = self._figures
        for frame in greeting:
            await send({"type": "websocket.send", "text": frame})
            figures.frames_sent += 1
            figures.bytes_sent += utf8_length(frame)
        fresh = CatchUp()
        if self._batching:
            await self._write_batches(subscriber, fresh)
            return
        async for item in subscriber.receive_channel:
            try:
                for frame in await fresh.frames_of(item):
                    await send({"type": "websocket.send", "text": frame})
                    figures.frames_sent += 1
                    figures.bytes_sent += utf8_length(frame)
            finally:
                subscriber.taken(item)  # Even if cancelled on the way: it is let go of.

    async def _write_batches(self, subscriber: Subscriber, fresh: CatchUp) -> None:
        """Everything waiting goes out in one frame, a JSON object per line, paced by
        ``BATCH_FRAMES_PER_SECOND``."""
        channel = subscriber.receive_channel
        pacer = TokenBucket(BATCH_FRAMES_PER_SECOND, BATCH_BURST_FRAMES, clock=trio.current_time)
        async for item in channel:
            items = [item]
            # From here on every item received is let go of, even if cancelled while lingering.
            try:
                due = pacer.next_token_at()
                if trio.current_time() < due:
                    await subscriber.linger(due)  # Let more join this frame.
                waiting = queued_frames(item)
                while waiting < MAX_FRAMES_PER_BATCH:
                    try:
                        items.append(channel.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                    waiting += queued_frames(items[-1])
                frames = [frame for each in items for frame in await fresh.frames_of(each)]
                if frames:
                    pacer.spend()
                    text = "\n".join(frames)
                    await self._send({"type": "websocket.send", "text": text})
                    self._figures.frames_sent += 1
                    self._figures.bytes_sent += utf8_length(text)
            finally:
                for each in items:
                    subscriber.taken(each)

    async def _close(self, code: int) -> None:
        await self._send({"type": "websocket.close", "code": int(code)})


def utf8_length(text: str) -> int:
    """The bytes of ``text`` on the wire; most frames are ASCII, whose length is free to tell."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _is_cancellation(error: BaseException) -> bool:
    if isinstance(error, BaseExceptionGroup):
        return error.split(trio.Cancelled)[1] is None
    return isinstance(error, trio.Cancelled)


def joined_room(subscriber: Subscriber, room: str | None, *, not_in: str, in_none: str) -> str:
    """The room a frame is about (``None``: the connection's first room), which the connection
    must be in; else ``not_joined``, said with ``not_in`` (``{room}`` in it) or, when the
    connection is in no room at all, ``in_none``."""
    room = room or next(iter(subscriber.rooms), None)
    if room is None:
        raise ProtocolError(ErrorCode.NOT_JOINED, in_none)
    if room not in subscriber.rooms:
        raise ProtocolError(ErrorCode.NOT_JOINED, not_in.format(room=room), room)
    return room
