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


def assert_report(report: str, headline: str, sections: dict[str, str]) -> None:
    """``report`` starts with ``headline`` and shows each of ``sections`` as the runner lays
    a section out: its name and a colon, then its text indented by four spaces."""
    assert report.startswith(headline), report
    for name, text in sections.items():
        block = f"{name}:\n" + textwrap.indent(text, "    ")
        assert block in report, f"no section {block!r} in:\n{report}"


def parse_failure(directory: pathlib.Path, text: str) -> str:
    with pytest.raises(SqlLogicParseError) as excinfo:
        run(directory, text)
    return str(excinfo.value)
