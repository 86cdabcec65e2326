"""``vgi-vision models``: the shipped models' metadata, without starting a worker."""

from __future__ import annotations

import argparse

from vgi_vision.cli.options import CliError, Subcommands


def add(commands: Subcommands) -> None:
    p = commands.add_parser("models", help="list the shipped models with their metadata",
                            description="Print the shipped models' metadata as a JSON list "
                                        "(SQL: SELECT * FROM vision.models()).")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import json

    from vgi_vision.errors import ModelError
    from vgi_vision.worker.vision.detector_files import shipped_detectors
    from vgi_vision.worker.vision.model_files import ModelInfo, models_root, shipped_model_names

    names = shipped_model_names()
    if not names:
        raise CliError(f"no models found under {models_root()}")
    found = []
    for name in names:
        try:
            info = ModelInfo.load(models_root() / name)
        except ModelError as exc:
            raise CliError(str(exc)) from None
        found.append({"folder": str(info.directory), **info.metadata})
    found += [{"folder": str(d.directory), **d.metadata} for d in shipped_detectors()]
    print(json.dumps(found, indent=2))
    return 0
