"""The structured log line: one ``key=value`` line per event, whatever the values hold."""

from __future__ import annotations

import logging

import pytest

from trio_chat.logs import log_event


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ("plain", "plain"),
        ("two words", '"two words"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("a=b", '"a=b"'),
        ("back\\slash", '"back\\\\slash"'),
        ("", '""'),
        ("café", "café"),
        # What a client can put in a path or a name must not forge a line or drive a terminal.
        ("/x\nevent=forged", '"/x\\nevent=forged"'),
        ("/x\r\x1b[2K", '"/x\\r\\x1b[2K"'),
        ("ann\u202egnp.exe", '"ann\\u202egnp.exe"'),
        ("\x00\x7f", '"\\x00\\x7f"'),
    ],
)
def test_values_are_written_on_one_line_with_anything_unprintable_escaped(
    value: str, written: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="trio_chat"):
        log_event("refused", path=value)
    [record] = caplog.records
    line = record.getMessage()
    assert line == f"event=refused path={written}"
    assert line.isprintable()
