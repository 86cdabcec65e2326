"""Shared fixtures: workers per transport, the SQL suite's transport, and the fixture images.

``--transport`` (or ``TRANSPORT``) picks the transport ``require vgi_vision`` attaches over in
``test/sql/*.test``; the runner starts a unix or HTTP worker itself. ``--fail-on-skip`` turns
any skipped test into a failed run: CI uses it so that no transport leg can pass by skipping.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest

from vgi_vision.client.client import Client
from vgi_vision.testing import sqllogictest
from vgi_vision.testing.launch import TRANSPORTS, RunningWorker, running_worker
from vgi_vision.testing.s3server import LocalS3, local_s3

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "test" / "sql" / "data"

#: What the committed photographs show: each must have one of these among its top 5.
EXPECTED_TOP5 = {
    "cat.png": {"tabby cat", "tiger cat", "Egyptian Mau"},
    "coffee.png": {"espresso"},
    "grace_hopper.jpg": {"military uniform", "academic gown", "graduation cap"},
    "rocket.jpg": {"missile", "missile (projectile)"},
}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--transport", choices=TRANSPORTS + ("all",),
                     default=os.environ.get("TRANSPORT", "all"),
                     help="transport(s) the SQL suite attaches its worker over (default: "
                          "all three, each .test file once per transport)")
    parser.addoption("--fail-on-skip", action="store_true",
                     help="fail the run if any test was skipped")


#: Where the SQL suite's ``s3`` flavour finds the fixture images: test/sql/data/* under it.
SQL_OBJECTS = "s3://sql-data/data/"


class Workers:
    """One worker per transport (and flavour) for the whole session, started on first use.

    The ``lance`` flavour writes results back to a LanceDB folder of its own; the ``s3``
    flavour reads objects from the session's S3 server under ``SQL_OBJECTS`` as well.
    """

    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="vgi-workers-"))
        self._running: dict[tuple[str, str], tuple[object, RunningWorker]] = {}

    def get(self, transport: str, flavour: str = "plain") -> RunningWorker:
        key = (transport, flavour)
        if key not in self._running:
            folder = self.tmp / f"{transport}-{flavour}"
            flags = serve_flags(transport) + (["--lance", str(self.lance_uri(transport))]
                                              if flavour == "lance" else [])
            env = None
            if flavour == "s3":
                env = sql_objects().env()
                flags += ["--data-root", SQL_OBJECTS] if transport != "subprocess" else []
            context = running_worker(transport, *flags, env=env, workdir=folder)
            self._running[key] = (context, context.__enter__())
        return self._running[key][1]

    def lance_uri(self, transport: str) -> Path:
        return self.tmp / f"{transport}-lance.db"

    def stop(self) -> None:
        for context, _ in self._running.values():
            context.__exit__(None, None, None)
        self._running.clear()
        shutil.rmtree(self.tmp, ignore_errors=True)


def serve_flags(transport: str) -> list[str]:
    """Socket and HTTP workers read paths only under a data root: the repository here, so
    the relative paths in the SQL suite mean the same on every transport."""
    return [] if transport == "subprocess" else ["--data-root", str(REPO)]


_workers: Workers | None = None
_s3: contextlib.ExitStack | None = None
_s3_server: LocalS3 | None = None


def shared_s3() -> LocalS3:
    """The session's S3 server on loopback, started on first use, stopped at the end."""
    global _s3, _s3_server
    if _s3_server is None:
        _s3 = contextlib.ExitStack()
        _s3_server = _s3.enter_context(local_s3())
    return _s3_server


def sql_objects() -> LocalS3:
    """The session's S3 server, holding the SQL suite's images under ``SQL_OBJECTS``."""
    server = shared_s3()
    bucket = SQL_OBJECTS.removeprefix("s3://").split("/")[0]
    if bucket not in {b["Name"] for b in server.client().list_buckets()["Buckets"]}:
        server.create_bucket(bucket)
        for image in sorted(DATA.iterdir()):
            server.put(bucket, f"data/{image.name}", image.read_bytes())
        server.put(bucket, "private/secret.png", (DATA / "cat.png").read_bytes())
    return server


