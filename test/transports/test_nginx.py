"""Scale-out on a stock load balancer: two HTTP replicas sharing a token key behind nginx.

nginx runs in the foreground from a config written to a temporary folder (the one in
docs/deploy-nginx.md, with test paths and ports), round-robin with keep-alive upstream
connections. Each response names the replica that served it (``X-Upstream``), which shows a
scan's continuations hopping between replicas and its rows still coming back exactly once.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import httpx
import pytest
from conftest import DATA

import vgi_vision
from vgi_vision.protocol import argument_rows, decode, encode
from vgi_vision.testing.launch import RunningWorker, start_http

KEY = "6e67696e782d7265706c696361732d736861726564"  # hex: the replicas' shared token key
TOKEN = "bearer-token-passed-through-nginx"

CONFIG = """\
{user}worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
daemon off;

events {{
    worker_connections 256;
}}

http {{
    access_log {tmp}/access.log;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;

    upstream vgi_vision {{
        server {upstream_a};
        server {upstream_b};
        keepalive 16;
        keepalive_timeout 5s;
    }}

    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 256m;

        location / {{
            proxy_pass http://vgi_vision;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_read_timeout 600s;
            add_header X-Upstream $upstream_addr always;
        }}
    }}
}}
"""


def nginx_binary() -> str:
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None)
    if found is None:
        pytest.fail("test_nginx.py needs the nginx binary: install it with "
                    "`apt-get install -y nginx` (Debian/Ubuntu)", pytrace=False)
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_nginx(tmp: Path, upstreams: list[str]) -> tuple[subprocess.Popen, str]:
    """nginx in the foreground on a free loopback port, once it answers through to a replica."""
    binary = nginx_binary()
    for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp / name).mkdir(exist_ok=True)
    port = free_port()
    # As root, nginx's workers would switch to "nobody", who cannot use the temp folders here.
    user = "user root;\n" if os.geteuid() == 0 else ""
    config = tmp / "nginx.conf"
    config.write_text(CONFIG.format(user=user, tmp=tmp, port=port, upstream_a=upstreams[0],
                                    upstream_b=upstreams[1]))
    with open(tmp / "stderr.log", "wb") as stderr:
        process = subprocess.Popen([binary, "-p", str(tmp), "-c", str(config),
                                    "-e", str(tmp / "error.log")],
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=stderr)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            pytest.fail(f"nginx exited with code {process.returncode}:\n"
                        f"{(tmp / 'stderr.log').read_text()}{(tmp / 'error.log').read_text()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=5).text == "ok":
                return process, url
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("nginx did not start serving within 30 s")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def balancer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, set[str]]]:
    """The load balancer's URL and its upstreams' ``host:port``s."""
    tmp = tmp_path_factory.mktemp("nginx")
    env = {"VGI_VISION_TOKEN_KEY": KEY, "VGI_VISION_AUTH_TOKEN": TOKEN}
    replicas: list[RunningWorker] = []
    process = None
    try:
        for name in ("a", "b"):
            replicas.append(start_http(tmp / f"{name}.port", env=env,
                                       log_file=tmp / f"{name}.log"))
        upstreams = [r.location.removeprefix("http://") for r in replicas]
        process, url = start_nginx(tmp, upstreams)
        yield url, set(upstreams)
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=30)
        for replica in replicas:
            replica.stop()


def test_sql_through_the_balancer(balancer: tuple[str, set[str]]) -> None:
    url, _ = balancer
    con = duckdb.connect()
    vgi_vision.attach(con, url, auth_token=TOKEN)
    try:
        assert con.execute("SELECT count(*) FROM vision.image_classes()").fetchone() == (1000,)
        assert con.execute("SELECT min(idx), max(idx), count(DISTINCT idx), "
                           "count(DISTINCT label) FROM vision.image_classes()"
                           ).fetchone() == (0, 999, 1000, 1000)
        assert con.execute("SELECT idx, label, wnid FROM vision.image_classes() "
                           "LIMIT 1 OFFSET 500").fetchone() == (500, "cliff dwelling",
                                                                 "n03042490")
        assert con.execute("SELECT count(*) FROM (SELECT idx, row_number() OVER () - 1 AS pos "
                           "FROM vision.image_classes()) WHERE idx <> pos").fetchone() == (0,)
        blob = (DATA / "coffee.png").read_bytes()
        head = con.execute("SELECT rank, label FROM vision.classify(?) ORDER BY rank",
                           [blob]).fetchall()
        assert len(head) == 5 and head[0] == (1, "espresso")
        assert con.execute("SELECT vision.top_label(?)", [blob]).fetchone() == ("espresso",)
    finally:
        vgi_vision.detach(con)


def test_continuations_hop_between_replicas(balancer: tuple[str, set[str]]) -> None:
    url, upstreams = balancer
    served_by: list[str] = []
    idx: list[int] = []
    token = None
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        for _ in range(1000):
            request = encode({"op": "scan", "function": "image_classes", "token": token},
                             argument_rows([], 1))
            reply = http.post("/v1/rpc", content=request)
            assert reply.status_code == 200, reply.text
            served_by.append(reply.headers["X-Upstream"])
            message = decode(reply.content)
            idx.extend(message.batch.column("idx").to_pylist() if message.batch else [])
            if message.header["done"]:
                break
            token = message.header["token"]
    assert idx == list(range(1000))
    assert set(served_by) == upstreams
    # Round robin: a page minted by one replica is continued on the other, page after page.
    assert all(a != b for a, b in zip(served_by, served_by[1:], strict=False))


def test_unauthenticated_requests_stop_at_the_replicas(balancer: tuple[str, set[str]]) -> None:
    url, _ = balancer
    reply = httpx.post(f"{url}/v1/rpc", content=encode({"op": "describe"}))
    assert reply.status_code == 401
    assert decode(reply.content).header["error"]["kind"] == "unauthorized"
