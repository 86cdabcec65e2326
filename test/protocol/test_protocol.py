"""The contract both processes share: error kinds on the wire and their documentation."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from vgi_vision.protocol import ErrorKind, decode, error_message

PROTOCOL_DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def documented_statuses() -> dict[str, int]:
    """Error kind -> HTTP status, from the kinds table of docs/protocol.md."""
    statuses: dict[str, int] = {}
    for line in PROTOCOL_DOC.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[1].isdigit():
            for name in re.findall(r"`([a-z_]+)`", cells[0]):
                statuses[name] = int(cells[1])
    return statuses


def test_every_error_kind_is_documented_with_its_http_status() -> None:
    documented = documented_statuses()
    assert documented == {kind.value: kind.http_status for kind in ErrorKind}


@pytest.mark.parametrize("kind", list(ErrorKind))
def test_an_error_kind_survives_the_wire(kind: ErrorKind) -> None:
    error = decode(error_message(kind, "why")).header["error"]
    assert ErrorKind.from_wire(error["kind"]) is kind
    assert error["message"] == "why"


def test_a_kind_from_a_newer_worker_reads_as_internal() -> None:
    assert ErrorKind.from_wire("quota_exceeded") is ErrorKind.INTERNAL
    assert ErrorKind.from_wire(None) is ErrorKind.INTERNAL
