"""WordNet categories above a model's classes: ancestors, class sets and name resolution.

``categories.tsv`` beside a model's labels (built by ``scripts/build_categories.py``) holds every
class synset and every synset above one. A *category* is a synset above at least one class;
the classes under it are those it is an ancestor of. Names resolve the way a person means them:

* a WordNet id (``n02084071``) names that synset (a category, or a class as a category of one);
* a word (spaces or underscores, any case) is looked up among the categories' lemmas only; where
  several categories share it, the one whose *first* lemma it is wins (``cat`` is the true cat,
  not the big cat, whose second lemma it is);
* no match, or several left, is a :class:`CategoryError` listing candidates with ids and class
  counts.
"""

from __future__ import annotations

import functools
import re
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vgi_vision.errors import ModelError, VgiVisionError

_WNID = re.compile(r"n[0-9]{8}")

#: Candidates listed in an error message at most.
MAX_CANDIDATES = 12


class CategoryError(VgiVisionError, ValueError):
    """A category name that names no category, or several."""


@dataclass(frozen=True)
class Category:
    wnid: str
    lemmas: tuple[str, ...]
    classes: np.ndarray  # sorted class indices under it

    @property
    def name(self) -> str:
        return self.lemmas[0].replace("_", " ")

    def describe(self) -> str:
        count = f"{len(self.classes)} class" + ("es" if len(self.classes) != 1 else "")
        words = ", ".join(lemma.replace("_", " ") for lemma in self.lemmas)
        return f"{self.name} ({self.wnid}, {count}: {words})"


class Taxonomy:
    """The categories above one model's classes."""

    def __init__(self, class_wnids: tuple[str, ...], lemmas: dict[str, tuple[str, ...]],
                 parents: dict[str, tuple[str, ...]]) -> None:
        self.class_wnids = class_wnids
        self.lemmas = lemmas
        #: per class index: ancestor wnids, nearest first (breadth-first up the hypernyms)
        self.ancestors = tuple(_ancestors(wnid, parents) for wnid in class_wnids)
        members: dict[str, list[int]] = {}
        for index, above in enumerate(self.ancestors):
            for wnid in above:
                members.setdefault(wnid, []).append(index)
        self.categories = {wnid: Category(wnid, lemmas[wnid], np.array(indices, dtype=np.int64))
                           for wnid, indices in sorted(members.items())}
        self._by_lemma: dict[str, list[Category]] = {}
        for category in self.categories.values():
            for lemma in category.lemmas:
                self._by_lemma.setdefault(_key(lemma), []).append(category)

    @classmethod
    def load(cls, path: Path, class_wnids: tuple[str, ...]) -> Taxonomy:
        lemmas: dict[str, tuple[str, ...]] = {}
        parents: dict[str, tuple[str, ...]] = {}
        for line in path.read_text(encoding="utf-8").splitlines()[1:]:
            wnid, words, above = line.split("\t")
            lemmas[wnid] = tuple(words.split(","))
            parents[wnid] = tuple(above.split(",")) if above else ()
        missing = [w for w in class_wnids if w not in lemmas]
        if missing:
            raise ValueError(f"it lacks classes {missing[:3]}")
        return cls(class_wnids, lemmas, parents)

    def name(self, wnid: str) -> str:
        return self.lemmas[wnid][0].replace("_", " ")

    def resolve(self, name: str) -> Category:
        """The category ``name`` means; :class:`CategoryError` if none or several."""
        text = name.strip()
        if _WNID.fullmatch(text.lower()):
            return self._by_wnid(text.lower())
        found = self._by_lemma.get(_key(text), [])
        if len(found) > 1:
            first = [c for c in found if _key(c.lemmas[0]) == _key(text)]
            found = first if len(first) == 1 else found
        if len(found) == 1:
            return found[0]
        if found:
            raise CategoryError(f"category {name!r} is ambiguous; use one of these WordNet ids: "
                                f"{_listing(found)}")
        classes = [w for w in self.class_wnids if _key(text) in map(_key, self.lemmas[w])]
        near = [c for lemma, cs in self._by_lemma.items() if _key(text) in lemma for c in cs]
        hint = f"; it names class {' and '.join(classes)}: give a WordNet id" if classes \
            else f"; categories with similar names: {_listing(near)}" if near else ""
        raise CategoryError(f"no category named {name!r} among the ancestors of this model's "
                            f"classes (see categories()){hint}")

    def _by_wnid(self, wnid: str) -> Category:
        if wnid in self.categories:
            return self.categories[wnid]
        if wnid in self.class_wnids:
            index = self.class_wnids.index(wnid)
            return Category(wnid, self.lemmas[wnid], np.array([index], dtype=np.int64))
        raise CategoryError(f"{wnid} is neither a class of this model nor a category above "
                            f"one (see categories())")


def _ancestors(wnid: str, parents: dict[str, tuple[str, ...]]) -> tuple[str, ...]:
    """Every synset above ``wnid``, nearest first; a synset reached twice counts once."""
    seen: dict[str, None] = {}
    queue = deque(parents[wnid])
    while queue:
        above = queue.popleft()
        if above not in seen:
            seen[above] = None
            queue.extend(parents[above])
    return tuple(seen)


def _key(word: str) -> str:
    return "_".join(word.lower().replace("_", " ").split())


def _listing(categories: list[Category]) -> str:
    unique = list({c.wnid: c for c in categories}.values())
    unique.sort(key=lambda c: -len(c.classes))
    shown = "; ".join(c.describe() for c in unique[:MAX_CANDIDATES])
    more = len(unique) - MAX_CANDIDATES
    return shown + (f"; and {more} more" if more > 0 else "")


@functools.cache
def load_taxonomy(directory: Path, file: str, class_wnids: tuple[str | None, ...]) -> Taxonomy:
    """The taxonomy of a model directory, parsed once per process; ModelError if unusable."""
    path = directory / file
    if None in class_wnids:
        raise ModelError(f"{path}: categories need a WordNet id for every class in the labels")
    try:
        return Taxonomy.load(path, tuple(w for w in class_wnids if w is not None))
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"model categories {path} are unusable: {exc}; rebuild them with "
                         f"scripts/build_categories.py") from exc
