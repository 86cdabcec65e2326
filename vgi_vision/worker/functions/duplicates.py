"""``duplicates(max_distance)``: groups of stored images that are near-duplicates of each
other by perceptual hash (re-encoded, resized or slightly cropped copies of one picture).

Write-back stores each image's 64-bit pHash. Two images are near-duplicates when their hashes
differ in at most ``max_distance`` bits; a group is a connected set of such pairs. Pairs are
found without comparing every image with every other: split into ``max_distance + 1`` bit
ranges, two hashes within the distance agree exactly on at least one range (pigeonhole), so
only hashes sharing a range's value are compared, a bucket at a time.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from vgi_vision.protocol import INPUT_ROW
from vgi_vision.worker.calls.context import VisionContext
from vgi_vision.worker.calls.store_scan import StoreScan
from vgi_vision.worker.registry import Args, Column, FunctionSpec, Output, Overload, Param
from vgi_vision.worker.state import CursorState

HASH_BITS = 64
#: Bits two hashes may differ in and still be near-duplicates, by default: re-encodes and
#: resizes of the test photographs stay within 4, different photographs are 20 or more apart.
DEFAULT_MAX_DISTANCE = 6
MAX_DISTANCE = 16
#: Hashes compared at once within a bucket (a block of the pairwise distance matrix).
BLOCK = 1024


def spec(ctx: VisionContext) -> FunctionSpec:
    return FunctionSpec(
        name="duplicates",
        kind="table",
        overloads=(Overload((Param("max_distance", "INTEGER", DEFAULT_MAX_DISTANCE,
                                   "most pHash bits two near-duplicates differ in",
                                   min=0, max=MAX_DISTANCE),)),),
        columns=(Column("group_id", "INTEGER", "1 for the largest group, then 2, 3, ..."),
                 Column("image_key", "VARCHAR", "sha256 of the stored image's bytes"),
                 Column("paths", "VARCHAR[]", "every path the image was stored from"),
                 Column("distance", "INTEGER",
                        "pHash bits from the group's first image (0 for that one)"),
                 Column("phash", "UBIGINT", "the stored 64-bit perceptual hash")),
        description="Groups of stored images (from write-back) that are near-duplicates by "
                    "perceptual hash: re-encoded, resized or slightly cropped copies of one "
                    "picture, one row per group and image. Images stored before hashes were "
                    "kept are not compared.",
        example="SELECT group_id, image_key, paths FROM vision.duplicates()",
        impl=Duplicates(ctx),
        input_rows_per_call=1,
    )


def near_pairs(hashes: np.ndarray, max_distance: int) -> tuple[np.ndarray, np.ndarray]:
    """(i, j) index pairs, i < j, of the distinct ``hashes`` within ``max_distance`` bits."""
    bounds = np.linspace(0, HASH_BITS, max_distance + 2).astype(np.uint64)
    found: set[tuple[int, int]] = set()
    for low, high in zip(bounds[:-1], bounds[1:], strict=True):
        mask = np.uint64((1 << int(high - low)) - 1)
        values = (hashes >> low) & mask
        order = np.argsort(values, kind="stable")
        edges = np.flatnonzero(np.diff(values[order])) + 1
        for bucket in np.split(order, edges):
            for start in range(0, len(bucket), BLOCK):
                rows = bucket[start:start + BLOCK]
                bits = np.bitwise_count(hashes[rows, None] ^ hashes[None, bucket])
                for a, b in zip(*np.nonzero(bits <= max_distance), strict=True):
                    i, j = int(rows[a]), int(bucket[b])
                    if i < j:
                        found.add((i, j))
    pairs = np.array(sorted(found), dtype=np.int64).reshape(-1, 2)
    return pairs[:, 0], pairs[:, 1]


def groups(hashes: np.ndarray, max_distance: int) -> np.ndarray:
    """A group number per hash: equal for near-duplicates (transitively), -1 for a hash
    near no other."""
    distinct, which = np.unique(hashes, return_inverse=True)
    i, j = near_pairs(distinct, max_distance)
    n = len(distinct)
    graph = coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    per_hash = component[which]
    sizes = np.bincount(per_hash, minlength=n)
    return np.where(sizes[per_hash] > 1, per_hash, -1)


class Duplicates(StoreScan):
    """Every near-duplicate group of the stored images, in one response."""

    def process(self, args: Args, state: CursorState, out: Output) -> None:
        for row in state.advance(args.num_rows, 1):
            bound = args["max_distance"][row].as_py()
            if bound is not None:
                batch = self.grouped(row, bound, out.schema)
                if batch.num_rows:
                    out.emit(batch)
        if state.offset >= args.num_rows:
            out.finish()

    def grouped(self, row: int, max_distance: int, schema: pa.Schema) -> pa.RecordBatch:
        stored = self.ctx.store().hashes()
        keys = np.array(stored.column("image_key").to_pylist(), dtype=object)
        hashes = stored.column("phash").to_numpy().astype(np.uint64)
        group = groups(hashes, max_distance)
        member = np.flatnonzero(group >= 0)
        # Largest group first, then by the smallest key in it; members by key.
        size = np.bincount(group[member]) if len(member) else np.zeros(0, np.int64)
        first_key: dict[int, str] = {}
        for m in sorted(member, key=lambda m: keys[m]):
            first_key.setdefault(int(group[m]), keys[m])
        order = sorted(member, key=lambda m: (-int(size[group[m]]), first_key[int(group[m])],
                                              keys[m]))
        numbers: dict[int, int] = {}
        leader: dict[int, np.uint64] = {}
        ids, distances = [], []
        for m in order:
            g = int(group[m])
            numbers.setdefault(g, len(numbers) + 1)
            leader.setdefault(g, hashes[m])
            ids.append(numbers[g])
            distances.append(int(np.bitwise_count(hashes[m] ^ leader[g])))
        chosen = [str(keys[m]) for m in order]
        return pa.RecordBatch.from_pydict({
            INPUT_ROW: [row] * len(order), "group_id": ids, "image_key": chosen,
            "paths": self.ctx.store().paths_of(chosen), "distance": distances,
            "phash": pa.array(hashes[order] if order else [], pa.uint64())}, schema=schema)
