"""``models()``: the models a worker can load, and which one it is serving."""

from __future__ import annotations

import numpy as np

from vgi_vision.worker.calls.context import VisionContext
from vgi_vision.worker.calls.fixed_table import FixedTableScan
from vgi_vision.worker.registry import Column, FunctionSpec, Overload
from vgi_vision.worker.vision.detector_files import DetectorInfo, shipped_detectors
from vgi_vision.worker.vision.model_files import ModelInfo, available_models

MODEL_COLUMNS = (
    Column("name", "VARCHAR", "model name; serve --model NAME or attach(con, model=NAME)"),
    Column("task", "VARCHAR", "'classification' (classify, embed, ...), 'object detection' "
                              "(detect, count_objects) or 'face detection' (faces, "
                              "count_faces)"),
    Column("source", "VARCHAR", "'shipped' (inside the package) or 'directory' (a model "
                                "directory given to --model)"),
    Column("input_size", "INTEGER", "side of the square input in pixels; NULL for a "
                                    "detector that takes images of any size"),
    Column("classes", "INTEGER", "number of classes the model predicts"),
    Column("embedding_size", "INTEGER", "length of the image embedding; NULL if none"),
    Column("precision", "VARCHAR", "weight precision, e.g. fp32 or int8"),
    Column("sha256", "VARCHAR", "sha256 of model.onnx, checked when the model loads"),
    Column("license", "VARCHAR", "license of the model weights"),
    Column("serving", "BOOLEAN", "true for the classifier this worker is running (the "
                                 "detectors are loaded when first used)"),
    Column("provider", "VARCHAR", "onnxruntime execution provider of the serving model "
                                  "(e.g. CPUExecutionProvider); NULL for the others"),
)


def spec(ctx: VisionContext) -> FunctionSpec:
    return FunctionSpec(
        name="models",
        kind="table",
        overloads=(Overload(()),),
        columns=MODEL_COLUMNS,
        description="The models this worker can load (the shipped classifiers and "
                    "detectors, and a model directory it was started with) and which "
                    "classifier is serving, with its execution provider.",
        example="SELECT name, task, precision, classes, serving, provider FROM "
                "vision.models()",
        impl=Models(ctx),
        input_rows_per_call=1,
    )


class Models(FixedTableScan):
    """The model table, fixed when the worker starts: a pure function of the cursor."""

    def __init__(self, ctx: VisionContext) -> None:
        super().__init__(ctx)
        self.rows = [self._row(info) for info in available_models(ctx.classifier.info)]
        self.rows += [self._detector_row(info) for info in shipped_detectors()]

    def _row(self, info: ModelInfo) -> dict[str, object]:
        serving = info.directory.resolve() == self.ctx.classifier.info.directory.resolve()
        return {"name": info.name, "task": "classification",
                "source": "shipped" if info.shipped else "directory",
                "input_size": info.prep.size, "classes": info.num_classes,
                "embedding_size": info.embedding_dim or None, "precision": info.precision,
                "sha256": info.sha256, "license": info.license, "serving": serving}

    @staticmethod
    def _detector_row(info: DetectorInfo) -> dict[str, object]:
        return {"name": info.name, "task": info.task, "source": "shipped",
                "input_size": info.size if info.kind == "blazeface" else None,
                "classes": len(info.labels), "embedding_size": None,
                "precision": info.precision, "sha256": info.sha256, "license": info.license,
                "serving": False}

    def size(self) -> int:
        return len(self.rows)

    def columns(self, entries: np.ndarray) -> dict[str, object]:
        provider = self.ctx.classifier.provider
        rows = [{**self.rows[i]} for i in entries]
        for row in rows:
            row["provider"] = provider if row["serving"] else None
        return {c.name: [r[c.name] for r in rows] for c in MODEL_COLUMNS}
