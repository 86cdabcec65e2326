"""What makes a worker safe to expose: auth, path confinement and resource limits.

Every test runs real worker processes and talks to them over real sockets; "no work was done"
is proven from the worker's own log, which has one line per dispatched request.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import duckdb
import httpx
import pyarrow as pa
import pytest
from conftest import DATA, kilobytes
from PIL import Image

import vgi_vision
from vgi_vision.client.client import Client
from vgi_vision.errors import ProtocolError, WorkerError
from vgi_vision.protocol import (
    HEADER_KEY,
    PROTOCOL_VERSION,
    ErrorKind,
    argument_rows,
    decode,
    encode,
)
from vgi_vision.protocol.bearer import bearer_matches
from vgi_vision.testing.launch import RunningWorker, running_worker, start_http
from vgi_vision.transports.framing import read_frame, write_frame
from vgi_vision.transports.http import HttpTransport
from vgi_vision.worker.dispatcher import Dispatcher, LiveStates, SealedStates, ServerLimits
from vgi_vision.worker.functions import VisionContext, build_registry
from vgi_vision.worker.paths import PathPolicy
from vgi_vision.worker.registry import FunctionError, Registry
from vgi_vision.worker.serve.http import make_app
from vgi_vision.worker.tokens import TokenSealer
from vgi_vision.worker.vision.imaging import decode as decode_image
from vgi_vision.worker.vision.model import load_classifier

TOKEN = "s3cret-bearer-token-for-tests"
AUTH_ENV = "VGI_VISION_AUTH_TOKEN"
DESCRIBE = encode({"op": "describe"})
MB = 1 << 20


def dispatched(worker_dir: Path) -> int:
    """Requests the worker's dispatcher has handled: it logs one line for each."""
    log = worker_dir / "worker.log"
    return sum(" vgi_vision.worker.dispatcher: " in line for line in log.read_text().splitlines())


def labels(table: pa.Table) -> list[str]:
    return table.column("label").to_pylist()


def unix_path(worker: RunningWorker) -> str:
    return worker.location.removeprefix("unix://")


def connect(worker: RunningWorker) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(60)
    sock.connect(unix_path(worker))
    return sock


def exchange(sock: socket.socket, request: bytes) -> dict:
    """One framed request on a raw connection; the response header."""
    with sock.makefile("rwb") as stream:
        write_frame(stream, request)
        return decode(read_frame(stream, 1 << 30)).header


def read_reply(sock: socket.socket) -> dict:
    """A response the worker sends without being asked (e.g. refusing the connection)."""
    with sock.makefile("rb") as stream:
        return decode(read_frame(stream, 1 << 30)).header


def jpeg(side: int) -> bytes:
    """The coffee photo as a small JPEG, ``side`` pixels square."""
    with Image.open(DATA / "coffee.png") as image:
        out = io.BytesIO()
        image.convert("RGB").resize((side, side)).save(out, "JPEG", quality=40)
    return out.getvalue()


# --- HTTP authentication --------------------------------------------------------------------

@pytest.fixture(scope="module")
def authed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningWorker, Path]]:
    folder = tmp_path_factory.mktemp("authed")
    with running_worker("http", env={AUTH_ENV: TOKEN}, workdir=folder) as worker:
        yield worker, folder


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token", f"Bearer {TOKEN}x",
                                           TOKEN, f"Basic {TOKEN}", "Bearer"])