def workers() -> Workers:
    global _workers
    if _workers is None:
        _workers = Workers()
    return _workers


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _workers is not None:
        _workers.stop()
    if _s3 is not None:
        _s3.close()
    if session.config.getoption("--fail-on-skip"):
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        skipped = reporter.stats.get("skipped", []) if reporter else []
        if skipped:
            reporter.write_line(f"--fail-on-skip: {len(skipped)} test(s) skipped",
                                red=True)
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_collect_file(parent: pytest.Collector, file_path: Path):
    chosen = parent.config.getoption("--transport")
    transports = TRANSPORTS if chosen == "all" else (chosen,)
    variants = {t: {"vgi_vision": attach_over(t), "vgi_vision_lance": attach_over(t, "lance"),
                    "vgi_vision_s3": attach_over(t, "s3")}
                for t in transports}
    return sqllogictest.collect_file(parent, file_path, {}, strict=True, variants=variants)


def attach_over(transport: str, flavour: str = "plain"):
    """``require vgi_vision`` (``_lance``): attach the session's worker for ``transport`` as
    ``vision`` (one that writes results back to LanceDB); ``_s3``: one that also reads
    ``SQL_OBJECTS`` (a private worker confined to it and the repository, as the others are)."""

    def attach_worker(con):
        import vgi_vision

        worker = workers().get(transport, flavour)
        if worker.location is None and flavour == "lance":
            vgi_vision.attach(con, lance=str(workers().lance_uri(transport)))
        elif worker.location is None and flavour == "s3":
            with mock.patch.dict(os.environ, sql_objects().env()):  # the worker's environment
                vgi_vision.attach(con, data_root=[str(REPO), SQL_OBJECTS])
        else:
            vgi_vision.attach(con, worker.location)
        return lambda: vgi_vision.detach(con)

    return attach_worker


@pytest.fixture(scope="session")
def worker_pool() -> Workers:
    return workers()


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="session")
def clients(worker_pool: Workers) -> Iterator[dict[str, Client]]:
    """One client per transport for the session (a private worker for subprocess)."""
    opened: dict[str, Client] = {}

    yield _LazyClients(worker_pool, opened)
    for c in opened.values():
        c.close()


class _LazyClients(dict):
    def __init__(self, pool: Workers, opened: dict[str, Client]) -> None:
        super().__init__()
        self.pool, self.opened = pool, opened

    def __missing__(self, transport: str) -> Client:
        location = self.pool.get(transport).location
        self.opened[transport] = self[transport] = Client(location)
        return self[transport]


@pytest.fixture
def client(transport: str, clients: dict[str, Client]) -> Client:
    return clients[transport]


@pytest.fixture(scope="session")
def fixture_bytes() -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(DATA.iterdir()) if p.is_file()}


@pytest.fixture
def pixel_loads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """The sizes of the images whose pixels Pillow decodes during the test: a decoder that
    refuses an image from its header must leave this empty."""
    from PIL import ImageFile

    loads: list[tuple[int, int]] = []
    original = ImageFile.ImageFile.load

    def spy(self: ImageFile.ImageFile) -> object:
        loads.append(self.size)
        return original(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    return loads


@pytest.fixture(scope="session")
def inprocess_worker():
    """A worker in the test process for the whole session: its dispatcher, no process."""
    from vgi_vision.transports.inprocess import TRANSPORT_NAME
    from vgi_vision.worker.build import WorkerConfig, build_worker

    worker = build_worker(WorkerConfig(transport=TRANSPORT_NAME))
    yield worker
    worker.close()


@pytest.fixture
def inprocess(inprocess_worker):
    """Makes transports to the session's in-process worker, each with its own scan states,
    for binding and client tests where a worker process is not what is tested."""
    from vgi_vision.transports.inprocess import InProcessTransport

    return lambda: InProcessTransport(inprocess_worker.dispatcher)


def kilobytes(pid: int, field: str) -> int:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory):
    """The gallery tests' store (two runs and a hostile row; ``gallery_store.build_store``),
    one per test module."""
    from gallery_store import build_store

    return build_store(tmp_path_factory.mktemp("gallery"))


@pytest.fixture(scope="session")
def s3() -> LocalS3:
    """An S3-protocol server on loopback for the session (``vgi_vision.testing.s3server``)."""
    return shared_s3()


@pytest.fixture
def s3_env(s3: LocalS3, monkeypatch: pytest.MonkeyPatch) -> LocalS3:
    """The server, with the standard AWS variables naming it set for this test (and so for
    the workers and commands it starts)."""
    for name, value in s3.env().items():
        monkeypatch.setenv(name, value)
    return s3
