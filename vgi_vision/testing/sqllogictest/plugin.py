"""The pytest side: a ``.test`` file as a ``File`` node, one ``Item`` per requirement variant."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator, Mapping

import pytest

from vgi_vision.testing.sqllogictest.records import (
    Requirement,
    SqlLogicTestError,
    SqlLogicTestSkip,
)
from vgi_vision.testing.sqllogictest.runner import run_file


class SqlLogicTestItem(pytest.Item):
    """One .test file as one test; failures print the runner's report."""

    def __init__(
        self, *, requirements: Mapping[str, Requirement], strict: bool, **kwargs: object
    ) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._requirements = requirements
        self._strict = strict

    def _display_path(self) -> str:
        try:
            return str(self.path.relative_to(self.config.rootpath))
        except ValueError:
            return str(self.path)

    def runtest(self) -> None:
        try:
            run_file(
                self.path,
                self._requirements,
                strict=self._strict,
                display_path=self._display_path(),
            )
        except SqlLogicTestSkip as skip:
            reason = skip.reason
        else:
            return
        # Report the skip at the .test file, not at this module, the way
        # pytest reports skips coming from markers.
        raise pytest.skip.Exception(reason, _use_item_location=True)

    def repr_failure(
        self, excinfo: pytest.ExceptionInfo[BaseException], style: str | None = None
    ) -> str:
        if isinstance(excinfo.value, SqlLogicTestError):
            return str(excinfo.value)
        return str(super().repr_failure(excinfo, style=style))  # type: ignore[arg-type]

    def reportinfo(self) -> tuple[pathlib.Path, int, str]:
        return self.path, 0, f"sqllogictest: {self._display_path()}"


class SqlLogicTestFile(pytest.File):
    """A collected .test file: one ``SqlLogicTestItem`` per variant of its requirements."""

    def __init__(
        self, *, variants: Mapping[str, Mapping[str, Requirement]], strict: bool, **kwargs: object
    ) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._variants = variants
        self._strict = strict

    def collect(self) -> Iterator[SqlLogicTestItem]:
        for variant, requirements in self._variants.items():
            name = f"{self.path.name}[{variant}]" if variant else self.path.name
            yield SqlLogicTestItem.from_parent(
                self, name=name, requirements=requirements, strict=self._strict
            )


def collect_file(
    parent: pytest.Collector,
    file_path: pathlib.Path,
    requirements: Mapping[str, Requirement],
    *,
    strict: bool = False,
    variants: Mapping[str, Mapping[str, Requirement]] | None = None,
) -> pytest.File | None:
    """Collector for ``pytest_collect_file``: a File node for ``*.test``, else None.

    ``requirements`` maps ``require NAME`` to a setup callable (which may
    return a cleanup). Unknown names skip the file, as in DuckDB, unless
    ``strict`` is set, in which case they fail it. ``variants`` runs the file
    once per entry instead, each with its own requirements, as items named
    ``file.test[variant]`` (e.g. the same SQL over several transports).
    """
    if file_path.suffix != ".test":
        return None
    return SqlLogicTestFile.from_parent(
        parent, path=file_path, variants=variants or {"": requirements}, strict=strict
    )
