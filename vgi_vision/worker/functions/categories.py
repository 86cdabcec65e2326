"""WordNet categories in SQL: ``categories()``, ``category_score`` and ``is_a``.

A category's score for an image is the probability mass of every class under it (the sum of
the softmax over them), so ``category_score(photo, 'dog')`` answers "is this any kind of dog?"
where the top label names one of 118 breeds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pyarrow as pa

from vgi_vision.protocol import INPUT_ROW, ErrorKind
from vgi_vision.worker.functions.common import VisionContext, image_overloads, image_sources
from vgi_vision.worker.registry import (
    ROWS_PER_TICK,
    Args,
    Column,
    FunctionError,
    FunctionSpec,
    Output,
    Overload,
    Param,
    Registry,
)
from vgi_vision.worker.state import CursorState
from vgi_vision.worker.vision.categories import Category, CategoryError, Taxonomy, load_taxonomy

DEFAULT_THRESHOLD = 0.5


def taxonomy_of(ctx: VisionContext) -> Taxonomy | None:
    """The categories of the worker's model; None if the model ships none."""
    info = ctx.classifier.info
    entry = info.metadata.get("categories")
    if not isinstance(entry, dict) or "file" not in entry:
        return None
    return load_taxonomy(info.directory, entry["file"], info.wnids)


def ancestor_columns(taxonomy: Taxonomy | None, classes: Sequence[int]
                     ) -> tuple[pa.Array, pa.Array]:
    """Names and ids of the categories above each class, nearest first (NULL without any)."""
    if taxonomy is None:
        nulls = pa.nulls(len(classes), pa.list_(pa.string()))
        return nulls, nulls
    above = [taxonomy.ancestors[i] for i in classes]
    return (pa.array([[taxonomy.name(w) for w in a] for a in above], pa.list_(pa.string())),
            pa.array([list(a) for a in above], pa.list_(pa.string())))


def require_taxonomy(ctx: VisionContext) -> Taxonomy:
    taxonomy = taxonomy_of(ctx)
    if taxonomy is None:
        raise FunctionError(f"model {ctx.classifier.info.name} ships no WordNet categories "
                            f"(scripts/build_categories.py builds them)",
                            kind=ErrorKind.NOT_CONFIGURED)
    return taxonomy


def resolved(taxonomy: Taxonomy, names: list[str | None]) -> list[Category | None]:
    """Each row's category, every distinct name resolved once; a bad name fails the call."""
    found: dict[str, Category] = {}
    try:
        for name in {n for n in names if n is not None}:
            found[name] = taxonomy.resolve(name)
    except CategoryError as exc:
        raise FunctionError(str(exc)) from None
    return [None if name is None else found[name] for name in names]


def category_scores(ctx: VisionContext, args: Args) -> list[float | None]:
    """Per row, the softmax mass of the classes under its category; None without a score.

    The categories are resolved before any image is decoded, so a bad name costs nothing.
    """
    categories = resolved(require_taxonomy(ctx), args["category"].to_pylist())
    sources = image_sources(ctx, args, range(args.num_rows))
    sources = [s if c is not None else None for s, c in zip(sources, categories, strict=True)]
    results = ctx.classifier.classify(sources, top_k=ctx.classifier.info.num_classes)
    scores: list[float | None] = []
    for result, category in zip(results, categories, strict=True):
        if result is None or category is None:
            scores.append(None)
            continue
        under = np.isin(result.indices, category.classes)
        scores.append(float(result.probabilities[under].sum()))
    return scores


def category_score(ctx: VisionContext) -> Callable[[Args], pa.Array]:
    def call(args: Args) -> pa.Array:
        return pa.array(category_scores(ctx, args), pa.float64())

    return call


def is_a(ctx: VisionContext) -> Callable[[Args], pa.Array]:
    def call(args: Args) -> pa.Array:
        thresholds = args["threshold"].to_pylist()
        for threshold in thresholds:
            if threshold is not None and not 0.0 <= threshold <= 1.0:
                raise FunctionError(f"threshold must be between 0 and 1, got {threshold}")
        scores = category_scores(ctx, args)
        return pa.array([None if s is None or t is None else s >= t
                         for s, t in zip(scores, thresholds, strict=True)], pa.bool_())

    return call


