"""One WebSocket connection on ``/chat``: accept it, then a reader and a writer task.

Lifetime: the session owns a nursery holding the writer task, while the session task itself
reads. The session ends when the client leaves (the reader returns), when the room evicts it
(its ``on_evict`` cancels the nursery; the session then closes with the code the room gave:
1013 for falling behind, 1001 at shutdown), or when the server cancels it (it closes with 1001
on its way out). In every case the subscription and both tasks end with it.

Only the writer task ever sends to the client; the reader hands error frames to it through the
same bounded channel, so frames never interleave and nothing else waits on this client.
"""

from __future__ import annotations

import enum
import functools
import logging
import math
from collections.abc import Sequence

import trio

from .asgi_types import Receive, Scope, Send
from .guards import TokenBucket, origin_allowed
from .hub_link import HubUnavailable, Snapshot
from .logs import log_event
from .protocol import (
    CloseCode,
    ErrorCode,
    NoticeCode,
    ProtocolError,
    Rename,
    encode_chat_body,
    error_frame,
    history_frame,
    invalid_resume_error,
    is_messages_missed,
    message_id,
    notice_frame,
    parse_chat_frame,
    parse_connect_query,
    presence_version,
    welcome_frame,
)
from .room import Subscriber
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
        log_event("refused", path=_clip(scope["path"]), reason=refusal)
        # Closing before accepting makes Hypercorn answer the handshake with 403.
        await send({"type": "websocket.close", "code": CloseCode.POLICY_VIOLATION})
        return
    assert worker is not None
    address = _client_address(scope)
    if not worker.addresses.try_open(address):
        log_event("refused", client=address, reason="too_many_connections")
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