def test_missing_or_wrong_token_is_refused_before_any_work(authed, authorization) -> None:
    worker, folder = authed
    headers = {"Authorization": authorization} if authorization else {}
    before = dispatched(folder)
    # Garbage would be a 400 and a real call would run the model, were either dispatched.
    for body in [b"garbage", DESCRIBE,
                 encode({"op": "scan", "function": "classify", "token": None},
                        pa.record_batch({"image": pa.array([(DATA / "coffee.png")
                                                            .read_bytes()])}))]:
        reply = httpx.post(f"{worker.location}/v1/rpc", content=body, headers=headers)
        assert reply.status_code == 401
        error = decode(reply.content).header["error"]
        assert error == {"kind": "unauthorized", "message": "missing or wrong bearer token"}
    assert dispatched(folder) == before
    httpx.post(f"{worker.location}/v1/rpc", content=DESCRIBE,
               headers={"Authorization": f"Bearer {TOKEN}"}).raise_for_status()
    assert dispatched(folder) == before + 1  # the count does see dispatched requests
    httpx.post(f"{worker.location}/v1/rpc", content=DESCRIBE,  # the scheme is case-insensitive
               headers={"Authorization": f"bearer {TOKEN}"}).raise_for_status()


def test_client_and_attach_need_the_token(authed) -> None:
    worker, _ = authed
    with Client(worker.location) as anonymous, pytest.raises(WorkerError) as info:
        anonymous.describe()
    assert info.value.kind is ErrorKind.UNAUTHORIZED
    with Client(worker.location, auth_token=TOKEN) as client:
        assert client.table("image_classes").num_rows == 1000
    con = duckdb.connect()
    with pytest.raises(WorkerError, match="bearer token"):
        vgi_vision.attach(con, worker.location)
    vgi_vision.attach(con, worker.location, auth_token=TOKEN)
    try:
        blob = (DATA / "coffee.png").read_bytes()
        assert con.execute("SELECT label FROM vision.classify(?) WHERE rank = 1",
                           [blob]).fetchall() == [("espresso",)]
        assert con.execute("SELECT count(*) FROM vision.image_classes()").fetchone() == (1000,)
    finally:
        vgi_vision.detach(con)


#: Lossily encoded to Latin-1, each of these letters became "?": a header of question marks
#: of the right length was let in.
CYRILLIC_TOKEN = "секретный-ключ-доступа-2026"


def as_received(text: str) -> str:
    """A header value as the HTTP servers hand it over: its UTF-8 bytes decoded as Latin-1."""
    return text.encode().decode("latin-1")


def test_bearer_tokens_are_compared_as_exact_bytes() -> None:
    assert bearer_matches(f"Bearer {as_received(TOKEN)}", TOKEN)
    assert not bearer_matches(f"Bearer {TOKEN[:-1]}", TOKEN)
    question_marks = "".join("?" if ord(c) > 255 else c for c in CYRILLIC_TOKEN)
    assert not bearer_matches(f"Bearer {question_marks}", CYRILLIC_TOKEN)
    assert bearer_matches(f"Bearer {as_received(CYRILLIC_TOKEN)}", CYRILLIC_TOKEN)


@pytest.mark.parametrize("command", [["serve", "--http", "--port", "0"],
                                     ["browse", "--lance", "no-such-store", "--port", "0"]])
def test_a_token_outside_the_allowed_characters_is_refused_at_start(command: list[str]
                                                                    ) -> None:
    result = subprocess.run([sys.executable, "-m", "vgi_vision", *command],
                            env={**os.environ, AUTH_ENV: CYRILLIC_TOKEN},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "a bearer token may hold only ASCII letters" in result.stderr
    states = SealedStates(TokenSealer())
    for make in (lambda: make_app(Dispatcher(Registry()), states, CYRILLIC_TOKEN),
                 lambda: HttpTransport("http://127.0.0.1:1", auth_token=CYRILLIC_TOKEN)):
        with pytest.raises(ValueError, match="may hold only ASCII"):
            make()


def env_without_token() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != AUTH_ENV}


