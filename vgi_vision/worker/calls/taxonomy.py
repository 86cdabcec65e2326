"""The WordNet categories of the serving model, shared by ``categories()``,
``category_score``, ``is_a`` and ``image_classes()``.

A category's score for an image is the probability mass of every class under it (the sum of
the softmax over them), so ``category_score(photo, 'dog')`` answers "is this any kind of dog?"
where the top label names one of 118 breeds.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from vgi_vision.protocol import ErrorKind
from vgi_vision.worker.calls.context import VisionContext, image_sources
from vgi_vision.worker.registry import Args, FunctionError, Param
from vgi_vision.worker.vision.categories import Category, CategoryError, Taxonomy, load_taxonomy


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


CATEGORY_PARAM = Param("category", "VARCHAR",
                       doc="a WordNet id (n02084071) or a word naming a category ('dog', "
                           "'big cat'); see categories()")
