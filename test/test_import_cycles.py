"""No two modules of the package import each other, directly or around a loop: the import
graph (``scripts/import_cycles.py``, every import statement counted, ``TYPE_CHECKING`` ones
too) has no cycle."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "import_cycles.py"


def import_cycles(*root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, root)],
                          capture_output=True, text=True, timeout=60, check=False)


def test_the_package_has_no_import_cycle() -> None:
    run = import_cycles()
    assert run.returncode == 0, run.stdout
    assert run.stdout.strip().endswith("0 import cycle(s)")


def test_a_cycle_hidden_behind_type_checking_is_found(tmp_path: Path) -> None:
    package = tmp_path / "vgi_vision"
    (package / "store").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "store" / "__init__.py").write_text("")
    (package / "store" / "tables.py").write_text("from vgi_vision import columns\n")
    (package / "columns.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from vgi_vision.store import tables\n")
    (package / "apart.py").write_text("from . import columns\n")
    run = import_cycles(tmp_path)
    assert run.returncode == 1
    assert run.stdout.splitlines() == [
        "cycle of 2 modules: vgi_vision.columns, vgi_vision.store.tables",
        "1 import cycle(s)"]