class Categories:
    """``categories()``: every category above the model's classes, from a cursor."""

    state_type = CursorState

    def __init__(self, ctx: VisionContext) -> None:
        self.ctx = ctx

    def initial_state(self, args: Args) -> CursorState:
        require_taxonomy(self.ctx)
        return CursorState()

    def process(self, args: Args, state: CursorState, out: Output) -> None:
        categories = list(require_taxonomy(self.ctx).categories.values())
        total = len(categories) * args.num_rows
        rows = state.advance(total, ROWS_PER_TICK)
        if rows:
            chosen = [categories[p % len(categories)] for p in rows]
            out.emit(pa.RecordBatch.from_arrays(
                [pa.array([p // len(categories) for p in rows], pa.int32()),
                 pa.array([c.name for c in chosen], pa.string()),
                 pa.array([c.wnid for c in chosen], pa.string()),
                 pa.array([len(c.classes) for c in chosen], pa.int32()),
                 pa.array([[w.replace("_", " ") for w in c.lemmas] for c in chosen],
                          pa.list_(pa.string()))],
                names=[INPUT_ROW, "name", "wnid", "classes", "lemmas"]))
        if state.offset >= total:
            out.finish()


CATEGORY_PARAM = Param("category", "VARCHAR",
                       doc="a WordNet id (n02084071) or a word naming a category ('dog', "
                           "'big cat'); see categories()")


def register(registry: Registry, ctx: VisionContext) -> None:
    """Declare ``categories``, ``category_score`` and ``is_a`` on ``registry``."""
    registry.add(FunctionSpec(
        name="categories",
        kind="table",
        overloads=(Overload(()),),
        columns=(Column("name", "VARCHAR", "the synset's first lemma; not unique: resolve "
                                           "by wnid when two share it"),
                 Column("wnid", "VARCHAR", "WordNet 3.0 id of the synset"),
                 Column("classes", "INTEGER", "how many of the model's classes are under it"),
                 Column("lemmas", "VARCHAR[]", "every word for it, first lemma first")),
        description="Every WordNet category above the model's classes (their hypernyms, "
                    "from WordNet 3.0), with the number of classes under each. Names and ids "
                    "here are what category_score and is_a accept.",
        example="SELECT * FROM vision.categories() WHERE name = 'dog'",
        impl=Categories(ctx),
        input_rows_per_call=1,
    ))
    registry.add(FunctionSpec(
        name="category_score",
        kind="scalar",
        overloads=image_overloads(CATEGORY_PARAM),
        columns=(Column("score", "DOUBLE", "probability in [0, 1] that the image shows any "
                                           "class under the category; NULL if undecodable"),),
        description="How likely an image shows any kind of a category: the sum of the "
                    "softmax over every class under it. A word resolves among the categories' "
                    "lemmas, preferring the category whose first lemma it is ('cat' is the "
                    "true cat, not the big cat); an unknown or ambiguous name is an error "
                    "listing the candidates.",
        example="SELECT vision.category_score('test/sql/data/cat.png', 'cat')",
        impl=category_score(ctx),
        input_rows_per_call=256,
    ))
    registry.add(FunctionSpec(
        name="is_a",
        kind="scalar",
        overloads=image_overloads(CATEGORY_PARAM,
                                  Param("threshold", "DOUBLE", DEFAULT_THRESHOLD,
                                        "smallest category_score that counts, 0..1")),
        columns=(Column("is_a", "BOOLEAN", "category_score >= threshold; NULL if the image "
                                           "cannot be decoded"),),
        description="Whether an image shows any kind of a category: category_score(image, "
                    "category) >= threshold. Names resolve as for category_score.",
        example="SELECT vision.is_a('test/sql/data/coffee.png', 'beverage', threshold := 0.8)",
        impl=is_a(ctx),
        input_rows_per_call=256,
    ))
