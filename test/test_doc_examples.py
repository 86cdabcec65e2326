"""Every example in README.md and docs/*.md runs as written, and shows what it prints.

A fenced ``python``, ``sql`` or ``sh``/``shell``/``bash`` block is an example. Each page runs
in a scratch folder that links the repository's top-level entries (so ``test/sql/data/...``
resolves as from the repository root and what an example writes, say ``results.lance``, stays
out of the checkout):

- its python blocks in order in one fresh interpreter and one namespace: a page reads as one
  script (``test/doc_page_runner.py``);
- its sql blocks in order on one DuckDB connection with ``vision`` attached (a private worker):
  a table one block creates is there for the next;
- each sh block on its own with bash (``-euo pipefail``), the package's commands first on
  ``PATH``. Servers a block starts in the background (``cmd &``) are stopped with the block's
  process group when it ends.

A block followed by an output block (a fence with no language, or ``text``) must print that
output: compared token by token, numbers at the precision shown (``0.951`` matches
0.95106...). A block that cannot run here (a cluster address, files under /etc) carries
``<!-- not run: why -->`` on the line before its fence; those are counted and kept few, and
any other block that fails fails its page. ``docs/functions.md`` is generated from the
worker's catalog (its signature blocks are not statements); its examples run in
``test/worker/test_catalog_examples.py`` and its freshness is checked in ``test/cli/test_cli.py``.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest

import vgi_vision

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
GENERATED = {REPO / "docs" / "functions.md"}
LANGUAGES = {"python": "python", "sql": "sql", "sh": "sh", "shell": "sh", "bash": "sh"}
OUTPUT_LANGUAGES = {"", "text"}
NOT_RUN = re.compile(r"<!--.*\bnot run: (?P<reason>.+?)\s*-->")
FENCE = re.compile(r"^```(?P<language>[\w-]*)\s*$")
#: How many blocks may be marked ``not run`` across all pages; raise it only with a reason.
MOST_EXCLUDED = 10


@dataclass(frozen=True)
class Block:
    """One fenced example: where it is, what it runs, what it should print."""

    page: Path
    line: int
    language: str
    source: str
    expected: str | None
    not_run: str | None

    def __str__(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line} ({self.language})"


def fences(text: str) -> Iterator[tuple[int, str, str, str]]:
    """Each fenced block as (line of its opening fence, language, body, line before it)."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        before = lines[i - 1] if i else ""
        yield i + 1, opening["language"], "\n".join(lines[i + 1:end]) + "\n", before
        i = end + 1


def examples(page: Path) -> list[Block]:
    """The runnable blocks of a page, each with the output block right after it, if any."""
    text = page.read_text(encoding="utf-8")
    found = list(fences(text))
    lines = text.splitlines()
    blocks = []
    for index, (line, language, body, before) in enumerate(found):
        if language not in LANGUAGES:
            continue
        expected = None
        if index + 1 < len(found):
            next_line, next_language, next_body, _ = found[index + 1]
            closing = line + body.count("\n")  # 0-based index of this block's closing fence
            between = lines[closing + 1:next_line - 1]
            if next_language in OUTPUT_LANGUAGES and not any(s.strip() for s in between):
                expected = next_body
        marker = NOT_RUN.search(before)
        blocks.append(Block(page, line, LANGUAGES[language], body, expected,
                            marker["reason"] if marker else None))
    return blocks


ALL = [block for page in PAGES if page not in GENERATED for block in examples(page)]
RUN_PAGES = sorted({b.page for b in ALL if b.not_run is None})

NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
TOKEN = re.compile(rf"{NUMBER.pattern}|\w+|[^\w\s]")
BOX = str.maketrans({c: " " for c in "│┌┐└┘├┤┬┴┼─"})


def tokens(text: str) -> list[str]:
    return TOKEN.findall(text.translate(BOX))


