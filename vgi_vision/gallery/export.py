"""The gallery's export of the current view: the rows as JSON, or as CSV safe to open in a
spreadsheet.

Labels and paths are stored data, written by whoever named the files (a file may be called
``=HYPERLINK(...).png``). A spreadsheet reads a CSV cell starting with ``=``, ``+``, ``-``,
``@``, a tab or a carriage return as a formula, so such a cell is written with a leading
``'`` (OWASP's advice on CSV injection), which spreadsheets show as text. JSON is read by
programs, not evaluated: it carries every value exactly as stored.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import Any

#: First characters that make a spreadsheet evaluate a cell.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_cell(value: Any) -> Any:
    """``value`` as a CSV cell a spreadsheet shows as text, never runs as a formula."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def as_csv(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """``rows`` as CSV with a header of ``columns``, each text cell made spreadsheet-safe."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns))
    writer.writeheader()
    writer.writerows({k: spreadsheet_cell(v) for k, v in row.items()} for row in rows)
    return out.getvalue()


def as_json(rows: Sequence[dict[str, Any]]) -> str:
    """``rows`` as a JSON list, values as stored."""
    return json.dumps(list(rows))
