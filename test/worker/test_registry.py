"""The registry, the scan-state protocol and the HTTP-modelling harness.

Framework behaviour is tested with toy functions; the shipped vision functions are run through
the same harness on the real model to show that each terminates and emits every row once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

import pyarrow as pa
import pytest

from vgi_vision.protocol import INPUT_ROW, ErrorKind, argument_rows
from vgi_vision.testing.harness import invoke_table_function
from vgi_vision.worker.docs import render_reference
from vgi_vision.worker.functions import VisionContext, build_registry
from vgi_vision.worker.paths import PathPolicy
from vgi_vision.worker.registry import (
    Args,
    Column,
    FunctionError,
    FunctionSpec,
    Output,
    Overload,
    Param,
    Registry,
)
from vgi_vision.worker.state import CursorState, ScanState, StateError
from vgi_vision.worker.ticks import TickGuardError
from vgi_vision.worker.tokens import TokenError, TokenSealer
from vgi_vision.worker.vision.model import load_classifier


@dataclass
class StatelessState(ScanState):
    kind: ClassVar[str] = "stateless"
    started: bool = True


class EmitEverything:
    """A generator with no position: every tick emits the whole result again."""

    state_type = StatelessState

    def initial_state(self, args: Args) -> StatelessState:
        return StatelessState()

    def process(self, args: Args, state: StatelessState, out: Output) -> None:
        out.emit(pa.RecordBatch.from_arrays([pa.array([0, 0], pa.int32()),
                                             pa.array([1, 2], pa.int32())],
                                            names=[INPUT_ROW, "n"]))


class Countdown:
    """Emits ``n`` rows per argument row, three at a time, from a cursor."""

    state_type = CursorState

    def initial_state(self, args: Args) -> CursorState:
        return CursorState()

    def process(self, args: Args, state: CursorState, out: Output) -> None:
        counts = args["n"].to_pylist()
        flat = [(row, i) for row, n in enumerate(counts) for i in range(n or 0)]
        rows = state.advance(len(flat), 3)
        if rows:
            chosen = flat[rows.start:rows.stop]
            out.emit(pa.RecordBatch.from_arrays(
                [pa.array([r for r, _ in chosen], pa.int32()),
                 pa.array([i for _, i in chosen], pa.int32())], names=[INPUT_ROW, "n"]))
        if state.offset >= len(flat):
            out.finish()


def toy_spec(name: str, impl, params=(Param("n", "INTEGER"),)) -> FunctionSpec:
    return FunctionSpec(name=name, kind="table", overloads=(Overload(tuple(params)),),
                        columns=(Column("n", "INTEGER"),), description="toy", example="",
                        impl=impl)


def test_position_less_generator_trips_the_tick_guard() -> None:
    spec = toy_spec("forever", EmitEverything(), params=())
    with pytest.raises(TickGuardError):
        invoke_table_function(spec, argument_rows([], 1), tick_guard=50)


@pytest.mark.parametrize("serialize", [True, False])
def test_cursor_generator_emits_each_row_once(serialize: bool) -> None:
    spec = toy_spec("countdown", Countdown())
    counts = [4, 0, None, 7]
    table = invoke_table_function(spec, argument_rows([pa.array(counts, pa.int32())]),
                                  serialize_state=serialize)
    pairs = list(zip(table.column(INPUT_ROW).to_pylist(), table.column("n").to_pylist(),
                     strict=True))
    assert pairs == [(0, i) for i in range(4)] + [(3, i) for i in range(7)]


def test_empty_input_finishes_at_once() -> None:
    spec = toy_spec("countdown", Countdown())
    table = invoke_table_function(spec, argument_rows([pa.array([], pa.int32())]), tick_guard=1)
    assert table.num_rows == 0


def test_cursor_advances_before_emit() -> None:
    state = CursorState()
    assert state.advance(10, 4) == range(0, 4)
    assert state.offset == 4  # what a suspended tick would serialize
    assert CursorState.from_bytes(state.to_bytes()).offset == 4
    assert state.advance(10, 100) == range(4, 10)
    assert state.advance(10, 100) == range(10, 10)


@pytest.mark.parametrize("data", [b"", b"garbage", StatelessState().to_bytes()])
def test_state_rejects_foreign_bytes(data: bytes) -> None:
    with pytest.raises(StateError):
        CursorState.from_bytes(data)


def test_overload_resolution_and_defaults() -> None:
    spec = FunctionSpec(name="f", kind="scalar",
                        overloads=(Overload((Param("image", "BLOB"), Param("k", "INTEGER", 5))),
                                   Overload((Param("path", "VARCHAR"),))),
                        columns=(Column("out", "VARCHAR"),), description="", example="",
                        impl=None)
    args = spec.resolve(argument_rows([pa.array([b"a", b"b"], pa.binary())]))
    assert args.overload.params[0].name == "image"
    assert args["k"].to_pylist() == [5, 5]
    args = spec.resolve(argument_rows([pa.array([b"a"], pa.binary()),
                                       pa.array([7], pa.int64())]))
    assert args["k"].type == pa.int32() and args["k"].to_pylist() == [7]
    assert spec.resolve(argument_rows([pa.array(["p"])])).overload.params[0].name == "path"
    with pytest.raises(FunctionError) as info:
        spec.resolve(argument_rows([pa.array([1.0])]))
    assert info.value.kind is ErrorKind.NO_MATCHING_OVERLOAD
    assert "f(image BLOB, k INTEGER := 5)" in str(info.value)
    with pytest.raises(FunctionError):  # too many arguments
        spec.resolve(argument_rows([pa.array(["p"]), pa.array([1]), pa.array([2])]))


def test_registry_rejects_bad_declarations() -> None:
    registry = Registry()
    registry.add(toy_spec("a", Countdown()))
    with pytest.raises(ValueError, match="already registered"):
        registry.add(toy_spec("a", Countdown()))
    with pytest.raises(ValueError, match="unsupported SQL type"):
        registry.add(toy_spec("b", Countdown(), params=(Param("x", "HUGEINT"),)))
    with pytest.raises(FunctionError) as info:
        registry.get("missing")
    assert info.value.kind is ErrorKind.UNKNOWN_FUNCTION


def bounded_spec(*params: Param, column_type: str = "INTEGER") -> FunctionSpec:
    return FunctionSpec(name="f", kind="scalar", overloads=(Overload(params),),
                        columns=(Column("out", column_type),), description="", example="",
                        impl=None)


def test_bounds_are_checked_when_arguments_resolve_and_null_passes() -> None:
    spec = Registry().add(bounded_spec(Param("k", "INTEGER", 5, min=1, max=1000),
                                       Param("t", "DOUBLE", 0.5, min=0.0, max=1.0)))
    args = spec.resolve(argument_rows([pa.array([1, None, 1000], pa.int64()),
                                       pa.array([0.0, 1.0, None])]))
    assert args["k"].to_pylist() == [1, None, 1000]
    for k, t, message in ((0, 0.5, "k must be between 1 and 1000, got 0"),
                          (1001, 0.5, "k must be between 1 and 1000, got 1001"),
                          (5, 1.5, "t must be between 0 and 1, got 1.5"),
                          (5, float("nan"), "t must be between 0 and 1, got nan")):
        with pytest.raises(FunctionError) as info:
            spec.resolve(argument_rows([pa.array([5, k]), pa.array([0.5, t])]))
        assert info.value.kind is ErrorKind.INVALID_ARGUMENT
        assert str(info.value) == message
    with pytest.raises(FunctionError, match="k must be at least 1, got 0"):
        Registry().add(bounded_spec(Param("k", "INTEGER", min=1))).resolve(
            argument_rows([pa.array([0])]))
    # a default outside the bounds fails the calls relying on it, not the registration
    spec = Registry().add(bounded_spec(Param("k", "INTEGER", 5, min=1, max=4)))
    with pytest.raises(FunctionError, match="k must be between 1 and 4, got 5"):
        spec.resolve(argument_rows([], 1))


def test_bounds_appear_in_describe_and_the_reference() -> None:
    spec = bounded_spec(Param("k", "INTEGER", 5, "how many", min=1, max=1000),
                        Param("t", "DOUBLE", 0.5, "cut-off", min=0.0))
    params = spec.describe()["overloads"][0]["params"]
    assert params[0] == {"name": "k", "type": "INTEGER", "doc": "how many", "default": 5,
                         "min": 1, "max": 1000}
    assert params[1]["min"] == 0.0 and "max" not in params[1]
    reference = render_reference([spec.describe()])
    assert "- `k` INTEGER (1 to 1000): how many" in reference
    assert "- `t` DOUBLE (at least 0): cut-off" in reference


@pytest.mark.parametrize(("param", "column_type", "message"), [
    (Param("k", "INTEGER", min=5, max=1), "INTEGER", "parameter k: min 5 is greater than max 1"),
    (Param("s", "VARCHAR", min=1), "INTEGER", "parameter s: bounds need a numeric type"),
    (Param("k", "INTEGER", max=0.5), "INTEGER", "parameter k: bound 0.5 of an integer"),
    (Param("k", "INTEGER", min=True), "INTEGER", "parameter k: bound True is not a number"),
    (Param("t", "DOUBLE", max=float("nan")), "INTEGER", "parameter t: bound nan is not"),
    (Param("k", "INTEGR"), "INTEGER", "parameter k: unsupported SQL type 'INTEGR'"),
    (Param("k", "INTEGER"), "FLAOT[]", "column out: unsupported SQL type 'FLAOT[]'"),
    (Param("k", "INTEGER"), "FLOAT[0]", "column out: unsupported SQL type 'FLOAT[0]'"),
])
def test_add_refuses_what_it_cannot_carry_or_check(param: Param, column_type: str,
                                                   message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"f: {message}")):
        Registry().add(bounded_spec(param, column_type=column_type))


def test_fixed_size_float_arrays_are_a_column_type() -> None:
    spec = Registry().add(bounded_spec(Param("k", "INTEGER"), column_type="FLOAT[1280]"))
    assert spec.result_schema.field("out").type == pa.list_(pa.float32(), 1280)
    assert spec.describe()["columns"][0]["type"] == "FLOAT[1280]"


def test_the_catalog_declares_its_bounds(vision_registry: Registry) -> None:
    bounds = {(f["name"], p["name"]): (p.get("min"), p.get("max"))
              for f in vision_registry.describe() for o in f["overloads"]
              for p in o["params"] if "min" in p or "max" in p}
    assert bounds == {("classify", "top_k"): (1, 1000), ("similar", "k"): (1, 1000),
                      ("duplicates", "max_distance"): (0, 16),
                      ("is_a", "threshold"): (0.0, 1.0), ("ocr", "min_confidence"): (0.0, 1.0),
                      ("ocr_text", "min_confidence"): (0.0, 1.0),
                      **{(name, "min_score"): (0.0, 1.0)
                         for name in ("detect", "count_objects", "faces", "count_faces")}}


@pytest.fixture(scope="module")
def vision_registry() -> Registry:
    return build_registry(VisionContext(load_classifier(), PathPolicy.unrestricted()))


def test_describe_is_a_complete_catalog(vision_registry: Registry) -> None:
    catalog = {f["name"]: f for f in vision_registry.describe()}
    assert set(catalog) == {"classify", "top_label", "image_classes", "predictions", "similar",
                            "embed", "image_info", "phash", "categories", "category_score",
                            "is_a", "models", "ocr", "ocr_text", "stored_text", "duplicates",
                            "detect", "count_objects", "faces", "count_faces",
                            "stored_objects"}
    classify = catalog["classify"]
    assert [[p["type"] for p in o["params"]] for o in classify["overloads"]] == \
        [["BLOB", "INTEGER", "VARCHAR"], ["VARCHAR", "INTEGER", "VARCHAR"]]  # top_k, missing
    assert classify["overloads"][0]["params"][1]["default"] == 5
    assert [c["name"] for c in classify["columns"]] == ["rank", "idx", "label", "wnid",
                                                        "confidence"]
    for spec in catalog.values():
        assert spec["description"] and spec["example"].startswith("SELECT")
        assert all(c["doc"] for c in spec["columns"])


def test_shipped_table_functions_terminate_with_each_row_once(
        vision_registry: Registry, fixture_bytes: dict[str, bytes]) -> None:
    classes = invoke_table_function(vision_registry.get("image_classes"), argument_rows([], 1))
    assert classes.column("idx").to_pylist() == list(range(1000))

    images = list(fixture_bytes.values()) * 20 + [None, b"junk"]  # 82 rows: several ticks
    table = invoke_table_function(vision_registry.get("classify"),
                                  argument_rows([pa.array(images, pa.binary()),
                                                 pa.array([3] * len(images), pa.int32())]))
    keys = list(zip(table.column(INPUT_ROW).to_pylist(), table.column("rank").to_pylist(),
                    strict=True))
    assert len(keys) == len(set(keys)) == 80 * 3
    assert {r for r, _ in keys} == set(range(80))


def test_tokens_open_only_what_they_sealed() -> None:
    sealer = TokenSealer(b"k" * 32)
    digest = b"d" * 32
    token = sealer.seal(digest, b"state")
    assert sealer.open(token, digest) == b"state"
    with pytest.raises(TokenError, match="different call"):
        sealer.open(token, b"e" * 32)
    with pytest.raises(TokenError):
        TokenSealer(b"x" * 32).open(token, digest)
    expired = TokenSealer(b"k" * 32, ttl_seconds=-10).seal(digest, b"state")
    with pytest.raises(TokenError, match="expired"):
        sealer.open(expired, digest)
    with pytest.raises(ValueError):
        TokenSealer(b"short")
