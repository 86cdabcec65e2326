"""The dispatcher every transport shares: request bytes in, response bytes out.

Transports differ only in where a scan's state lives between ticks, which is a
:class:`StateStore`: live objects held for one connection (stdio, unix) or sealed into
continuation tokens that travel with the client (HTTP). ``Dispatcher.handle`` never raises:
whatever goes wrong becomes a structured error response and the worker keeps serving.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import pyarrow as pa

from vgi_vision.errors import ModelError, ProtocolError
from vgi_vision.objects import ObjectStoreError
from vgi_vision.protocol import (
    ErrorKind,
    argument_rows,
    decode,
    encode,
    error_message,
)
from vgi_vision.protocol.limits import DEFAULT_MAX_REQUEST_BYTES, DEFAULT_MAX_ROWS_PER_CALL
from vgi_vision.worker.jobs import checked_job, requested_job
from vgi_vision.worker.registry import Args, FunctionError, FunctionSpec, Registry
from vgi_vision.worker.state import ScanState, StateError
from vgi_vision.worker.ticks import TickGuardError, run_ticks
from vgi_vision.worker.tokens import TokenError, TokenSealer

log = logging.getLogger("vgi_vision.worker.dispatcher")

#: Ticks one request may run without emitting before the scan is declared stuck.
MAX_TICKS_PER_REQUEST = 1000

#: What a request arriving while the worker shuts down is told.
STOPPING_MESSAGE = ("the worker stopped during the call: it is shutting down and takes no new "
                    "requests")


@dataclass(frozen=True)
class ServerLimits:
    """Bounds on one request, so a single client cannot exhaust the worker."""

    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_rows_per_call: int = DEFAULT_MAX_ROWS_PER_CALL


class StateStore(Protocol):
    def save(self, spec: FunctionSpec, call_digest: bytes, state: ScanState) -> str: ...

    def load(self, spec: FunctionSpec, call_digest: bytes, token: str) -> ScanState: ...


class LiveStates:
    """Scan states kept in a worker's memory (shared by its connections), addressed by random
    handles, each bound to the digest of the call that saved it.

    Bounded: a client that opens scans and never finishes them evicts the oldest ones.
    """

    def __init__(self, max_scans: int = 256) -> None:
        self._scans: OrderedDict[str, tuple[bytes, ScanState]] = OrderedDict()
        self._max_scans = max_scans
        self._lock = threading.Lock()

    def save(self, spec: FunctionSpec, call_digest: bytes, state: ScanState) -> str:
        handle = secrets.token_urlsafe(16)
        with self._lock:
            self._scans[handle] = (call_digest, state)
            while len(self._scans) > self._max_scans:
                self._scans.popitem(last=False)
        return handle

    def load(self, spec: FunctionSpec, call_digest: bytes, token: str) -> ScanState:
        """The state behind ``token``, used up; only for the call that saved it, so a handle
        presented with other arguments or for another function is refused and its scan,
        untouched, still resumes for its own call."""
        with self._lock:
            entry = self._scans.get(token) if isinstance(token, str) else None
            if entry is None or entry[0] != call_digest:
                raise TokenError("unknown scan handle, or one belonging to a different call")
            del self._scans[token]
        return entry[1]


class SealedStates:
    """Scan states serialized into authenticated tokens: the worker keeps nothing."""

    def __init__(self, sealer: TokenSealer) -> None:
        self.sealer = sealer

    def save(self, spec: FunctionSpec, call_digest: bytes, state: ScanState) -> str:
        return self.sealer.seal(call_digest, state.to_bytes())

    def load(self, spec: FunctionSpec, call_digest: bytes, token: str) -> ScanState:
        if not isinstance(token, str):
            raise TokenError("continuation token must be a string")
        return spec.impl.state_type.from_bytes(self.sealer.open(token, call_digest))


def call_digest(function: str, batch: pa.RecordBatch, model: str = "") -> bytes:
    """Identity of a call: the function, its exact arguments (types and values) and the
    serving model (sha256), so a replica serving another model cannot resume the scan."""
    digest = hashlib.sha256(function.encode() + b"\x00" + model.encode() + b"\x00")
    digest.update(batch.schema.serialize())
    digest.update(batch.serialize())
    return digest.digest()


@dataclass(frozen=True)
class Reply:
    data: bytes
    error_kind: ErrorKind | None = None

    @property
    def http_status(self) -> int:
        return 200 if self.error_kind is None else self.error_kind.http_status


class Dispatcher:
    """Answers requests; counts those in flight so that shutting down can wait for them."""

    def __init__(self, registry: Registry, limits: ServerLimits = ServerLimits(),
                 worker_info: dict[str, Any] | None = None) -> None:
        self.registry = registry
        self.limits = limits
        self.worker_info = worker_info or {}
        self._model = str(self.worker_info.get("model_sha256", ""))
        self._in_flight = 0
        self._stopping = False
        self._idle = threading.Condition()

    def drain(self, timeout: float) -> bool:
        """Refuse new requests (``unavailable``) and wait for those in flight to be answered.

        Called when the worker is asked to stop, before write-back is closed, so no request is
        cut off inside the model or a LanceDB write. False if ``timeout`` ran out first.
        """
        with self._idle:
            self._stopping = True
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout)

    def handle(self, data: bytes, states: StateStore) -> bytes:
        """Answer one request. Never raises."""
        return self.reply(data, states).data

    def reply(self, data: bytes, states: StateStore,
              deliver: Callable[[bytes], None] | None = None) -> Reply:
        """Answer one request, with the error kind for transports that report a status.

        ``deliver``: sends the answer to the peer. It runs while the request still counts as
        in flight, so :meth:`drain` also waits for the answer to be written: a worker told to
        stop never exits between computing an answer and sending it. Only ``deliver`` raises.
        """
        with self._idle:
            admitted = not self._stopping
            if admitted:
                self._in_flight += 1
        if not admitted:
            refusal = Reply(error_message(ErrorKind.UNAVAILABLE, STOPPING_MESSAGE),
                            ErrorKind.UNAVAILABLE)
            if deliver is not None:
                deliver(refusal.data)
            return refusal
        try:
            reply = self._reply(data, states)
            if deliver is not None:
                deliver(reply.data)
            return reply
        finally:
            with self._idle:
                self._in_flight -= 1
                self._idle.notify_all()

    def _reply(self, data: bytes, states: StateStore) -> Reply:
        started = time.perf_counter()
        op, function = "?", ""
        kind: ErrorKind | None = None
        try:
            if len(data) > self.limits.max_request_bytes:
                raise FunctionError(f"request of {len(data)} bytes exceeds the limit of "
                                    f"{self.limits.max_request_bytes}",
                                    kind=ErrorKind.LIMIT_EXCEEDED)
            message = decode(data)
            op = str(message.header.get("op"))
            function = str(message.header.get("function", ""))
            return Reply(self._dispatch(op, function, message.header, message.batch, states))
        except (FunctionError, ObjectStoreError) as exc:  # refusals with a stable kind
            kind, text = exc.kind, str(exc)
        except (ProtocolError, StateError) as exc:
            kind, text = ErrorKind.BAD_REQUEST, str(exc)
        except TokenError as exc:
            kind, text = ErrorKind.INVALID_TOKEN, str(exc)
        except ModelError as exc:
            log.error("model error: %s", exc)
            kind, text = ErrorKind.MODEL_ERROR, str(exc)
        except Exception as exc:  # noqa: BLE001 - the worker must survive any bug
            log.exception("internal error in %s %s", op, function)
            kind, text = ErrorKind.INTERNAL, f"internal worker error: {type(exc).__name__}: {exc}"
        finally:
            log.info("%s %s %s %.1fms", op, function, kind or "ok",
                     (time.perf_counter() - started) * 1000)
        return Reply(error_message(kind, text), kind)

    def _dispatch(self, op: str, function: str, header: dict[str, Any],
                  batch: pa.RecordBatch | None, states: StateStore) -> bytes:
        if op == "describe":
            return encode({"ok": True, "catalog": self.registry.describe(),
                           "worker": self.worker_info})
        if op not in ("call", "scan"):
            raise FunctionError(f"unknown op {op!r}", kind=ErrorKind.BAD_REQUEST)
        spec = self.registry.get(function)
        wanted = "call" if spec.kind == "scalar" else "scan"
        if op != wanted:
            raise FunctionError(f"{spec.name} is a {spec.kind} function: use op {wanted!r}",
                                kind=ErrorKind.BAD_REQUEST)
        batch = batch if batch is not None else argument_rows([], 1)
        if batch.num_rows > self.limits.max_rows_per_call:
            raise FunctionError(f"{batch.num_rows} argument rows exceed the limit of "
                                f"{self.limits.max_rows_per_call} per call",
                                kind=ErrorKind.LIMIT_EXCEEDED)
        args = spec.resolve(batch)
        with requested_job(checked_job(header.get("job"))):
            return self._answer(op, spec, args, batch, header, states)

    def _answer(self, op: str, spec: FunctionSpec, args: Args, batch: pa.RecordBatch,
                header: dict[str, Any], states: StateStore) -> bytes:
        if op == "call":
            result = spec.impl(args)
            if len(result) != args.num_rows:
                raise RuntimeError(f"{spec.name} returned {len(result)} values for "
                                   f"{args.num_rows} rows")
            return encode({"ok": True}, pa.RecordBatch.from_arrays(
                [result], schema=spec.wire_schema))
        token = header.get("token")
        # Hashing the arguments costs a pass over every image's bytes: only when a token is
        # checked or minted, not for the many calls that finish in one response.
        state = states.load(spec, call_digest(spec.name, batch, self._model), token) if token \
            else spec.impl.initial_state(args)
        try:
            out = run_ticks(spec, args, state, MAX_TICKS_PER_REQUEST)
        except TickGuardError as exc:
            raise FunctionError(str(exc), kind=ErrorKind.INTERNAL) from None
        next_token = None if out.finished else \
            states.save(spec, call_digest(spec.name, batch, self._model), state)
        return encode({"ok": True, "done": out.finished, "token": next_token}, out.batch)
