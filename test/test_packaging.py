"""The distribution's package list in ``pyproject.toml`` matches the source tree.

The packages are listed rather than found (``vgi_vision.models`` maps the top-level
``models/`` folder into the package, which a search of ``vgi_vision/`` cannot see), so a
package added to the code must be added to the list too, or the wheel ships without it.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SETUPTOOLS = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_package_folder_is_listed():
    folders = {".".join(init.parent.relative_to(REPO).parts)
               for init in (REPO / "vgi_vision").rglob("__init__.py")}
    assert folders, "no packages found under vgi_vision/"
    assert sorted(folders - set(SETUPTOOLS["packages"])) == []


def test_the_listed_packages_exist():
    mapped = SETUPTOOLS["package-dir"]
    for package in SETUPTOOLS["packages"]:
        folder = REPO / mapped.get(package, package.replace(".", "/"))
        assert folder.is_dir(), f"{package}: no folder {folder}"


def test_the_models_folder_is_the_models_package():
    assert SETUPTOOLS["package-dir"]["vgi_vision.models"] == "models"
    assert (REPO / "models" / "efficientnet-lite0" / "model.onnx").is_file()
    assert not (REPO / "vgi_vision" / "models").exists()
