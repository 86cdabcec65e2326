"""Run one page's Python examples in order, in one namespace, as a reader would.

``python test/doc_page_runner.py BLOCKS.json RESULTS.json`` executes each source of the JSON
list in a shared namespace (a page's snippets build on each other, like one script), captures
what each prints, and writes ``[{"stdout": ..., "error": ...}]``, one entry per block run. The
first failing block ends the page: later blocks depend on it, so their errors would only echo
it. Used by ``test/test_doc_examples.py`` in a fresh interpreter per page.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import traceback


def main(blocks_file: str, results_file: str) -> None:
    with open(blocks_file, encoding="utf-8") as f:
        sources: list[str] = json.load(f)
    namespace: dict[str, object] = {"__name__": "__main__"}
    results: list[dict[str, str | None]] = []
    for index, source in enumerate(sources):
        printed = io.StringIO()
        error = None
        with contextlib.redirect_stdout(printed):
            try:
                exec(compile(source, f"<python block {index + 1}>", "exec"), namespace)
            except Exception:  # the example's failure is the result, reported per block
                error = traceback.format_exc()
        results.append({"stdout": printed.getvalue(), "error": error})
        if error is not None:
            break
    with open(results_file, "w", encoding="utf-8") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