def same_token(shown: str, got: str) -> bool:
    """Equal, or both numbers and ``got`` rounds to ``shown`` at the precision shown."""
    if shown == got:
        return True
    if not (NUMBER.fullmatch(shown) and NUMBER.fullmatch(got)) or "e" in shown.lower():
        return False
    decimals = len(shown.partition(".")[2])
    return math.isclose(round(float(got), decimals), float(shown), abs_tol=1e-12)


def output_matches(shown: str, got: str) -> bool:
    expected, actual = tokens(shown), tokens(got)
    return len(expected) == len(actual) and all(map(same_token, expected, actual))


def check_output(block: Block, got: str) -> str | None:
    if block.expected is None or output_matches(block.expected, got):
        return None
    return f"{block}: shows\n{block.expected}but prints\n{got}"


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A folder that looks like the repository root to the examples, writes kept apart."""
    folder = tmp_path / "repo"
    folder.mkdir()
    for entry in REPO.iterdir():
        if not entry.name.startswith("."):
            (folder / entry.name).symlink_to(entry)
    return folder


def example_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def run_python(blocks: list[Block], workdir: Path) -> list[str]:
    sources = workdir.parent / "blocks.json"
    results_file = workdir.parent / "results.json"
    sources.write_text(json.dumps([b.source for b in blocks]), encoding="utf-8")
    subprocess.run([sys.executable, str(REPO / "test" / "doc_page_runner.py"), str(sources),
                    str(results_file)], cwd=workdir, env=example_env(), check=True, timeout=240)
    results = json.loads(results_file.read_text(encoding="utf-8"))
    failures = []
    for block, result in zip(blocks, results, strict=False):
        if result["error"]:
            failures.append(f"{block}: raised\n{result['error']}")
        elif problem := check_output(block, result["stdout"]):
            failures.append(problem)
    return failures


def run_sql(blocks: list[Block], workdir: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    monkeypatch.chdir(workdir)  # the private worker resolves paths from here
    con = duckdb.connect()
    vgi_vision.attach(con)
    failures = []
    try:
        for block in blocks:
            try:
                relation = con.sql(block.source)
            except duckdb.Error as exc:
                failures.append(f"{block}: raised {exc}")
                break
            if problem := check_output(block, "" if relation is None else str(relation)):
                failures.append(problem)
    finally:
        vgi_vision.detach(con)
        con.close()
    return failures


def run_sh(block: Block, workdir: Path) -> list[str]:
    process = subprocess.Popen(["bash", "-euo", "pipefail", "-c", block.source], cwd=workdir,
                               env=example_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = process.communicate(timeout=180)
    finally:  # whatever the block left running in the background
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        process.wait()
    if process.returncode != 0:
        return [f"{block}: exit {process.returncode}\n{out}{err}"]
    problem = check_output(block, out)
    return [problem] if problem else []


@pytest.mark.parametrize("page", RUN_PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_page_examples_run_as_written(page: Path, workdir: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = [b for b in ALL if b.page == page and b.not_run is None]
    failures = []
    python = [b for b in blocks if b.language == "python"]
    sql = [b for b in blocks if b.language == "sql"]
    if python:
        failures += run_python(python, workdir)
    if sql:
        failures += run_sql(sql, workdir, monkeypatch)
    for block in (b for b in blocks if b.language == "sh"):
        failures += run_sh(block, workdir)
    assert not failures, "\n\n".join(failures)


def test_examples_are_found_and_exclusions_are_few() -> None:
    excluded = [b for b in ALL if b.not_run is not None]
    assert len(ALL) - len(excluded) >= 20, "the pages' examples were not found"
    assert len(excluded) <= MOST_EXCLUDED, "\n".join(f"{b}: {b.not_run}" for b in excluded)


def test_output_comparison_uses_the_precision_shown() -> None:
    assert output_matches("│ espresso │ 0.951 │", "│ espresso │ 0.9510622620582581 │")
    assert not output_matches("│ espresso │ 0.951 │", "│ espresso │ 0.9519 │")
    assert not output_matches("│ tea cup │ 3 │", "│ tea cup │ 4 │")
    assert not output_matches("a b", "a b c")
