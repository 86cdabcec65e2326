"""Fuzzing what a hostile peer controls: message bytes, request contents and tokens.

Properties: the wire decoder returns a Message or raises ProtocolError; the dispatcher answers
every request with a well-formed response (ok, or a structured error of a known kind, never
``internal``, which would mean a bug); a token opens to exactly what was sealed or raises
TokenError. Examples are bounded so the module runs in well under 30 s; the pytest timeout
turns a hang into a failure.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import pyarrow as pa
import pytest
from conftest import DATA
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from vgi_vision.errors import ProtocolError
from vgi_vision.protocol import ErrorKind, Message, argument_rows, decode, encode
from vgi_vision.worker.dispatcher import Dispatcher, LiveStates, SealedStates
from vgi_vision.worker.functions import VisionContext, build_registry
from vgi_vision.worker.paths import PathPolicy
from vgi_vision.worker.tokens import TokenError, TokenSealer
from vgi_vision.worker.vision.model import load_classifier

pytestmark = pytest.mark.timeout(120)



def fuzz(examples: int) -> settings:
    """Bounded examples, no example database written into the repository, no deadline (the
    pytest timeout catches a hang; a slow example on a busy machine is not a failure)."""
    return settings(max_examples=examples, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


SEALER = TokenSealer(b"fuzzing-key-0123456789abcdef")


def small_jpeg() -> bytes:
    with Image.open(DATA / "coffee.png") as image:
        out = io.BytesIO()
        image.convert("RGB").resize((48, 48)).save(out, "JPEG")
    return out.getvalue()


IMAGE = small_jpeg()
DISPATCHER = Dispatcher(build_registry(VisionContext(classifier=load_classifier(),
                                                     paths=PathPolicy.confined(DATA))))


def scan(function: str, *columns: pa.Array, token: Any = None, rows: int = 1) -> bytes:
    return encode({"op": "scan", "function": function, "token": token},
                  argument_rows(list(columns), None if columns else rows))


def genuine_token() -> str:
    """A real continuation token of ``image_classes()``, as the HTTP worker mints them."""
    reply = decode(DISPATCHER.handle(scan("image_classes"), SealedStates(SEALER)))
    return reply.header["token"]


CORPUS_TOKEN = genuine_token()
CORPUS = [
    encode({"op": "describe"}),
    encode({"op": "call", "function": "top_label"},
           argument_rows([pa.array([IMAGE, None, b"junk"], pa.binary())])),
    scan("classify", pa.array([IMAGE], pa.binary()), pa.array([3], pa.int32())),
    scan("classify", pa.array(["coffee.png", None]), pa.array([2, 2], pa.int32())),
    scan("image_classes", token=CORPUS_TOKEN),
    encode({"ok": True, "done": False, "token": "abc"},
           pa.record_batch({"input_row": pa.array([0, 0], pa.int32()),
                            "label": pa.array(["espresso", "cup"])})),
]


@st.composite
def mutated(draw: st.DrawFn, corpus: list[bytes]) -> bytes:
    """A corpus message after 1-4 bit flips, byte overwrites, truncations, inserts or splices."""
    data = bytearray(draw(st.sampled_from(corpus)))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["flip", "set", "truncate", "insert", "splice"]))
        if kind == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and at < len(data):
            data[at] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0xFF]) | st.integers(0, 255))
        elif kind == "truncate":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "splice":
            other = draw(st.sampled_from(corpus))
            data[at:] = other[draw(st.integers(0, len(other))):]
    return bytes(data)


def check_decodes_or_refuses(data: bytes) -> None:
    try:
        message = decode(data)
    except ProtocolError:
        return
    assert isinstance(message, Message) and isinstance(message.header, dict)


@fuzz(1000)
@given(st.binary(max_size=4096))
def test_decoder_on_random_bytes(data: bytes) -> None:
    check_decodes_or_refuses(data)


@fuzz(2000)
@given(mutated(CORPUS))
def test_decoder_on_mutated_messages(data: bytes) -> None:
    check_decodes_or_refuses(data)


def check_well_formed_answer(request: bytes) -> None:
    """Both state stores (stream transports and HTTP) answer well-formed, never ``internal``."""
    for states in (LiveStates(), SealedStates(SEALER)):
        header = decode(DISPATCHER.handle(request, states)).header
        assert header["ok"] in (True, False)
        if not header["ok"]:
            error = header["error"]
            assert ErrorKind.from_wire(error["kind"]).value == error["kind"], error
            assert error["kind"] != ErrorKind.INTERNAL, error
            assert isinstance(error["message"], str) and error["message"]


@fuzz(1000)
@given(mutated(CORPUS[:5]))
def test_dispatcher_on_mutated_requests(request: bytes) -> None:
    check_well_formed_answer(request)


def column(n: int) -> st.SearchStrategy[pa.Array]:
    """One argument column of ``n`` rows, of a type some overload takes or none does."""
    def of(values: st.SearchStrategy, arrow_type: pa.DataType) -> st.SearchStrategy[pa.Array]:
        return st.lists(st.none() | values, min_size=n, max_size=n).map(
            lambda v: pa.array(v, arrow_type))

    return st.one_of(
        of(st.sampled_from([IMAGE, b"", b"GIF89a", IMAGE[:100]]) | st.binary(max_size=64),
           pa.binary()),
        of(st.sampled_from([IMAGE]), pa.large_binary()),
        of(st.sampled_from(["coffee.png", "../outside.png", "/etc/passwd", "a\x00b", ""])
           | st.text(max_size=16), pa.string()),
        of(st.integers(-(2**31), 2**31 - 1), pa.int32()),
        of(st.integers(-(2**63), 2**63 - 1), pa.int64()),
        of(st.floats(), pa.float64()),
        of(st.booleans(), pa.bool_()),
        of(st.lists(st.integers(0, 9), max_size=3), pa.list_(pa.int64())),
        st.just(pa.nulls(n)),
    )


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    """Well-formed messages with arbitrary headers and argument columns."""
    junk = st.none() | st.integers() | st.text(max_size=8) | st.lists(st.integers(), max_size=2)
    header: dict[str, Any] = {
        "op": draw(st.sampled_from(["describe", "call", "scan"]) | junk),
        "function": draw(st.sampled_from([f["name"] for f in DISPATCHER.registry.describe()])
                         | junk),
        "token": draw(st.sampled_from([None, CORPUS_TOKEN, CORPUS_TOKEN[:-4] + "AAAA"]) | junk),
    }
    if draw(st.booleans()):
        header[draw(st.sampled_from(["v", "extra", "ok"]))] = draw(junk)
    n = draw(st.integers(0, 4))
    columns = draw(st.lists(column(n), max_size=3))
    batch = argument_rows(columns, n) if draw(st.booleans()) or columns else None
    return encode(header, batch)


@fuzz(500)
@given(requests())
def test_dispatcher_on_arbitrary_requests(request: bytes) -> None:
    check_well_formed_answer(request)


DIGEST = b"\x01" * 32
STATE = b"the exact state bytes"
TOKEN = SEALER.seal(DIGEST, STATE)


def check_opens_exactly_or_refuses(token: Any) -> None:
    try:
        opened = SEALER.open(token, DIGEST)
    except TokenError:
        return
    assert opened == STATE


@fuzz(1000)
@given(st.text(max_size=200) | st.binary(max_size=100).map(
    lambda b: base64.urlsafe_b64encode(b).decode()) | st.none() | st.integers())
def test_token_opener_on_random_tokens(token: Any) -> None:
    check_opens_exactly_or_refuses(token)


@st.composite
def mutated_tokens(draw: st.DrawFn) -> str:
    """The token with its text edited, or its bytes edited and re-encoded."""
    if draw(st.booleans()):
        raw = bytearray(base64.urlsafe_b64decode(TOKEN))
        at = draw(st.integers(0, len(raw) - 1))
        if draw(st.booleans()):
            raw[at] ^= 1 << draw(st.integers(0, 7))
        else:
            del raw[at:at + draw(st.integers(1, 40))]
        return base64.urlsafe_b64encode(bytes(raw)).decode()
    text = list(TOKEN)
    at = draw(st.integers(0, len(text)))
    edit = draw(st.sampled_from(["replace", "insert", "delete"]))
    if edit == "replace" and at < len(text):
        text[at] = draw(st.characters())
    elif edit == "insert":
        text[at:at] = draw(st.text(min_size=1, max_size=4))
    else:
        del text[at:at + draw(st.integers(1, 8))]
    return "".join(text)


@fuzz(1000)
@given(mutated_tokens())
def test_token_opener_on_mutated_tokens(token: str) -> None:
    check_opens_exactly_or_refuses(token)