def _refusal(scope: Scope, worker: Worker | None) -> str | None:
    """Why a handshake is refused, or None."""
    if scope["path"] != CHAT_PATH:
        return "unknown_path"
    if worker is None or worker.closing:
        return "not_serving"
    settings = worker.settings
    if not origin_allowed(
        scope.get("headers", ()), settings.allowed_origins, require_origin=settings.require_origin
    ):
        return "origin"
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
        self._room = worker.room
        self._link = worker.link
        self._id = worker.next_connection_id()
        self._request = parse_connect_query(scope.get("query_string", b""), worker.limits)
        self._bucket = TokenBucket(worker.settings.rate, worker.settings.burst)
        self._name = self._request.name
        client = scope.get("client")
        self._peer = f"{client[0]}:{client[1]}" if client else "-"
        self._cancel_scope = trio.CancelScope()
        self._errors = 0
        self._errors_unlogged = 0
        self._error_logged_at = -math.inf

    async def run(self) -> None:
        log_event("connect", conn=self._id, client=self._peer, online=len(self._room) + 1)
        ended_by = Ending.UNDECIDED
        code: int = CloseCode.GOING_AWAY
        self._worker.open_sessions += 1
        try:
            async with trio.open_nursery() as nursery:
                self._cancel_scope = nursery.cancel_scope
                # Subscribed first, so that nothing published from here on can be missed; the
                # writer then skips what the snapshot already covers.
                with self._room.subscribe(on_evict=self._on_evict) as subscriber:
                    opening, snapshot = await self._opening()
                    nursery.start_soon(self._write, subscriber, opening, snapshot)
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
            self._link.absent(self._id)
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

    async def _opening(self) -> tuple[list[str], Snapshot | None]:
        """The frames a client gets first: welcome, history (or what it missed), presence."""
        frames = [welcome_frame(self._worker.pid, self._worker.limits)]
        frames.extend(error_frame(error.code, error.message) for error in self._request.errors)
        since = self._request.since
        try:
            # Joining presence and taking the snapshot are one hub call: the client is in the
            # presence it is sent.
            snapshot = await self._link.snapshot(
                since, self._request.since_epoch, self._id, self._name
            )
        except HubUnavailable:
            frames.append(
                error_frame(
                    ErrorCode.HUB_UNAVAILABLE,
                    "The history cannot be fetched right now: the server cannot reach the "
                    "other workers. New messages will show as they come.",
                )
            )
            return frames, None
        resumed = since is not None and snapshot.since_valid
        if not snapshot.since_valid:
            error = invalid_resume_error()
            frames.append(error_frame(error.code, error.message))
        elif since is not None and since + 1 < snapshot.first_available:
            frames.append(
                notice_frame(
                    NoticeCode.RESUME_PARTIAL,
                    "Some messages from while you were away are no longer kept.",
                    first_available=snapshot.first_available,
                )
            )
        frames.append(history_frame(snapshot.messages, resumed=resumed, epoch=snapshot.epoch))
        frames.append(snapshot.presence)
        return frames, snapshot

    def _on_evict(self, code: CloseCode) -> None:
        # Logged now: the close frame itself may wait for a stalled client to read again.
        if code == CloseCode.TRY_AGAIN_LATER:
            log_event("evicted", logging.WARNING, conn=self._id, reason="too_slow", code=int(code))
        self._cancel_scope.cancel()

    async def _read(self, subscriber: Subscriber) -> int:
        """Handle client frames until the client leaves; returns its close code."""
        limits = self._worker.limits
        not_published = functools.partial(
            self._reject,
            subscriber,
            ErrorCode.HUB_UNAVAILABLE,
            "Your message was not sent: the server cannot reach the other workers right now. "
            "Try again in a moment.",
        )
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
                chat = parse_chat_frame(message.get("text"), message.get("bytes"), limits)
            except ProtocolError as error:
                self._reject(subscriber, error.code, error.message)
                continue
            if isinstance(chat, Rename):
                self._rename(chat.name)
                continue
            self._rename(chat.sender)  # Sending under another name is a rename too.
            try:
                # The next message is read while this one is on its way: under load, one hub
                # round trip carries several of them.
                await self._link.submit(encode_chat_body(chat), not_published)
            except HubUnavailable:
                not_published()

    def _rename(self, name: str) -> None:
        if name != self._name:
            self._name = name
            self._link.present(self._id, name)

    def _reject(self, subscriber: Subscriber, code: ErrorCode, message: str) -> None:
        self._errors += 1
        now = trio.current_time()
        if now - self._error_logged_at >= ERROR_LOG_INTERVAL_SECONDS:
            unlogged = {"unlogged": self._errors_unlogged} if self._errors_unlogged else {}
            log_event("client_error", conn=self._id, code=code.value, **unlogged)
            self._error_logged_at, self._errors_unlogged = now, 0
        else:
            self._errors_unlogged += 1
        self._room.send_to(subscriber, error_frame(code, message))

    async def _write(
        self, subscriber: Subscriber, opening: list[str], snapshot: Snapshot | None
    ) -> None:
        send = self._send
        for frame in opening:
            await send({"type": "websocket.send", "text": frame})
        fresh = _FreshFrames(snapshot)
        if self._batching:
            await self._write_batches(subscriber, fresh)
            return
        async for batch in subscriber.receive_channel:
            for frame in fresh.filter(batch):
                await send({"type": "websocket.send", "text": frame})
            subscriber.taken(batch)

    async def _write_batches(self, subscriber: Subscriber, fresh: _FreshFrames) -> None:
        """Everything waiting goes out in one frame, a JSON object per line, paced by
        ``BATCH_FRAMES_PER_SECOND``."""
        channel = subscriber.receive_channel
        pacer = TokenBucket(BATCH_FRAMES_PER_SECOND, BATCH_BURST_FRAMES, clock=trio.current_time)
        async for batch in channel:
            due = pacer.next_token_at()
            if trio.current_time() < due:
                await subscriber.linger(due)  # Let more join this frame.
            batches = [batch]
            waiting = len(batch)
            while waiting < MAX_FRAMES_PER_BATCH:
                try:
                    batches.append(channel.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
                waiting += len(batches[-1])
            frames = [frame for each in batches for frame in fresh.filter(each)]
            if frames:
                pacer.spend()
                await self._send({"type": "websocket.send", "text": "\n".join(frames)})
            for each in batches:
                subscriber.taken(each)

    async def _close(self, code: int) -> None:
        await self._send({"type": "websocket.close", "code": int(code)})


def _is_cancellation(error: BaseException) -> bool:
    if isinstance(error, BaseExceptionGroup):
        return error.split(trio.Cancelled)[1] is None
    return isinstance(error, trio.Cancelled)


class _FreshFrames:
    """Drops the frames a client's snapshot already covers.

    Frames queued while the snapshot was taken may be older than it: a channel starts with a
    run of frames the snapshot covers, then everything is new, and no more checks are needed.
    A ``messages_missed`` notice also ends the catching up: what follows it comes from a new
    hub, whose ids and presence versions start a new run and say nothing about the snapshot.
    """

    def __init__(self, snapshot: Snapshot | None) -> None:
        self._snapshot = snapshot

    def filter(self, batch: Sequence[str]) -> Sequence[str]:
        snapshot = self._snapshot
        if snapshot is None:
            return batch
        kept = []
        for frame in batch:
            if self._snapshot is None:
                kept.append(frame)
                continue
            covered = _covered_by(frame, snapshot)
            if covered is False:
                self._snapshot = None  # The first new frame of the hub's order: caught up.
            if not covered:
                kept.append(frame)
        return kept


def _covered_by(frame: str, snapshot: Snapshot) -> bool | None:
    """Whether the snapshot already covers this frame; None for frames outside the hub's order
    (error frames, other notices), which neither repeat nor end the catching up."""
    message = message_id(frame)
    if message is not None:
        return message <= snapshot.last_id
    version = presence_version(frame)
    if version is not None:
        return version <= snapshot.presence_version
    return False if is_messages_missed(frame) else None
