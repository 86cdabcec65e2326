"""Timing loops the benches share: the best of timed runs, and the median of web requests."""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Iterable
from typing import Any


def timed_runs(run: Callable[[], object], repeats: int, settle: float = 0.0) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls of ``run``. ``settle``: idle seconds before
    each (lets the previous run's threads go to sleep)."""
    times = []
    for _ in range(repeats):
        time.sleep(settle)
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return times


def best_seconds(run: Callable[[], object], repeats: int, settle: float = 0.0) -> float:
    """The fastest of ``repeats`` timed calls of ``run``: the least disturbed by other load."""
    return min(timed_runs(run, repeats, settle))


async def median_get_ms(client: Any, urls: Iterable[str]) -> float:
    """Median milliseconds of one GET per URL on an ``httpx.AsyncClient``; each must answer
    200 (a page that fails fast would otherwise look fast)."""
    samples = []
    for url in urls:
        started = time.perf_counter()
        response = await client.get(url)
        samples.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, (url, response.status_code)
    return statistics.median(samples)


def throughput_options(doc: str | None, images: int, transports: Iterable[str]
                       ) -> argparse.ArgumentParser:
    """The options of a throughput bench: ``--images``, ``--repeats``, ``--transport``."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    parser.add_argument("--images", type=int, default=images,
                        help=f"distinct images ({images})")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (3)")
    parser.add_argument("--transport", default="subprocess", choices=list(transports))
    return parser


def checked_throughput_options(parser: argparse.ArgumentParser, argv: list[str] | None
                               ) -> argparse.Namespace:
    args = parser.parse_args(argv)
    if args.images < 1 or args.repeats < 1:
        parser.error("--images and --repeats must be >= 1")
    return args
