"""The model alone: a bare onnxruntime session on ready float tensors, the benches' ceiling.

Every throughput bench divides its rates by this one, measured in the same run: a plain
``onnxruntime.InferenceSession`` on the model file, with the threads and the per-run batch the
worker uses, fed tensors that are already decoded, resized, normalized and laid out as the
graph wants them. Nothing of ours runs inside the timed loop, so the ratio says how much of the
model's own speed the measured path keeps; anything below 1.0 is overhead we added (decoding,
copies, transport) or work the model does not do.

The model is run three ways and each pass counts the fastest: one session using every core
through intra-op threads, with onnxruntime's defaults (idle threads spin a while) and with idle
threads that sleep at once; and, as the worker's lanes run it, a one-thread session run from
one thread per core at once, each on its share of the runs. On a busy machine spinning loses,
on a quiet one it may win, and runs spread over every core stall whenever any core is taken;
the ceiling is whichever way is fastest at the moment.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from vgi_vision.worker.vision.folding import normalized_input
from vgi_vision.worker.vision.model import DEFAULT_RUN_BATCH, default_threads
from vgi_vision.worker.vision.model_files import DEFAULT_MODEL, ModelInfo, resolve_model

#: Idle time before each timed run, so onnxruntime's spinning threads of the previous run (in
#: this process or a worker's) have gone to sleep.
SETTLE_SECONDS = 0.1


def ready_tensors(info: ModelInfo, pixels: np.ndarray) -> np.ndarray:
    """``N x H x W x 3`` uint8 pixels as the normalized float32 tensor the graph takes."""
    return normalized_input(info.layout, info.mean, info.std, pixels)


@dataclass
class RawBaseline:
    """A bare onnxruntime session of ``model`` and the tensors it is timed on."""

    info: ModelInfo
    tensors: np.ndarray
    run_batch: int
    threads: int
    sessions: list
    lanes: ThreadPoolExecutor


    @classmethod
    def create(cls, pixels: np.ndarray, model: str = DEFAULT_MODEL, *,
               run_batch: int = DEFAULT_RUN_BATCH, threads: int | None = None) -> RawBaseline:
        """``pixels``: decoded ``N x H x W x 3`` uint8 images (from the bench's own JPEGs)."""
        import onnxruntime as ort

        info = ModelInfo.load(resolve_model(model))
        threads = threads or default_threads()
        sessions = []
        for intra_threads, spinning in ((threads, "1"), (threads, "0"), (1, "0")):
            options = ort.SessionOptions()
            options.intra_op_num_threads = intra_threads
            options.inter_op_num_threads = 1
            options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            options.add_session_config_entry("session.intra_op.allow_spinning", spinning)
            sessions.append(ort.InferenceSession(str(info.onnx_file), sess_options=options,
                                                 providers=["CPUExecutionProvider"]))
        baseline = cls(info, ready_tensors(info, pixels), run_batch, threads, sessions,
                       ThreadPoolExecutor(max_workers=threads))
        for way in baseline.ways():
            way()  # warm: first-run allocations
        return baseline

    def run(self, session, lane: int = 0, lanes: int = 1) -> None:
        """Every ``lanes``-th run of the pass, from the ``lane``-th: all of them by default."""
        names = [self.info.logits_output]
        if self.info.embedding_output:
            names.append(self.info.embedding_output)
        feed = self.info.input_name
        for start in range(lane * self.run_batch, len(self.tensors), lanes * self.run_batch):
            session.run(names, {feed: self.tensors[start:start + self.run_batch]})

    def run_on_lanes(self) -> None:
        """One pass as the worker runs the model: the one-thread session on every core at once."""
        lanes = self.threads
        list(self.lanes.map(self.run, [self.sessions[-1]] * lanes, range(lanes), [lanes] * lanes))

    def ways(self) -> list:
        """One pass each way the model is run: spinning, sleeping, on lanes."""
        return [lambda: self.run(self.sessions[0]), lambda: self.run(self.sessions[1]),
                self.run_on_lanes]

    def seconds(self) -> float:
        """Wall seconds of one pass over every tensor: the fastest of the three ways (each
        after a settling pause)."""
        times = []
        for way in self.ways():
            time.sleep(SETTLE_SECONDS)
            started = time.perf_counter()
            way()
            times.append(time.perf_counter() - started)
        return min(times)

    def rate(self, repeats: int = 3) -> float:
        """Images/s of the best of ``repeats`` passes."""
        return len(self.tensors) / min(self.seconds() for _ in range(repeats))

    def describe(self) -> str:
        return (f"raw onnxruntime {self.info.name} on ready float tensors "
                f"({self.threads} cores, batch {self.run_batch}, the fastest of one session "
                f"on {self.threads} intra-op threads spinning or sleeping when idle, and "
                f"{self.threads} one-thread runs at once)")


def decoded_pixels(jpegs: list[bytes], model: str = DEFAULT_MODEL) -> np.ndarray:
    """The model-ready uint8 pixels of ``jpegs`` (what the baseline is fed, normalized)."""
    from vgi_vision.worker.vision.imaging import decode

    info = ModelInfo.load(resolve_model(model))
    pixels = [decode(j, prep=info.prep) for j in jpegs]
    if any(p is None for p in pixels):
        raise RuntimeError("a benchmark image did not decode")
    return np.stack(pixels)  # type: ignore[arg-type]