def test_public_bind_without_token_is_refused() -> None:
    result = subprocess.run([sys.executable, "-m", "vgi_vision", "serve", "--http",
                             "--host", "0.0.0.0", "--port", "0"],
                            env=env_without_token(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "refusing to serve HTTP on 0.0.0.0 without a bearer token" in result.stderr
    assert AUTH_ENV in result.stderr and "--insecure-no-auth" in result.stderr


@pytest.mark.parametrize("how", ["insecure-no-auth", "auth-token-file"])
def test_public_bind_starts_when_told_how_to_authenticate(tmp_path: Path, how: str,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    flag = ["--insecure-no-auth"] if how == "insecure-no-auth" else \
        ["--auth-token-file", str(token_file)]
    monkeypatch.delenv(AUTH_ENV, raising=False)
    worker = start_http(tmp_path / "port", "--host", "0.0.0.0", *flag,
                        log_file=tmp_path / "worker.log")
    try:
        token = None if how == "insecure-no-auth" else TOKEN
        with Client(worker.location, auth_token=token) as client:
            assert client.table("image_classes").num_rows == 1000
        anonymous = httpx.post(f"{worker.location}/v1/rpc", content=DESCRIBE)
        assert anonymous.status_code == (200 if token is None else 401)
    finally:
        worker.stop()
    assert worker.process.returncode is not None


# --- Path confinement -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A data root holding images and symlinks, next to folders it must not reach: one of them
    a sibling whose name begins with the root's, which a string-prefix check would let in."""
    base = tmp_path_factory.mktemp("tree")
    root, outside, sibling = base / "root", base / "outside", base / "root-private"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    sibling.mkdir()
    shutil.copy(DATA / "coffee.png", root / "sub" / "coffee.png")
    shutil.copy(DATA / "cat.png", outside / "secret.png")
    shutil.copy(DATA / "cat.png", sibling / "secret.png")
    (root / "inner_link.png").symlink_to(root / "sub" / "coffee.png")
    (root / "escape.png").symlink_to(outside / "secret.png")
    (root / "escape_dir").symlink_to(outside, target_is_directory=True)
    (root / "sibling.png").symlink_to(sibling / "secret.png")
    (root / "sibling_dir").symlink_to(sibling, target_is_directory=True)
    (root / "dangling.png").symlink_to(outside / "missing.png")
    return {"root": root, "outside": outside, "sibling": sibling}


FLAVOURS = {
    # Confined to the tree's root, with small request and call limits.
    "confined": lambda tree: ["--data-root", str(tree["root"]), "--max-request-mb", "1",
                              "--max-rows-per-call", "16"],
    "rootless": lambda tree: [],
}


@pytest.fixture(scope="module")
def workers(tree: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Callable[[str, str], RunningWorker]]:
    """``workers(flavour, transport)``: one worker of each kind for the module, started lazily."""
    started: dict[tuple[str, str], RunningWorker] = {}
    with contextlib.ExitStack() as stack:
        def get(flavour: str, transport: str) -> RunningWorker:
            if (flavour, transport) not in started:
                folder = tmp_path_factory.mktemp(f"{flavour}-{transport}")
                started[flavour, transport] = stack.enter_context(
                    running_worker(transport, *FLAVOURS[flavour](tree), workdir=folder))
            return started[flavour, transport]

        yield get


@pytest.fixture(params=["unix", "http"])
def confined(request: pytest.FixtureRequest, workers) -> RunningWorker:
    return workers("confined", request.param)


@pytest.fixture(params=["unix", "http"])
def rootless(request: pytest.FixtureRequest, workers) -> RunningWorker:
    return workers("rootless", request.param)


def escapes(tree: dict[str, Path]) -> list[str]:
    """Paths that name existing files outside the root, by every route out of it."""
    return ["../outside/secret.png", "sub/../../outside/secret.png",
            str(tree["outside"] / "secret.png"), "escape.png", "escape_dir/secret.png",
            "/etc/passwd", str(tree["root"]) + "/../outside/secret.png",
            "../root-private/secret.png", str(tree["sibling"] / "secret.png"),
            "sibling.png", "sibling_dir/secret.png"]


def missing_escapes(tree: dict[str, Path]) -> list[str]:
    """Paths out of the root to files that do not exist: refused all the same, or a client
    could tell which files exist outside the root from a refusal versus an empty result."""
    return ["../outside/missing.png", "sub/../../outside/missing.png",
            str(tree["outside"] / "missing.png"), "escape_dir/missing.png", "dangling.png",
            "../root-private/missing.png", "sibling_dir/missing.png"]


def test_paths_inside_the_root_are_read(confined: RunningWorker, tree: dict[str, Path]) -> None:
    with Client(confined.location) as client:
        for path in ["sub/coffee.png", str(tree["root"] / "sub" / "coffee.png"),
                     "inner_link.png", "./sub/../sub/coffee.png"]:
            assert labels(client.table("classify", pa.array([path])))[0] == "espresso", path
        assert client.call("top_label", pa.array(["inner_link.png"])).to_pylist() == \
            ["espresso"]
        assert client.table("classify", pa.array(["sub/missing.png"])).num_rows == 0


def test_paths_escaping_the_root_are_refused(confined: RunningWorker,
                                             tree: dict[str, Path]) -> None:
    with Client(confined.location) as client:
        for path in escapes(tree):
            for call in (functools.partial(client.table, "classify", pa.array([path])),
                         functools.partial(client.call, "top_label", pa.array([path]))):
                with pytest.raises(WorkerError) as info:
                    call()
                assert info.value.kind is ErrorKind.PATH_REFUSED, path
                assert "outside the data root" in str(info.value)
        with pytest.raises(WorkerError, match="NUL byte"):
            client.table("classify", pa.array(["sub/coffee.png\x00.txt"]))
        assert client.table("image_classes").num_rows == 1000  # still serving


def test_escapes_to_missing_files_are_refused_too(confined: RunningWorker,
                                                  tree: dict[str, Path]) -> None:
    with Client(confined.location) as client:
        for path in missing_escapes(tree):
            with pytest.raises(WorkerError) as info:
                client.table("classify", pa.array([path]))
            assert info.value.kind is ErrorKind.PATH_REFUSED, path
            assert "outside the data root" in str(info.value)
        assert client.table("classify", pa.array(["sub/missing.png"])).num_rows == 0


def test_path_refusal_is_403_over_http(workers) -> None:
    location = workers("confined", "http").location
    request = encode({"op": "call", "function": "top_label"},
                     pa.record_batch({"path": pa.array(["../outside/secret.png"])}))
    reply = httpx.post(f"{location}/v1/rpc", content=request)
    assert reply.status_code == 403
    assert decode(reply.content).header["error"]["kind"] == "path_refused"


def test_refusal_reaches_sql(confined: RunningWorker) -> None:
    con = duckdb.connect()
    vgi_vision.attach(con, confined.location)
    try:
        with pytest.raises(duckdb.Error, match="outside the data root"):
            con.execute("SELECT * FROM vision.classify('escape.png')").fetchall()
        assert con.execute("SELECT label FROM vision.classify('sub/coffee.png') "
                           "WHERE rank = 1").fetchall() == [("espresso",)]
    finally:
        vgi_vision.detach(con)


def test_without_a_data_root_paths_are_disabled_and_blobs_work(rootless: RunningWorker) -> None:
    with Client(rootless.location) as client:
        for path in ["test/sql/data/coffee.png", str(DATA / "coffee.png")]:
            with pytest.raises(WorkerError) as info:
                client.table("classify", pa.array([path]))
            assert info.value.kind is ErrorKind.PATH_REFUSED
            assert "path arguments are disabled on this worker" in str(info.value)
            assert "--data-root" in str(info.value)
        blob = pa.array([(DATA / "coffee.png").read_bytes()], pa.binary())
        assert labels(client.table("classify", blob))[0] == "espresso"
        assert client.call("top_label", blob).to_pylist() == ["espresso"]


# --- Request limits -------------------------------------------------------------------------

def test_oversized_request_is_refused_and_the_worker_serves_on(confined: RunningWorker) -> None:
    big = pa.array([b"\xff" * (MB + 1024)], pa.binary())
    with Client(confined.location) as client:
        # The client sends a value too large for any request as NULL: no rows for it.
        assert client.table("classify", big).num_rows == 0
        with pytest.raises(WorkerError) as info:  # sent as it is, the worker refuses it
            client.request({"op": "scan", "function": "classify", "token": None},
                           argument_rows([big]))
        assert info.value.kind is ErrorKind.LIMIT_EXCEEDED
        assert f"exceeds the limit of {MB}" in str(info.value)
        if confined.location.startswith("http"):  # refused from the Content-Length alone
            over = httpx.post(f"{confined.location}/v1/rpc", content=b"x" * (MB + 1))
            assert over.status_code == 413
            at_limit = httpx.post(f"{confined.location}/v1/rpc", content=b"x" * MB)
            assert at_limit.status_code == 400  # read and dispatched: the limit is inclusive
        # The same client (over unix, the same pooled connection) keeps working.
        assert client.table("image_classes").num_rows == 1000


# The request bound is kept twice: by each transport, which refuses an oversized request before
# buffering it, and by the dispatcher, whichever transport hands it a request. Each alone:

@pytest.mark.parametrize("transport", ["unix", "http"])
def test_an_oversized_request_is_refused_before_it_is_dispatched(tmp_path: Path,
                                                                 transport: str) -> None:
    with running_worker(transport, "--max-request-mb", "1", workdir=tmp_path) as worker, \
            Client(worker.location) as client:
        client.describe()
        before = dispatched(tmp_path)
        with pytest.raises(WorkerError) as info:  # sent as it is (Client.table sends NULL)
            client.request({"op": "scan", "function": "classify", "token": None},
                           argument_rows([pa.array([b"\xff" * (MB + 1024)], pa.binary())]))
        assert info.value.kind is ErrorKind.LIMIT_EXCEEDED
        assert dispatched(tmp_path) == before  # the transport refused it, unread
        assert client.table("image_classes").num_rows == 1000
        assert dispatched(tmp_path) > before  # the count does see dispatched requests


def test_the_dispatcher_bounds_a_request_on_its_own() -> None:
    dispatcher = Dispatcher(Registry(), ServerLimits(max_request_bytes=1024))
    over = dispatcher.reply(b"x" * 1025, LiveStates())
    assert over.error_kind is ErrorKind.LIMIT_EXCEEDED
    assert "1025 bytes exceeds the limit of 1024" in decode(over.data).header["error"]["message"]
    inclusive = dispatcher.reply(b"x" * 1024, LiveStates())
    assert inclusive.error_kind is ErrorKind.BAD_REQUEST


def test_too_many_rows_per_call_is_refused(confined: RunningWorker) -> None:
    blob = jpeg(300)  # small: 16 of them fit the 1 MB request limit
    with Client(confined.location) as client:
        with pytest.raises(WorkerError) as info:  # 17 rows in one request
            client.request({"op": "scan", "function": "classify", "token": None},
                           argument_rows([pa.array([blob] * 17, pa.binary())]))
        assert info.value.kind is ErrorKind.LIMIT_EXCEEDED
        assert "17 argument rows exceed the limit of 16 per call" in str(info.value)
        # The client reads the worker's limit and sends at most 16 rows a request.
        assert labels(client.table("classify", pa.array([blob] * 17, pa.binary()),
                                   pa.array([1] * 17))) == ["espresso"] * 17
        table = client.table("classify", pa.array([blob] * 16, pa.binary()), pa.array([1] * 16))
        assert labels(table) == ["espresso"] * 16


# --- Per-image limits: --max-image-mb and --max-pixels -----------------------------------------

def test_per_image_byte_and_pixel_limits(tmp_path: Path) -> None:
    small = jpeg(300)  # ~10 KB, 90 kilopixels
    padded = small + bytes(150_000)  # decodable (JPEG ignores trailing bytes) but > 0.1 MB
    large = jpeg(1200)  # < 0.1 MB, but 1.44 megapixels
    assert len(large) < 0.1 * MB < len(padded)
    assert decode_image(padded) is not None and decode_image(large) is not None
    (tmp_path / "padded.jpg").write_bytes(padded)
    with running_worker("unix", "--max-image-mb", "0.1", "--max-pixels", "1000000",
                        "--data-root", str(tmp_path), workdir=tmp_path) as worker, \
            Client(worker.location) as client:
        table = client.table("classify", pa.array([small, padded, large, small], pa.binary()),
                             pa.array([1] * 4))
        assert table.column("input_row").to_pylist() == [0, 3]
        assert labels(table) == ["espresso", "espresso"]
        assert client.table("classify", pa.array(["padded.jpg"])).num_rows == 0


# --- Unix socket: file mode, connection cap, idle timeout -------------------------------------

def test_unix_socket_is_owner_only(workers) -> None:
    mode = os.stat(unix_path(workers("confined", "unix"))).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600


def serves_a_new_connection(worker: RunningWorker) -> bool:
    try:
        with connect(worker) as sock:
            return exchange(sock, DESCRIBE)["ok"] is True
    except (OSError, ConnectionError):
        return False


def eventually(condition: Callable[[], bool], seconds: float = 120) -> bool:
    """Whether ``condition`` holds within ``seconds``, polled: for what a worker does once it
    notices a close, which a loaded machine delays by more than any fixed number of tries."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_connections_over_the_cap_get_a_clear_error(tmp_path: Path) -> None:
    with running_worker("unix", "--max-connections", "3", workdir=tmp_path) as worker:
        held = [connect(worker) for _ in range(3)]
        try:
            for sock in held:
                assert exchange(sock, DESCRIBE)["ok"]  # each holds a slot now
            with connect(worker) as extra:
                error = read_reply(extra)["error"]
                assert error["kind"] == "limit_exceeded"
                assert "already serves 3 connections" in error["message"]
                assert extra.recv(1) == b""  # and closed
            for sock in held:
                assert exchange(sock, DESCRIBE)["ok"]  # the others keep working
            held.pop().close()
            # The worker frees the slot once it sees the close; a new connection then fits.
            assert eventually(lambda: serves_a_new_connection(worker))
        finally:
            for sock in held:
                sock.close()


def test_idle_and_stalled_connections_are_closed(tmp_path: Path) -> None:
    with running_worker("unix", "--idle-timeout", "1", "--max-connections", "1",
                        workdir=tmp_path) as worker:
        with connect(worker) as idle:
            assert exchange(idle, DESCRIBE)["ok"]
            assert idle.recv(1) == b""  # closed by the worker, not by us
        with connect(worker) as stalled:  # half a frame, then silence
            stalled.sendall((100).to_bytes(8, "big") + b"x" * 10)
            assert stalled.recv(1) == b""
        # Both freed the only slot: the worker serves on.
        with Client(worker.location) as client:
            assert client.table("image_classes").num_rows == 1000


def test_symlink_loop_is_refused_not_an_internal_error(tmp_path: Path) -> None:
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    with pytest.raises(FunctionError) as info:
        PathPolicy.confined(tmp_path).source("a", 1 << 20)
    assert info.value.kind is ErrorKind.PATH_REFUSED


# --- Each confinement layer on its own ----------------------------------------------------------
# A confined read is checked twice: ``resolve`` refuses a path whose real location (``..`` and
# symlinks resolved) is outside the root, and ``source`` checks again the file its descriptor
# really opened. The worker tests above see both layers at once; these see each one alone.

def test_the_resolver_alone_refuses_every_escape(tree: dict[str, Path]) -> None:
    """``resolve`` opens nothing: each refusal here is the resolver's own."""
    policy = PathPolicy.confined(tree["root"])
    for path in escapes(tree) + missing_escapes(tree):
        with pytest.raises(FunctionError) as info:
            policy.resolve(path)
        assert info.value.kind is ErrorKind.PATH_REFUSED, path
    assert policy.resolve("sub/../inner_link.png") == str(tree["root"] / "sub" / "coffee.png")
    assert policy.resolve(str(tree["root"])) == str(tree["root"])


@pytest.mark.parametrize("swapped", ["folder", "file"])
@pytest.mark.parametrize("target", ["outside", "root-private"])
def test_a_symlink_swapped_in_after_the_check_is_refused_at_open(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, swapped: str, target: str) -> None:
    """The race the opened-descriptor re-check exists for, made deterministic: the path is
    genuine while ``resolve`` checks it, then a folder or the file itself on that path becomes
    a symlink out of the root before ``source`` opens it."""
    root, elsewhere = tmp_path / "root", tmp_path / target
    (root / "album").mkdir(parents=True)
    elsewhere.mkdir()
    shutil.copy(DATA / "coffee.png", root / "album" / "photo.png")
    shutil.copy(DATA / "cat.png", elsewhere / "photo.png")
    policy = PathPolicy.confined(root)
    assert policy.source("album/photo.png", 10 * MB) == (DATA / "coffee.png").read_bytes()

    def swap() -> None:
        if swapped == "folder":
            (root / "album").rename(root / "album-before")
            (root / "album").symlink_to(elsewhere, target_is_directory=True)
        else:
            (root / "album" / "photo.png").unlink()
            (root / "album" / "photo.png").symlink_to(elsewhere / "photo.png")

    checked = PathPolicy.resolve

    def resolve_then_swap(self: PathPolicy, path: str) -> str:
        real = checked(self, path)
        swap()
        return real

    monkeypatch.setattr(PathPolicy, "resolve", resolve_then_swap)
    with pytest.raises(FunctionError) as info:
        policy.source("album/photo.png", 10 * MB)
    assert info.value.kind is ErrorKind.PATH_REFUSED
    assert "outside the data root" in str(info.value)
    # The checked path really leads out now: only the re-check kept the other file unread.
    assert (root / "album" / "photo.png").read_bytes() == (DATA / "cat.png").read_bytes()


# --- Scan handles and tokens resume only their own call ------------------------------------------

def scan_page(client: Client, function: str, args: pa.RecordBatch, token: str | None
              ) -> tuple[dict, pa.RecordBatch | None]:
    return client.request({"op": "scan", "function": function, "token": token}, args)


@pytest.mark.parametrize("transport", ["subprocess", "unix", "http"])
def test_a_continuation_is_refused_for_any_other_call(transport: str, worker_pool,
                                                      fixture_bytes: dict[str, bytes]) -> None:
    """A scan's handle (stdio, unix) or token (HTTP) presented with other arguments, for
    another function, or by another client is refused; the scan it belongs to is untouched
    and still resumes for its own call."""
    location = worker_pool.get(transport).location
    one_row, two_rows = argument_rows([], 1), argument_rows([], 2)
    image = argument_rows([pa.array([fixture_bytes["coffee.png"]], pa.binary())])
    with Client(location) as owner, Client(location) as other:
        header, batch = scan_page(owner, "image_classes", one_row, None)
        assert header["done"] is False and batch is not None
        rows = batch.column("idx").to_pylist()
        # ``other`` is another connection to the same unix or HTTP worker; over stdio it is
        # another client with a worker of its own.
        replays = [(owner, "image_classes", two_rows), (owner, "classify", image),
                   (other, "image_classes", two_rows), (other, "classify", image)]
        for client, function, args in replays:
            with pytest.raises(WorkerError) as info:
                scan_page(client, function, args, header["token"])
            assert info.value.kind is ErrorKind.INVALID_TOKEN, (function, args.num_rows)
            if client is owner or transport != "subprocess":
                assert "different call" in str(info.value)
        while not header["done"]:
            header, batch = scan_page(owner, "image_classes", one_row, header["token"])
            rows += batch.column("idx").to_pylist() if batch is not None else []
        assert rows == list(range(1000))


@pytest.mark.parametrize("transport", ["subprocess", "unix"])
def test_a_scan_handle_resumes_once(transport: str, worker_pool) -> None:
    """A worker-held scan moves on when it resumes: its old handle, replayed even for the same
    call, is refused instead of running the same tick (and any write-back of it) twice."""
    args = argument_rows([], 1)
    with Client(worker_pool.get(transport).location) as client:
        first, _ = scan_page(client, "image_classes", args, None)
        second, batch = scan_page(client, "image_classes", args, first["token"])
        assert batch is not None and batch.column("idx").to_pylist()[0] == 64
        with pytest.raises(WorkerError) as info:
            scan_page(client, "image_classes", args, first["token"])
        assert info.value.kind is ErrorKind.INVALID_TOKEN
        _, batch = scan_page(client, "image_classes", args, second["token"])
        assert batch is not None and batch.column("idx").to_pylist()[0] == 128


def test_worker_held_scans_are_bounded() -> None:
    """A client that opens scans and never finishes them cannot grow the worker without
    bound: past ``max_scans`` the oldest are dropped (and refused if they come back)."""
    registry = build_registry(VisionContext(load_classifier(), PathPolicy.unrestricted()))
    dispatcher, states = Dispatcher(registry), LiveStates(max_scans=3)
    scan = encode({"op": "scan", "function": "image_classes", "token": None},
                  argument_rows([], 1))
    handles = [decode(dispatcher.handle(scan, states)).header["token"] for _ in range(4)]
    replies = [decode(dispatcher.handle(encode(
        {"op": "scan", "function": "image_classes", "token": handle}, argument_rows([], 1)),
        states)).header for handle in handles]
    assert replies[0]["error"]["kind"] == "invalid_token"  # the oldest, dropped
    assert all(reply["ok"] for reply in replies[1:])


def test_a_second_unix_worker_does_not_steal_a_live_socket(tmp_path: Path) -> None:
    with running_worker("unix", workdir=tmp_path) as first:
        second = subprocess.run([sys.executable, "-m", "vgi_vision", "serve", "--unix",
                                 str(tmp_path / "worker.sock")],
                                capture_output=True, text=True, timeout=120)
        assert second.returncode != 0
        assert "another worker is serving" in second.stderr
        assert "Traceback" not in second.stderr
        with Client(first.location) as client:
            assert client.table("image_classes").num_rows == 1000


# --- compressed bodies ----------------------------------------------------------------------

def compressed_bomb() -> bytes:
    """A ~35 KB request whose zstd body holds 1,024 one-megabyte BLOBs of zeros (1 GB)."""
    batch = pa.record_batch({"image": pa.array([bytes(MB)] * 1024, pa.binary())})
    meta = {HEADER_KEY: json.dumps({"v": PROTOCOL_VERSION, "op": "call",
                                    "function": "top_label"}).encode()}
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression="zstd")
    with pa.ipc.new_stream(sink, batch.schema.with_metadata(meta), options=options) as writer:
        writer.write_batch(batch.replace_schema_metadata(meta))
    return sink.getvalue().to_pybytes()


def test_a_compressed_message_is_refused_before_it_is_decompressed() -> None:
    bomb = compressed_bomb()
    assert len(bomb) < 64 * 1024
    with pytest.raises(ProtocolError, match="compressed Arrow IPC bodies are not accepted"):
        decode(bomb)  # the one decoder of both sides: workers and clients alike


@pytest.mark.parametrize("transport", ["unix", "http"])
def test_a_compression_bomb_costs_the_worker_no_memory(transport: str, tmp_path: Path) -> None:
    bomb = compressed_bomb()
    with running_worker(transport, workdir=tmp_path) as worker:
        assert worker.process is not None and worker.location is not None
        with Client(worker.location) as client:
            assert client.table("image_classes").num_rows == 1000
        at_rest = kilobytes(worker.process.pid, "VmRSS")
        for _ in range(2):
            if transport == "unix":
                with connect(worker) as sock:
                    header = exchange(sock, bomb)
            else:
                header = decode(httpx.post(f"{worker.location}/v1/rpc", content=bomb,
                                           timeout=60).content).header
            assert header["error"]["kind"] == "bad_request"
            assert "compressed" in header["error"]["message"]
        # Decompressed, each request would have cost the worker a gigabyte.
        assert kilobytes(worker.process.pid, "VmHWM") < at_rest + 128 * 1024
        with Client(worker.location) as client:
            assert client.table("image_classes").num_rows == 1000
