"""A worker's C allocator keeps the pages of a freed multi-megabyte buffer for the next one.

Each case runs in a fresh interpreter, so the setting under test is the only one made: a
buffer the size of a few phone photos is filled, freed and filled again, and the page faults
of the second fill are counted. With glibc's defaults the freed block goes back to the kernel
and every page of the second one faults again; tuned, the second fill reuses the first's pages.
"""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO

PROBE = """
import resource, sys
from vgi_vision.worker.serve.allocator import tune_for_large_buffers
if sys.argv[1] == "tuned":
    assert tune_for_large_buffers()
size = 16 << 20
block = b"x" * size
del block
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
block = b"y" * size
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
PAGES = (16 << 20) // 4096


def page_faults_of_a_second_buffer(setting: str) -> int:
    done = subprocess.run([sys.executable, "-c", PROBE, setting], cwd=REPO, check=True,
                          capture_output=True, text=True, timeout=60)
    return int(done.stdout)


def test_a_tuned_worker_reuses_the_pages_of_a_freed_buffer() -> None:
    assert page_faults_of_a_second_buffer("tuned") < PAGES // 10


def test_the_default_allocator_faults_every_page_again() -> None:
    """The setting is what makes the difference (not something else in the interpreter)."""
    assert page_faults_of_a_second_buffer("default") > PAGES // 2
