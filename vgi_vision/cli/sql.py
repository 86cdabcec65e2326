"""``vgi-vision sql``: SQL in DuckDB with a worker attached as ``vision``, from the command
line, a file or an interactive prompt. The worker starts with the first statement that
names ``vision``; other SQL runs without one."""

from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path

from vgi_vision.cli import options
from vgi_vision.cli.attaching import PRIVATE_WORKER_FLAGS, LazyAttachment, add_attach_options
from vgi_vision.cli.options import CliError, Subcommands


def add(commands: Subcommands) -> None:
    p = commands.add_parser("sql", help="run SQL in DuckDB with the worker attached as vision",
                            description="Run SQL in DuckDB with a worker attached as `vision` "
                                        "(started by the first statement that names `vision`). "
                                        "With no query and no -f, an interactive prompt.")
    p.add_argument("query", nargs="?", help="SQL to run (several statements allowed)")
    p.add_argument("-f", "--file", help="read SQL from this file")
    p.add_argument("--database", default=":memory:", help="DuckDB database file")
    add_attach_options(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import duckdb

    if args.query and args.file:
        raise CliError("give a query or -f FILE, not both")
    try:
        text = Path(args.file).read_text(encoding="utf-8") if args.file else args.query
    except OSError as exc:
        raise CliError(f"cannot read {args.file}: {exc.strerror}") from None
    options.private_worker_options(args, PRIVATE_WORKER_FLAGS)  # refused with --location
    options.check_data_root(args)
    con = duckdb.connect(args.database)
    worker = LazyAttachment(con, args)
    try:
        if text is None:
            return repl(con, worker)
        return 0 if run_statements(con, worker, text) else 1
    finally:
        worker.close()
        con.close()


def run_statements(con, worker: LazyAttachment, text: str) -> bool:
    """Run every statement, printing query results as DuckDB renders them; False on error."""
    import duckdb

    try:
        worker.before(text)
        for statement in con.extract_statements(text):
            if statement.type == duckdb.StatementType.SELECT:
                print(con.sql(statement.query))
            else:
                con.execute(statement.query)
    except duckdb.Error as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return False
    return True


def repl(con, worker: LazyAttachment) -> int:
    """A prompt with history; statements end with ';'."""
    readline: types.ModuleType | None
    try:
        import readline
    except ImportError:  # pragma: no cover - not on every platform
        readline = None
    history = Path.home() / ".vgi_vision_history"
    if readline is not None and history.exists():
        readline.read_history_file(history)
    print("vgi-vision SQL: the worker's functions are `vision.*` (it starts on first use). "
          "End statements with ';', Ctrl-D to quit.")
    buffer: list[str] = []
    try:
        while True:
            try:
                line = input("...> " if buffer else "D> ")
            except EOFError:
                print()
                return 0
            except KeyboardInterrupt:
                print()
                buffer.clear()
                continue
            buffer.append(line)
            if line.rstrip().endswith(";"):
                run_statements(con, worker, "\n".join(buffer))
                buffer.clear()
    finally:
        if readline is not None:
            readline.write_history_file(history)
