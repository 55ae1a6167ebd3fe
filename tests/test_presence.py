"""Presence bookkeeping: counts across workers, distinct names, coalesced join/leave notices."""

from __future__ import annotations

import json
from typing import Any

from trio_chat.hub.presence import PresenceBook
from trio_chat.hub_link.interface import MAX_LISTED_USERS

ROOM = "general"


def published(book: PresenceBook) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(book.publish())
    assert frame["type"] == "presence"
    assert frame["room"] == book.room
    return frame


def test_counts_connections_and_lists_distinct_names_across_workers() -> None:
    book = PresenceBook(ROOM)
    book.apply("w1", {1: "ann", 2: "bob"})
    book.apply("w2", {1: "ann", 2: ""})  # ann in a second tab; a client without a name.
    frame = published(book)
    assert frame["online"] == 4
    assert frame["users"] == ["ann", "bob"]
    assert frame["joined"] == ["ann", "bob"]
    assert frame["left"] == []


def test_a_second_tab_under_the_same_name_is_not_a_join_or_a_leave() -> None:
    book = PresenceBook(ROOM)
    book.apply("w1", {1: "ann"})
    published(book)
    book.apply("w2", {7: "ann"})
    frame = published(book)
    assert (frame["online"], frame["users"], frame["joined"]) == (2, ["ann"], [])
    book.apply("w1", {1: None})
    frame = published(book)
    assert (frame["online"], frame["users"], frame["left"]) == (1, ["ann"], [])


def test_a_rename_is_a_leave_and_a_join() -> None:
    book = PresenceBook(ROOM)
    book.apply("w1", {1: "ann"})
    published(book)
    book.apply("w1", {1: "anne"})
    frame = published(book)
    assert (frame["online"], frame["users"]) == (1, ["anne"])
    assert (frame["joined"], frame["left"]) == (["anne"], ["ann"])


def test_a_worker_dropping_takes_all_its_connections_and_never_goes_negative() -> None:
    book = PresenceBook(ROOM)
    book.apply("w1", {1: "ann", 2: "bob", 3: ""})
    book.apply("w2", {1: "cat"})
    published(book)
    book.drop_worker("w1")
    book.drop_worker("w1")  # Twice: nothing more to drop.
    book.apply("w1", {1: None, 2: None})  # Late leaves of connections already dropped.
    frame = published(book)
    assert (frame["online"], frame["users"]) == (1, ["cat"])
    assert frame["left"] == ["ann", "bob"]


def test_rejoining_replaces_a_workers_connections() -> None:
    book = PresenceBook(ROOM)
    book.apply("w1", {1: "ann", 2: "bob"})
    book.replace_worker("w1", {2: "bob", 3: "cat"})
    assert book.current().online == 2
    assert book.current().users == ("bob", "cat")


def test_dirty_only_when_something_changed_and_versions_increase() -> None:
    book = PresenceBook(ROOM)
    assert not book.dirty
    book.apply("w1", {1: "ann"})
    assert book.dirty
    first = published(book)["version"]
    assert not book.dirty
    book.apply("w1", {1: "ann"})  # The same name again: no change.
    assert not book.dirty
    book.apply("w1", {1: None})
    assert published(book)["version"] == first + 1


def test_the_list_of_names_is_bounded() -> None:
    book = PresenceBook(ROOM)
    book.apply("w1", {n: f"user-{n:05}" for n in range(MAX_LISTED_USERS + 5)})
    frame = published(book)
    assert frame["online"] == MAX_LISTED_USERS + 5
    assert len(frame["users"]) == MAX_LISTED_USERS
    assert frame["truncated"] is True


def test_frames_and_states_name_the_books_room() -> None:
    book = PresenceBook("lobby")
    book.apply("w1", {1: "ann"})
    assert book.current().room == "lobby"
    assert json.loads(book.current().frame())["room"] == "lobby"
    assert published(book)["room"] == "lobby"


def test_connections_of_counts_one_workers_connections_in_the_room() -> None:
    book = PresenceBook(ROOM)
    book.apply("w1", {1: "ann", 2: ""})
    book.apply("w2", {1: "bob"})
    assert (book.connections_of("w1"), book.connections_of("w2")) == (2, 1)
    assert book.connections_of("w3") == 0
    book.apply("w1", {1: None, 2: None})
    assert book.connections_of("w1") == 0
    assert book.online == 1


def test_leaving_a_connection_never_in_the_room_changes_nothing() -> None:
    book = PresenceBook(ROOM)
    book.apply("w1", {1: "ann"})
    published(book)
    book.apply("w2", {9: None})  # A worker that has no connection in this room.
    assert not book.dirty
    assert book.connections_of("w2") == 0
    assert (book.online, book.current().users) == (1, ("ann",))
