"""What makes a worker safe to expose (2/3): paths confined to the data root, and the
request limits of the confined workers.

Every test runs real worker processes and talks to them over real sockets; "no work was done"
is proven from the worker's own log, which has one line per dispatched request.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import duckdb
import httpx
import pyarrow as pa
import pytest
from conftest import DATA
from security_probes import MB, jpeg, labels, unix_path

import vgi_vision
from vgi_vision.client.client import Client
from vgi_vision.errors import WorkerError
from vgi_vision.protocol import ErrorKind, argument_rows, decode, encode
from vgi_vision.testing.launch import RunningWorker, running_worker
from vgi_vision.worker.paths import PathPolicy
from vgi_vision.worker.registry import FunctionError

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
        with pytest.raises(WorkerError, match="'sub/missing.png' does not exist"):
            client.table("classify", pa.array(["sub/missing.png"]))
        with pytest.raises(WorkerError, match="'sub' is a folder"):
            client.call("top_label", pa.array(["sub"]))


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
        # Inside the root, a missing file is only a missing file.
        with pytest.raises(WorkerError) as info:
            client.table("classify", pa.array(["sub/missing.png"]))
        assert info.value.kind is ErrorKind.INVALID_ARGUMENT


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


# --- Request limits on the confined workers ------------------------------------------------

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


# --- The unix socket's file mode ---------------------------------------------------------------

def test_unix_socket_is_owner_only(workers) -> None:
    mode = os.stat(unix_path(workers("confined", "unix"))).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600


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
