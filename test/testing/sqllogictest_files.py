"""Small ``.test`` files written to a folder and run through the sqllogictest runner:
the helpers the runner's tests share."""

from __future__ import annotations

import pathlib
import textwrap

import pytest

from vgi_vision.testing.sqllogictest import SqlLogicParseError, SqlLogicTestFailure, run_file


def write(directory: pathlib.Path, text: str, name: str = "case.test") -> pathlib.Path:
    path = directory / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def run(directory: pathlib.Path, text: str, **kwargs: object) -> None:
    run_file(write(directory, text), display_path="case.test", **kwargs)  # type: ignore[arg-type]


def failure(directory: pathlib.Path, text: str, **kwargs: object) -> str:
    with pytest.raises(SqlLogicTestFailure) as excinfo:
        run(directory, text, **kwargs)
    return str(excinfo.value)


def parse_failure(directory: pathlib.Path, text: str) -> str:
    with pytest.raises(SqlLogicParseError) as excinfo:
        run(directory, text)
    return str(excinfo.value)
