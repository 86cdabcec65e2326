"""The DuckDB side imports nothing of the worker side.

Attaching to a remote worker must not load the model runtime, LanceDB, the imaging stack or
any ``vgi_vision.worker`` module into the user's process. Each check runs in a fresh Python,
so what earlier tests imported into this one does not count.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO

#: Top-level packages of the worker side; ``vgi_vision.worker`` and its submodules are checked
#: by prefix.
WORKER_PACKAGES = ("onnxruntime", "lancedb", "lance", "PIL")

REPORT = """
import json, sys
print(json.dumps(sorted(m for m in sys.modules
                        if m == "vgi_vision.worker" or m.startswith("vgi_vision.worker.")
                        or m == "vgi_vision.transports.inprocess"
                        or m.split(".")[0] in {packages!r})))
"""


def worker_modules_loaded(code: str) -> list[str]:
    """Worker-side modules in ``sys.modules`` after running ``code`` in a fresh Python."""
    result = subprocess.run([sys.executable, "-c", code + REPORT.format(packages=WORKER_PACKAGES)],
                            capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_attaching_to_a_remote_worker_loads_no_worker_code(worker_pool) -> None:
    location = worker_pool.get("http").location
    loaded = worker_modules_loaded(f"""
import duckdb
import vgi_vision
con = duckdb.connect()
vgi_vision.attach(con, location={location!r})
assert con.execute("SELECT vision.top_label('test/sql/data/coffee.png')").fetchone() \\
    == ("espresso",), "the query did not run"
assert con.execute("SELECT count(*) FROM vision.classify('test/sql/data/cat.png')"
                   ).fetchone() == (5,)
vgi_vision.detach(con)
""")
    assert loaded == []


@pytest.mark.parametrize("module", ["vgi_vision", "vgi_vision.cli", "vgi_vision.client.client",
                                    "vgi_vision.client.binding", "vgi_vision.transports.stdio",
                                    "vgi_vision.transports.unix", "vgi_vision.transports.http",
                                    "vgi_vision.protocol"])
def test_client_modules_import_no_worker_code(module: str) -> None:
    assert worker_modules_loaded(f"import {module}") == []
