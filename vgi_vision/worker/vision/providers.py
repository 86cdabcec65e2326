"""Choosing onnxruntime execution providers from ``--device cpu|cuda|auto``.

``cpu`` is the default and always works. ``cuda`` is a promise: if the installed onnxruntime
has no CUDA provider, or the provider cannot start (no usable GPU, missing CUDA libraries),
the worker refuses to start with one line saying so, rather than quietly running on the CPU.
``auto`` takes a GPU when one works and otherwise the CPU, and logs which it got.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from vgi_vision.errors import ModelError

log = logging.getLogger(__name__)

DEVICES = ("cpu", "cuda", "auto")
CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"

GPU_SETUP_HINT = ("install onnxruntime-gpu in place of onnxruntime, with a CUDA and cuDNN "
                  "version it supports (see docs/models.md)")


def providers_for(device: str, available: Sequence[str]) -> list[str]:
    """The providers to ask onnxruntime for, in preference order (the CPU always last)."""
    if device not in DEVICES:
        raise ModelError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "cpu":
        return [CPU]
    if CUDA in available:
        return [CUDA, CPU]
    if device == "cuda":
        raise ModelError(f"--device cuda: this onnxruntime offers no CUDA provider (it has "
                         f"{', '.join(available) or 'none'}); {GPU_SETUP_HINT}")
    return [CPU]


def check_provider(device: str, active: Sequence[str]) -> str:
    """The provider a created session really runs on; an explicit ``cuda`` that onnxruntime
    could not start (it falls back to the CPU with only a warning) is an error."""
    chosen = active[0] if active else CPU
    if device == "cuda" and chosen != CUDA:
        raise ModelError(f"--device cuda: onnxruntime could not start the CUDA provider (no "
                         f"usable GPU, or CUDA/cuDNN libraries missing) and fell back to "
                         f"{chosen}; {GPU_SETUP_HINT}")
    if device == "auto":
        log.info("device auto: running on %s", chosen)
    return chosen
