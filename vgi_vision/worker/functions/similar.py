"""``similar(image[, k][, model])``: the stored images nearest to an image by embedding,
within one model's stored images (another model's embeddings live in another space)."""

from __future__ import annotations

import hashlib
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from vgi_vision.protocol import INPUT_ROW
from vgi_vision.worker.calls.context import (
    IMAGES_PER_TICK,
    VisionContext,
    image_overloads,
    image_sources,
    images_per_tick,
)
from vgi_vision.worker.calls.store_scan import StoreScan
from vgi_vision.worker.registry import Args, Column, FunctionSpec, Output, Param
from vgi_vision.worker.state import CursorState
from vgi_vision.worker.vision.imaging import ImageSource

#: Stored images one query image gets by default, and at most.
DEFAULT_K = 5
MAX_K = 1000


def spec(ctx: VisionContext) -> FunctionSpec:
    return FunctionSpec(
        name="similar",
        kind="table",
        overloads=image_overloads(
            Param("k", "INTEGER", DEFAULT_K, "how many stored images to return", min=1,
                  max=MAX_K),
            Param("model", "VARCHAR", "",
                  "whose stored embeddings to search: '' (the default) for the model this "
                  "worker serves, whose embedding of the image is searched with; another "
                  "model's name searches with the embedding that model stored for the image "
                  "(no rows if it stored none)")),
        columns=(Column("rank", "INTEGER", "1 for the nearest stored image"),
                 Column("image_key", "VARCHAR", "sha256 of the stored image's bytes"),
                 Column("path", "VARCHAR", "stored path, if it was classified by path"),
                 Column("label", "VARCHAR", "the stored image's top label"),
                 Column("confidence", "DOUBLE", "the stored top label's confidence"),
                 Column("distance", "DOUBLE", "cosine distance of the embeddings, 0 = same")),
        description="The stored images (from write-back) most similar to an image, by the "
                    "cosine distance of their embeddings, among the images one model stored "
                    "(through the vector index once the store has one).",
        example="SELECT * FROM vision.similar('test/sql/data/cat.png', k := 3)",
        impl=Similar(ctx),
        input_rows_per_call=IMAGES_PER_TICK,
    )


class Similar(StoreScan):
    """The k stored images nearest by embedding (cosine distance), per argument row."""

    def process(self, args: Args, state: CursorState, out: Output) -> None:
        ks = args["k"].to_pylist()
        models = args["model"].to_pylist()
        rows = state.advance(args.num_rows, images_per_tick(ks))
        names = (INPUT_ROW, "rank", "image_key", "path", "label", "confidence", "distance")
        found: dict[str, list[Any]] = {name: [] for name in names}
        sources = image_sources(self.ctx, args, rows)
        results = self.ctx.classifier.classify(sources, top_k=1)
        for row, source, result in zip(rows, sources, results, strict=True):
            if result is None or ks[row] is None:
                continue
            model = models[row] or self.ctx.classifier.info.name
            vector = self.query_vector(source, result.embedding.tolist(), model)
            if vector is None:
                continue
            hits = self.ctx.store().nearest(vector, ks[row], model)
            found[INPUT_ROW] += [row] * hits.num_rows
            found["rank"] += list(range(1, hits.num_rows + 1))
            for name in ("image_key", "path"):
                found[name] += hits.column(name).to_pylist()
            for name in ("label", "confidence"):  # the stored top-1
                found[name] += pc.list_element(hits.column(name), 0).to_pylist()
            # float32 rounding puts an image's distance to itself a hair below 0
            found["distance"] += [max(0.0, d) for d in hits.column("_distance").to_pylist()]
        batch = pa.RecordBatch.from_pydict(found, schema=out.schema)
        if batch.num_rows:
            out.emit(batch)
        if state.offset >= args.num_rows:
            out.finish()

    def query_vector(self, source: ImageSource, embedding: list[float], model: str
                     ) -> list[float] | None:
        """What to search ``model``'s images with: the image's own ``embedding`` when
        ``model`` is served here, else the embedding ``model`` stored for it, if any."""
        if model == self.ctx.classifier.info.name:
            return embedding
        assert isinstance(source, bytes)  # image_sources reads files when write-back is on
        return self.ctx.store().stored_vector(hashlib.sha256(source).hexdigest(), model)
