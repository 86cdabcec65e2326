"""``vgi-vision classify``: image files, folders and globs in, a table of classes out.

Everything the run needs is checked before the worker starts (options, the input paths, the
output path and format), so a mistake costs no model load. Results are written a chunk at a
time; Ctrl-C stops the run, keeps every finished chunk and exits 130.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
import uuid
from pathlib import Path

from vgi_vision.cli import options
from vgi_vision.cli.options import INTERRUPTED, CliError, MissingPath, Subcommands

#: The ``dest``s of the flags that configure the private worker.
PRIVATE_WORKER_FLAGS = ("lance", "model", "device")
#: Classes per image the shipped models have; the worker checks its own model's count.
MAX_TOP_K = 1000


def add(commands: Subcommands) -> None:
    from vgi_vision.cli.outputs import FORMATS
    from vgi_vision.client.classify_command import CHUNK_FILES

    p = commands.add_parser("classify", help="classify image files, folders and globs",
                            description="Classify images in chunks, writing each chunk's "
                                        "results as it finishes, with a progress bar (on a "
                                        "terminal) and a closing summary line. Folders and "
                                        "object URL prefixes (s3://bucket/photos/) are searched "
                                        "recursively. Files that cannot be read are listed at "
                                        "the end. Ctrl-C keeps what is finished.")
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="file, folder, glob, or s3:// object or prefix")
    p.add_argument("--top-k", type=options.bounded_int(1, MAX_TOP_K), default=5,
                   help=f"classes per image (1..{MAX_TOP_K})")
    p.add_argument("--format", choices=FORMATS,
                   help="output format (default: from the -o extension, .csv .json .jsonl "
                        ".parquet .txt; else a text table)")
    p.add_argument("-o", "--output", help="write results here instead of stdout")
    p.add_argument("--limit", type=options.positive(int), metavar="N",
                   help="classify at most N files (the first, in path order, not skipped)")
    p.add_argument("--chunk-files", type=options.positive(int), default=CHUNK_FILES,
                   metavar="N", help=f"files per chunk: each chunk's results are written as it "
                                     f"finishes, so Ctrl-C keeps them (default {CHUNK_FILES})")
    options.add_lance_option(p, help="also store results in LanceDB at URI")
    p.add_argument("--skip-existing", action="store_true",
                   help="with --lance: send no image whose content the store already holds "
                        "for this model with at least --top-k classes (skipped images are "
                        "not in the output; query them with `vgi-vision sql --lance URI`)")
    options.add_location_option(p, help="use a running worker (unix:///path or http://host:port; "
                                "repeat it for several); files are sent as bytes")
    options.add_model_options(p)
    options.add_auth_token_option(p)
    options.add_pool_options(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from vgi_vision.cli import outputs
    from vgi_vision.client.classify_command import (
        ContentKeys,
        Tally,
        classify_chunks,
        expand,
        failure_report,
        not_stored,
        progress_wanted,
        stored_keys,
        unmatched_reason,
    )
    from vgi_vision.client.client import Client
    from vgi_vision.objects import ObjectStoreError

    fmt = outputs.output_format(args.format, args.output)
    outputs.check_output(args.output)
    private = options.private_worker_options(args, PRIVATE_WORKER_FLAGS)
    location = options.location_of(args)
    if args.skip_existing and not args.lance:
        raise CliError("--skip-existing needs --lance URI: the store to check")
    try:
        files, unmatched = expand(args.paths)
    except ObjectStoreError as exc:  # a malformed object URL
        raise CliError(str(exc)) from None
    if unmatched:
        raise MissingPath("; ".join(unmatched_reason(p) for p in unmatched))
    worker_args = [flag for key, value in private.items() for flag in (f"--{key}", value)]
    progress = progress_wanted()
    tally, keys = Tally(), ContentKeys()
    interrupted = False
    with contextlib.ExitStack() as stack:
        sink = stack.enter_context(open(args.output, "wb")) if args.output \
            else sys.stdout.buffer
        writer = outputs.open_writer(fmt, sink, max(len(str(f)) for f in files))
        stack.callback(writer.close)
        try:
            if progress:
                print("starting the worker (loading the model)...", file=sys.stderr, flush=True)
            client = stack.enter_context(Client(
                location, workers=args.workers, concurrency=args.concurrency,
                worker_args=worker_args, auth_token=options.auth_token(args)))
            info = client.worker_info()
            if args.skip_existing:
                before = len(files)
                files = not_stored(files, keys, stored_keys(args.lance, str(info["model"]),
                                                            args.top_k))
                tally.skipped = before - len(files)
            files = files[:args.limit] if args.limit else files
            tally.ready = time.monotonic()
            # One job id per command: its runs (one per sub-batch) show as one job.
            for chunk in classify_chunks(client, files, args.top_k, keys, args.chunk_files,
                                         progress, send_bytes=location is not None,
                                         job=uuid.uuid4().hex):
                writer.write(chunk.table)
                tally.add(chunk, keys)
        except KeyboardInterrupt:
            interrupted = True
    if interrupted and args.output:
        outputs.remove_if_empty(args.output)
    for line in failure_report(tally.failed):
        print(line, file=sys.stderr)
    print(tally.summary(), file=sys.stderr)
    if interrupted:
        kept = f"; the results of those files are in {args.output}" \
            if args.output and Path(args.output).exists() else ""
        print(f"vgi-vision: interrupted after {tally.files} of {len(files)} files{kept}",
              file=sys.stderr)
        return INTERRUPTED
    # Every file sent failed: nothing of the run is usable (skipped files were usable before).
    return 1 if tally.failed and not tally.images and not tally.skipped else 0
