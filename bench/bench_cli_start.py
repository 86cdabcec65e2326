"""How long the ``vgi-vision`` command takes from a cold start: plain SQL, which starts no
worker, against one image classified, which starts a worker and loads the model.

Each command is run as a fresh process, the commands interleaved round by round; the median
of the rounds is reported, with its ratio to starting the Python interpreter alone (the
baseline, measured in the same rounds).

Usage: python -m bench.bench_cli_start [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
IMAGE = "test/sql/data/coffee.png"
COMMANDS = {
    "python -c pass (baseline)": [sys.executable, "-c", "pass"],
    'vgi-vision sql "SELECT 1"': [sys.executable, "-m", "vgi_vision", "sql", "SELECT 1"],
    f"vgi-vision classify {IMAGE} --top-k 1":
        [sys.executable, "-m", "vgi_vision", "classify", IMAGE, "--top-k", "1"],
    f"vgi-vision sql \"SELECT vision.top_label('{IMAGE}')\"":
        [sys.executable, "-m", "vgi_vision", "sql", f"SELECT vision.top_label('{IMAGE}')"],
}


def seconds(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, cwd=REPO, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    rounds = parser.parse_args().rounds
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(rounds):
        for name, argv in COMMANDS.items():
            times[name].append(seconds(argv))
    baseline = statistics.median(next(iter(times.values())))
    print("| command | median s | vs interpreter start |")
    print("|---|---|---|")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| `{name}` | {median:.2f} | {median / baseline:.1f}x |")


if __name__ == "__main__":
    main()
