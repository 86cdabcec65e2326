"""Do the security tests still bite? Break each safeguard on purpose and see a test fail.

Each mutation below rewrites one safeguard in a scratch copy of the repository (the working
tree here, uncommitted edits included) and runs the tests that claim to guard it, against that
copy (workers started by the tests import the copy too, through ``PYTHONPATH``). A mutation is
*caught* when those tests fail, and *survived* when they pass: then a green suite would no
longer mean the safeguard works. The same tests are first run on the unmutated copy, which must
pass, so a failure is the mutation's doing and not a broken checkout.

    python -m scripts.mutation_check               # every mutation
    python -m scripts.mutation_check --only scan-handle-not-bound-to-call
    python -m scripts.mutation_check --list

Exit status 0 when every mutation is caught, 1 when one survives or the baseline fails, 2 when
a mutation no longer applies (the code it rewrites has changed: update the mutation).
"""

from __future__ import annotations

import argparse
import os
import py_compile
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SKIP = shutil.ignore_patterns(".git", ".venv", "__pycache__", ".mypy_cache", ".ruff_cache",
                              ".pytest_cache", "*.egg-info", "build", "dist")
AUTH = "test/worker/test_security_auth.py"
CONFINEMENT = "test/worker/test_security_confinement.py"
LIMITS = "test/worker/test_security_limits.py"
USER_MODEL = "test/worker/test_user_model.py"
GALLERY = "test/gallery/test_gallery.py"
HTTP_SURFACE = "test/transports/test_http_surface.py"
HOSTILE_WORKER = "test/client/test_hostile_worker.py"
ABANDONED = "test/worker/test_abandoned_scans.py"
OBJECTS = "test/worker/test_objects.py"
CLASSIFY_CLI = "test/cli/test_classify.py"
HOSTILE_SQL = "test/sql/hostile.test::hostile.test[subprocess]"
REFUSED = f"{CLASSIFY_CLI}::test_mistakes_are_refused_in_one_line_before_a_worker_starts"


@dataclass(frozen=True)
class Mutation:
    name: str
    what: str
    file: str
    before: str
    after: str
    tests: tuple[str, ...]

    def apply(self, tree: Path) -> None:
        """Rewrite every occurrence of ``before`` (a check may be kept on several paths)."""
        target = tree / self.file
        source = target.read_text()
        if self.before not in source:
            raise LookupError(f"{self.name}: the code it rewrites is no longer in "
                              f"{self.file}; update the mutation")
        target.write_text(source.replace(self.before, self.after))
        if target.suffix == ".py":  # templates are mutated too
            py_compile.compile(str(target), doraise=True)


RECHECK = """            if not self.contains(opened_path(fd, real)):
                raise FunctionError(f"path {path!r} is outside the data root",
                                    kind=ErrorKind.PATH_REFUSED)
"""
JOIN = "(candidate if candidate.is_absolute() else self.root / candidate)"

MUTATIONS = (
    Mutation("object-prefix-not-checked",
             "an object URL is read whatever prefix it is under",
             "vgi_vision/objects.py",
             "not any(parsed.prefix.startswith(p) for p in self.prefixes)", "False",
             (f"{OBJECTS}::test_urls_outside_the_prefixes_are_refused",
              f"{OBJECTS}::test_a_prefix_admits_only_what_is_below_it")),
    Mutation("object-prefix-without-slash",
             "a URL prefix is compared without its trailing '/' (lets in 'photos-private/')",
             "vgi_vision/objects.py", 'r.rstrip("/") + "/"', 'r',
             (f"{OBJECTS}::test_a_prefix_admits_only_what_is_below_it",)),
    Mutation("object-dot-segments-allowed",
             "object keys with '.' or '..' segments are taken as they are",
             "vgi_vision/objects.py", 'any(s in (".", "..") for s in segments)', "False",
             (f"{OBJECTS}::test_urls_outside_the_prefixes_are_refused",
              f"{OBJECTS}::test_a_prefix_admits_only_what_is_below_it")),
    Mutation("object-size-not-checked-first",
             "an object is downloaded before its size is compared with the limit",
             "vgi_vision/objects.py", "if not 0 < handle.size() <= max_bytes:",
             "if False:",
             (f"{OBJECTS}::test_an_oversized_object_is_refused_before_download",)),
    Mutation("object-reads-not-retried",
             "throttled or failing object reads are tried once",
             "vgi_vision/objects.py", "max_attempts=MAX_ATTEMPTS", "max_attempts=1",
             (f"{OBJECTS}::test_throttling_is_waited_out",)),
    Mutation("object-failure-as-null",
             "an object read that keeps failing is a silent NULL instead of an error",
             "vgi_vision/objects.py",
             "        except OSError as exc:\n            raise ObjectStoreError(",
             "        except OSError as exc:\n            return None\n"
             "            raise ObjectStoreError(",
             (f"{OBJECTS}::test_storage_that_keeps_failing_is_an_error_not_a_null",)),
    Mutation("missing-object-answered-apart",
             "a missing object is answered in the object reader ('no image') instead of "
             "raising what a missing file raises, so it would not follow the missing-file rule",
             "vgi_vision/objects.py",
             """        except FileNotFoundError:
            raise""",
             """        except FileNotFoundError:
            return None""",
             (f"{OBJECTS}::test_a_missing_object_raises_what_a_missing_file_raises",)),
    Mutation("gallery-shows-any-url",
             "the gallery shows a stored URL whatever prefix it is under",
             "vgi_vision/gallery/facts.py", "return self._paths.objects.check(path).prefix",
             "return path",
             ("test/gallery/test_gallery_object_store.py::"
              "test_only_urls_under_the_data_root_are_shown",)),
    Mutation("object-plain-http-allowed",
             "a plain-HTTP S3 endpoint is used without AWS_ALLOW_HTTP=true",
             "vgi_vision/objects.py",
             'os.environ.get("AWS_ALLOW_HTTP", "").lower() != "true"', "False",
             (f"{OBJECTS}::test_plain_http_needs_the_standard_opt_in",)),
    Mutation("containment-string-prefix",
             "data-root containment as a string-prefix test (lets in a sibling 'root-private')",
             "vgi_vision/worker/paths.py",
             "(real == self.root or self.root in real.parents)",
             "str(real).startswith(str(self.root))",
             (f"{CONFINEMENT}::test_paths_escaping_the_root_are_refused",
              f"{CONFINEMENT}::test_the_resolver_alone_refuses_every_escape")),
    Mutation("descriptor-recheck-removed",
             "PathPolicy.source() no longer re-checks the file its descriptor opened",
             "vgi_vision/worker/paths.py", RECHECK, "",
             (f"{CONFINEMENT}::test_a_symlink_swapped_in_after_the_check_is_refused_at_open",)),
    Mutation("recheck-trusts-the-checked-path",
             "the re-check looks at the path it opened by, not at the descriptor "
             "(the resolver is the only working layer)",
             "vgi_vision/worker/paths.py",
             'return Path(os.readlink(f"/proc/self/fd/{fd}"))',
             "return Path(fallback)",
             (f"{CONFINEMENT}::test_a_symlink_swapped_in_after_the_check_is_refused_at_open",)),
    Mutation("resolver-leaves-path-unresolved",
             "the resolver joins the path without resolving '..' or symlinks "
             "(the descriptor re-check is the only working layer)",
             "vgi_vision/worker/paths.py", f"{JOIN}.resolve()", JOIN,
             (f"{CONFINEMENT}::test_the_resolver_alone_refuses_every_escape",
              f"{CONFINEMENT}::test_escapes_to_missing_files_are_refused_too")),
    Mutation("resolver-lexical-only",
             "the resolver folds '..' as text but follows no symlink "
             "(the descriptor re-check is the only layer that sees symlinks)",
             "vgi_vision/worker/paths.py", f"{JOIN}.resolve()", f"Path(os.path.normpath({JOIN}))",
             (f"{CONFINEMENT}::test_the_resolver_alone_refuses_every_escape",
              f"{CONFINEMENT}::test_escapes_to_missing_files_are_refused_too")),
    Mutation("scan-handle-not-bound-to-call",
             "LiveStates.load (stdio, unix) drops the call-digest comparison",
             "vgi_vision/worker/dispatcher.py",
             "if entry is None or entry[0] != call_digest:",
             "if entry is None:",
             (f"{LIMITS}::test_a_continuation_is_refused_for_any_other_call",)),
    Mutation("scan-handle-reusable",
             "LiveStates.load leaves a resumed scan's handle valid (replays run a tick twice)",
             "vgi_vision/worker/dispatcher.py", "            del self._scans[token]\n", "",
             (f"{LIMITS}::test_a_scan_handle_resumes_once",)),
    Mutation("worker-held-scans-unbounded",
             "LiveStates keeps every unfinished scan (no eviction of the oldest)",
             "vgi_vision/worker/dispatcher.py",
             "            while len(self._scans) > self._max_scans:\n"
             "                self._scans.popitem(last=False)\n", "",
             (f"{LIMITS}::test_worker_held_scans_are_bounded",)),
    Mutation("token-mac-unchecked",
             "continuation tokens are opened without checking their HMAC tag",
             "vgi_vision/worker/tokens.py",
             "if not hmac.compare_digest(tag, hmac.new(self._key, body, hashlib.sha256).digest()):",
             "if False:",
             ("test/transports/test_http.py::test_damaged_tokens_are_rejected_before_deserializing",)),
    Mutation("token-call-unchecked",
             "continuation tokens (HTTP) are opened without comparing their call digest",
             "vgi_vision/worker/tokens.py",
             "if not hmac.compare_digest(digest, call_digest):", "if False:",
             ("test/transports/test_http.py::test_token_is_bound_to_its_call",
              f"{LIMITS}::test_a_continuation_is_refused_for_any_other_call")),
    Mutation("token-expiry-unchecked",
             "expired continuation tokens are still accepted",
             "vgi_vision/worker/tokens.py", "if expiry < time.time():", "if False:",
             ("test/worker/test_registry.py::test_tokens_open_only_what_they_sealed",)),
    Mutation("bearer-token-unchecked",
             "HTTP accepts any bearer token",
             "vgi_vision/protocol/bearer.py",
             'return scheme.lower() == "bearer" and hmac.compare_digest(',
             'return scheme.lower() == "bearer" or hmac.compare_digest(',
             (f"{AUTH}::test_missing_or_wrong_token_is_refused_before_any_work",)),
    Mutation("public-bind-without-token",
             "serve --http on a public address starts without a bearer token",
             "vgi_vision/worker/serve/start.py",
             "if is_loopback(host) or insecure_no_auth:", "if True:",
             (f"{AUTH}::test_public_bind_without_token_is_refused",)),
    Mutation("nul-byte-accepted",
             "a path containing a NUL byte is not refused up front",
             "vgi_vision/worker/paths.py", 'if "\\x00" in path:', "if False:",
             (f"{CONFINEMENT}::test_paths_escaping_the_root_are_refused",)),
    Mutation("unix-socket-open-to-all",
             "the unix socket is created without the owner-only umask",
             "vgi_vision/worker/serve/unix.py", "os.umask(0o177)", "os.umask(0o000)",
             (f"{CONFINEMENT}::test_unix_socket_is_owner_only",)),
    Mutation("unix-connections-uncapped",
             "a unix worker serves any number of connections at once",
             "vgi_vision/worker/serve/unix.py",
             "if not server.slots.admit(connection):", "if False:",
             (f"{LIMITS}::test_connections_over_the_cap_get_a_clear_error",)),
    Mutation("unix-idle-unbounded",
             "a unix worker waits forever on an idle or stalled connection",
             "vgi_vision/worker/serve/unix.py",
             "self.sock.settimeout(timeout)", "self.sock.settimeout(None)",
             (f"{LIMITS}::test_idle_and_stalled_connections_are_closed",)),
    Mutation("request-size-unbounded",
             "the dispatcher no longer bounds a request's size",
             "vgi_vision/worker/dispatcher.py",
             "if len(data) > self.limits.max_request_bytes:", "if False:",
             (f"{CONFINEMENT}::test_oversized_request_is_refused_and_the_worker_serves_on",
              f"{LIMITS}::test_the_dispatcher_bounds_a_request_on_its_own")),
    Mutation("frame-size-unbounded",
             "stdio and unix read a frame of any size (only the dispatcher bounds it)",
             "vgi_vision/worker/serve/streams.py",
             "read_frame(reader, dispatcher.limits.max_request_bytes)",
             "read_frame(reader, 1 << 62)",
             (f"{CONFINEMENT}::test_oversized_request_is_refused_and_the_worker_serves_on",
              f"{LIMITS}::test_an_oversized_request_is_refused_before_it_is_dispatched")),
    Mutation("rows-per-call-unbounded",
             "the dispatcher no longer bounds argument rows per call",
             "vgi_vision/worker/dispatcher.py",
             "if batch.num_rows > self.limits.max_rows_per_call:", "if False:",
             (f"{CONFINEMENT}::test_too_many_rows_per_call_is_refused",)),
    Mutation("pixel-limit-unchecked",
             "images are decoded whatever their pixel count",
             "vgi_vision/worker/vision/imaging.py",
             "width * height > limits.max_pixels", "False",
             (f"{LIMITS}::test_per_image_byte_and_pixel_limits",)),
    Mutation("writeback-recovery-skipped",
             "a LanceDB store opens without rolling back runs a killed worker left unfinished",
             "vgi_vision/worker/lance/store.py",
             "await store.recover(recovery_grace_seconds)", "pass",
             ("test/worker/test_lance.py::test_sigterm_drains_and_kill9_recovers",)),
    Mutation("top-k-partial-sort",
             "top-k indices partitioned (argpartition) instead of sorted",
             "vgi_vision/worker/vision/model.py",
             'np.argsort(-probabilities, axis=1, kind="stable")[:, :k]',
             "np.argpartition(-probabilities, k - 1, axis=1)[:, :k]",
             ("test/worker/test_model.py::test_probabilities_are_sorted_probabilities",)),
    Mutation("classify-queue-unbounded",
             "a classify call queues all of its runs for the lanes at once, so a small call "
             "made meanwhile waits for the whole large one",
             "vgi_vision/worker/vision/model.py",
             "queued_runs = max(1, -(-self.batch_size // step))",
             "queued_runs = len(sources)",
             ("test/worker/test_model.py::"
              "test_a_small_call_waits_behind_a_large_one_for_a_batch_not_to_its_end",)),
    # --- bearer tokens, compressed bodies, attach through a cursor
    Mutation("bearer-lossy-encoding",
             "bearer tokens compared after a lossy Latin-1 encoding (non-Latin-1 letters -> '?')",
             "vgi_vision/protocol/bearer.py",
             "hmac.compare_digest(presented, token.encode())",
             'hmac.compare_digest(given.strip().encode("latin-1", "replace"), '
             'token.encode("latin-1", "replace"))',
             (f"{AUTH}::test_bearer_tokens_are_compared_as_exact_bytes",)),
    Mutation("token-alphabet-unchecked",
             "a bearer token of any characters is accepted at start-up",
             "vgi_vision/protocol/bearer.py",
             "if not TOKEN_PATTERN.fullmatch(token):", "if False:",
             (f"{AUTH}::test_a_token_outside_the_allowed_characters_is_refused_at_start",)),
    Mutation("compressed-bodies-decoded",
             "compressed Arrow IPC bodies are decompressed before any limit",
             "vgi_vision/protocol/messages.py",
             "refuse_compressed_bodies(buffer)  # before the reader decompresses anything",
             "pass",
             (f"{LIMITS}::test_a_compressed_message_is_refused_before_it_is_decompressed",
              f"{LIMITS}::test_a_compression_bomb_costs_the_worker_no_memory")),
    Mutation("cursor-udfs-not-kept",
             "attach keeps no reference to its UDF callables (a closed cursor frees them)",
             "vgi_vision/client/binding.py", "        self.callables.append(udf)\n", "",
             ("test/client/test_binding.py::test_attach_through_a_cursor_survives_losing_the_cursor",)),
    Mutation("cursor-registrations-freed",
             "registrations that could not be removed are freed anyway",
             "vgi_vision/client/binding.py",
             "_retired.append((self.owner, self.callables))", "_retired.clear()",
             ("test/client/test_binding.py::test_attach_through_a_cursor_survives_losing_the_cursor",)),
    Mutation("registered-through-the-users-cursor",
             "attach registers through the user's connection or cursor, not its own cursor",
             "vgi_vision/client/binding.py",
             "Attachment(weakref.ref(con), con.cursor(), name, client)",
             "Attachment(weakref.ref(con), con, name, client)",
             ("test/client/test_binding.py::test_attach_through_a_cursor_survives_losing_the_cursor",)),
    # --- imaging, OCR and model options
    Mutation("image-formats-unrestricted",
             "untrusted images are opened in any format Pillow knows (ICO and ICNS decode an "
             "embedded PNG while opening)",
             "vgi_vision/worker/vision/budget.py",
             "Image.open(io.BytesIO(data), formats=DECODABLE_FORMATS)",
             "Image.open(io.BytesIO(data))",
             ("test/worker/test_hostile_images.py::test_icons_that_decode_while_opening_are_never_opened",
              "test/worker/test_hostile_images.py::test_the_gallery_reads_no_facts_from_icon_bombs")),
    Mutation("decoder-overhead-uncounted",
             "a decode's cost counts the frame only, not what the WebP, JPEG 2000 or AVIF "
             "decoder holds besides it",
             "vgi_vision/worker/vision/budget.py",
             'per_pixel += DECODER_BYTES_PER_PIXEL.get(image_format or "", 0)', "pass",
             ("test/worker/test_hostile_images.py::test_decode_cost_covers_each_decoders_measured_peak",)),
    Mutation("ocr-working-image-uncounted",
             "OCR's decode holds only the frame's cost, not its 2000 x 2000 working image's",
             "vgi_vision/worker/vision/imaging.py",
             "working_pixels=max_side**2", "working_pixels=0",
             ("test/worker/test_hostile_images.py::test_ocr_decodes_a_sixteen_bit_image_within_its_cost",)),
    Mutation("gps-west-sign-ignored",
             "a GPS longitude west of Greenwich is read as east",
             "vgi_vision/worker/vision/facts.py",
             'GPSLongitudeRef, "W", 180.0)', 'GPSLongitudeRef, "", 180.0)',
             ("test/worker/test_facts.py::test_north_and_west_give_a_positive_latitude_and_a_negative_"
              "longitude",)),
    Mutation("normalization-finiteness-unchecked",
             "a model's normalization may be NaN or infinite (every confidence NaN)",
             "vgi_vision/worker/vision/model_files.py",
             "and math.isfinite(v) for v in values", "for v in values",
             (f"{USER_MODEL}::test_each_problem_has_one_clear_error[normalization NaN]",
              f"{USER_MODEL}::test_each_problem_has_one_clear_error[normalization infinite]")),
    Mutation("resize-shorter-side-unchecked",
             "a model's resize_shorter_side may be 0, negative or below its input size",
             "vgi_vision/worker/vision/model_files.py",
             "if not size[0] <= resize_shorter_side <= MAX_INPUT_SIZE:", "if False:",
             (f"{USER_MODEL}::test_each_problem_has_one_clear_error"
              "[resize_shorter_side not positive]",)),
    Mutation("probe-batch-rows-unchecked",
             "the start-up probe accepts outputs without one row per image of its batch",
             "vgi_vision/worker/vision/model_files.py",
             "if result.ndim != 2 or result.shape[0] != PROBE_BATCH:", "if result.ndim != 2:",
             (f"{USER_MODEL}::test_each_problem_has_one_clear_error[graph ignores the batch]",)),
    Mutation("user-model-takes-shipped-name",
             "a user's model may be named like a shipped model (and merge into its stored rows)",
             "vgi_vision/worker/vision/model_files.py",
             "if not shipped and name in shipped_model_names():", "if False:",
             (f"{USER_MODEL}::test_each_problem_has_one_clear_error[a shipped model's name]",)),
    Mutation("folded-input-name-clash",
             "the folded graph's uint8 input takes its name even when a tensor of the model "
             "already has it",
             "vgi_vision/worker/vision/folding.py",
             "    while candidate in taken:", "    while False:",
             ("test/worker/test_folding.py::test_the_folded_input_takes_uint8_pixels_under_a_"
              "name_of_its_own",
              "test/worker/test_folding.py::test_a_user_model_with_its_own_layout_"
              "normalization_and_names")),
    Mutation("ocr-lines-per-image-unbounded",
             "OCR recognizes every text box an image has",
             "vgi_vision/worker/vision/ocr.py",
             "for box in boxes[:self.max_lines]]", "for box in boxes]",
             ("test/worker/test_ocr.py::test_an_image_gives_at_most_max_lines_lines_the_first_in_"
              "reading_order",)),
    Mutation("ocr-time-unbounded",
             "OCR recognition runs on past an image's time bound",
             "vgi_vision/worker/vision/ocr.py",
             "            if time.monotonic() >= deadline:\n                break\n", "",
             ("test/worker/test_ocr.py::test_recognition_stops_at_the_time_bound",)),
    Mutation("ocr-page-in-one-turn",
             "one turn of the shared OCR sessions recognizes a whole page (a one-image call "
             "waits for all of it)",
             "vgi_vision/worker/vision/ocr.py",
             "LINES_PER_TURN = 8", "LINES_PER_TURN = 1000",
             ("test/worker/test_ocr.py::test_a_one_image_read_is_not_held_up_by_a_long_page_in_flight",)),
    Mutation("pending-rows-dropped",
             "ocr or detect emits one tick's rows of an image with many items and forgets the rest",
             "vgi_vision/worker/calls/item_pages.py",
             "state.pending = to_ipc(found.slice(ROWS_PER_TICK))", "state.pending = b\"\"",
             ("test/worker/test_detect_functions.py::test_many_objects_page_across_ticks_and_"
              "resume_from_serialized_state",
              "test/worker/test_ocr.py::test_many_lines_take_bounded_ticks_and_resume_from_"
              "serialized_state")),
    Mutation("count-objects-label-unchecked",
             "count_objects counts any label, answering 0 for a misspelt one",
             "vgi_vision/worker/functions/count_objects.py",
             "        check_labels(labels, detector.labels, detector.info.name)\n", "",
             ("test/worker/test_detect_functions.py::test_count_objects_names_the_closest_"
              "labels_of_an_unknown_one",)),
    Mutation("detect-min-score-unchecked",
             "the detectors accept a min_score outside 0..1",
             "vgi_vision/worker/vision/detection.py",
             "            or not 0.0 <= value <= 1.0:", "            or False:",
             ("test/worker/test_detection.py::test_min_score_filters_and_is_checked",)),
    Mutation("detector-checksum-unchecked",
             "a detector's model.onnx is loaded without checking its sha256",
             "vgi_vision/worker/vision/detection.py",
             "        verify_sha256(info.onnx_file, info.sha256)\n", "",
             ("test/worker/test_detection.py::test_a_detector_directory_is_checked_with_errors_"
              "naming_the_problem",)),
    Mutation("face-anchors-unmatched",
             "BlazeFace outputs are decoded against an anchor grid of another size",
             "vgi_vision/worker/vision/faces.py",
             "        if raw.shape[1] != len(self.anchors):", "        if False:",
             ("test/worker/test_detection.py::test_a_face_model_whose_anchors_do_not_match_its_"
              "outputs_is_refused",)),
    Mutation("face-logits-unclipped",
             "BlazeFace logits reach the sigmoid unclipped (overflow on hostile outputs)",
             "vgi_vision/worker/vision/faces.py",
             "np.clip(logits.astype(np.float64), -LOGIT_LIMIT, LOGIT_LIMIT)",
             "logits.astype(np.float32)",
             ("test/worker/test_detect_functions.py::test_extreme_logits_give_scores_of_zero_and_"
              "one_without_overflow",)),
    Mutation("detector-class-ids-unordered",
             "a detector's class table may list ids out of order (a shuffled line shifts labels)",
             "vgi_vision/worker/vision/detector_files.py",
             "                or (table and int(cells[0]) <= max(table)):", ":",
             ("test/worker/test_detection.py::test_class_tables_must_name_increasing_ids_with_"
              "unique_labels",)),
    # --- HTTP worker and gallery surfaces
    Mutation("gallery-exif-unescaped",
             "the gallery renders EXIF fact values as markup",
             "vgi_vision/gallery/templates/detail.html",
             '<dd class="fact">{{ value }}</dd>', '<dd class="fact">{{ value|safe }}</dd>',
             (f"{GALLERY}::test_hostile_exif_is_shown_escaped",)),
    Mutation("gallery-cookie-unchecked",
             "the gallery accepts its token cookie whatever its value",
             "vgi_vision/gallery/app.py",
             'self.matches(request.cookies.get(TOKEN_COOKIE, ""))',
             "TOKEN_COOKIE in request.cookies",
             (f"{GALLERY}::test_a_token_protects_every_page_and_a_link_with_it_logs_in",)),
    Mutation("gallery-open-redirect",
             "the gallery's login redirect goes to the request path as decoded (//host)",
             "vgi_vision/gallery/app.py",
             'return "/" + quote(path.lstrip("/"), safe="/")', 'return quote(path, safe="/")',
             (f"{GALLERY}::test_the_login_redirect_stays_on_the_gallery",)),
    Mutation("gallery-error-without-headers",
             "the gallery's security headers are left off error responses",
             "vgi_vision/gallery/app.py",
             'if message["type"] == "http.response.start":',
             'if message["type"] == "http.response.start" and message["status"] < 500:',
             (f"{GALLERY}::test_a_failing_page_still_carries_the_security_headers",)),
    Mutation("gallery-holed-vector-searched",
             "the gallery searches neighbours with a stored vector holding a NULL",
             "vgi_vision/gallery/catalog.py",
             "if vector is None or None in vector:", "if vector is None:",
             (f"{GALLERY}::test_null_predictions_and_vectors_show_as_missing",)),
    Mutation("gallery-csv-formula-kept",
             "the gallery's CSV export hands a cell starting with '=' to a spreadsheet as is",
             "vgi_vision/gallery/export.py",
             'FORMULA_STARTS = ("=", "+", "-", "@", "\\t", "\\r")',
             'FORMULA_STARTS = ("+", "-", "@", "\\t", "\\r")',
             (f"{GALLERY}::test_the_csv_export_never_hands_a_spreadsheet_a_formula",)),
    Mutation("gallery-copies-trust-runs",
             "the gallery's path counts follow only the images new runs stored, so a copy "
             "stored under a new name by a later run is never counted",
             "vgi_vision/gallery/copies.py",
             "if await asyncio.to_thread(_sum, con) == (await store.path_rows() or 0):",
             "if True:",
             (f"{GALLERY}::test_images_stored_from_several_paths_carry_a_badge_and_a_facet",)),
    Mutation("job-id-unchecked",
             "a request's job id is stored whatever it holds",
             "vgi_vision/worker/jobs.py",
             "if not isinstance(value, str) or not JOB_ID.fullmatch(value):",
             "if not isinstance(value, str):",
             ("test/worker/test_writeback_replay.py::"
              "test_a_job_id_travels_with_a_scan_over_http_and_survives_replays",)),
    Mutation("gallery-stored-job-unchecked",
             "the gallery groups runs by a stored job id whatever it holds",
             "vgi_vision/gallery/jobs.py",
             "if isinstance(job, str) and JOB_ID.fullmatch(job)}", "if isinstance(job, str)}",
             (f"{GALLERY}::test_a_malformed_stored_job_id_leaves_its_run_an_entry_of_its_own",)),
    Mutation("host-header-prefix-match",
             "a Host header only has to start with a loopback name (localhost:1@evil.com)",
             "vgi_vision/loopback.py",
             "HOST_HEADER.fullmatch(host_header)", "HOST_HEADER.match(host_header)",
             (f"{GALLERY}::test_only_loopback_host_names_are_served",
              f"{HTTP_SURFACE}::test_a_loopback_worker_without_a_token_refuses_other_host_names")),
    Mutation("worker-host-unchecked",
             "a loopback HTTP worker without a token answers to any Host (DNS rebinding)",
             "vgi_vision/worker/serve/http.py",
             'if self.loopback_hosts_only and not is_loopback_host(headers.get("host", "")):',
             "if False:",
             (f"{HTTP_SURFACE}::test_a_loopback_worker_without_a_token_refuses_other_host_names",)),
    Mutation("http-body-deadline-removed",
             "an HTTP body that stalls is waited for forever (no --idle-timeout while reading)",
             "vgi_vision/worker/serve/http.py",
             "config.read_timeout = max(1, round(idle_timeout))", "config.read_timeout = None",
             (f"{HTTP_SURFACE}::test_a_body_that_stalls_is_cut_off_after_the_idle_timeout",)),
    Mutation("max-connections-zero-accepted",
             "serve takes --max-connections 0 (every HTTP request then waits forever)",
             "vgi_vision/cli/serve.py",
             'p.add_argument("--max-connections", type=positive(int)',
             'p.add_argument("--max-connections", type=int',
             (f"{HTTP_SURFACE}::test_serve_refuses_limits_below_one[0---max-connections]",)),
    # --- client response checks, write-back expiry and replays, compaction, shutdown ---------
    Mutation("client-input-row-unchecked",
             "the client takes scan rows whose input_row names no argument row it sent",
             "vgi_vision/client/responses.py",
             "if low < 0 or high >= rows_sent:", "if False:",
             (f"{HOSTILE_WORKER}::test_scan_rows_must_answer_an_argument_row_that_was_sent",)),
    Mutation("client-result-schema-unchecked",
             "the client takes result batches whose columns differ from the catalog's",
             "vgi_vision/client/responses.py",
             "if not batch.schema.equals(expected):", "if False:",
             (f"{HOSTILE_WORKER}::test_scan_pages_must_have_the_promised_columns",
              f"{HOSTILE_WORKER}::test_scalar_results_are_one_value_of_the_promised_type_per_row",
              )),
    Mutation("client-call-row-count-unchecked",
             "the client takes a scalar result with more or fewer values than rows sent",
             "vgi_vision/client/responses.py",
             "if batch.num_rows != rows_sent:", "if False:",
             (f"{HOSTILE_WORKER}::test_scalar_results_are_one_value_of_the_promised_type_per_row",
              )),
    Mutation("client-empty-pages-unbounded",
             "the client follows continuations that bring no rows without bound",
             "vgi_vision/client/responses.py",
             "if self.pages_without_rows >= MAX_PAGES_WITHOUT_ROWS:", "if False:",
             (f"{HOSTILE_WORKER}::test_a_scan_of_empty_pages_that_never_ends_is_cut_off",)),
    Mutation("client-scan-deadline-ignored",
             "a scan's continuations are followed past the client's timeout",
             "vgi_vision/client/responses.py",
             "if time.monotonic() > self.deadline:", "if False:",
             (f"{HOSTILE_WORKER}::test_a_scan_that_never_ends_stops_at_the_call_timeout",)),
    Mutation("staged-rows-never-expire",
             "write-back maintenance leaves the staged rows of abandoned scans for good",
             "vgi_vision/worker/lance/writeback.py",
             "                await self.store.recover(self.staged_lifetime_seconds)\n", "",
             (f"{ABANDONED}::test_maintenance_expires_abandoned_scans_and_keeps_live_ones",)),
    Mutation("recovery-grace-outlives-token-lifetime",
             "a recovery grace longer than the token lifetime keeps abandoned staged rows",
             "vgi_vision/worker/lance/store.py",
             "        recovery_grace_seconds = min(recovery_grace_seconds, "
             "staged_lifetime_seconds)\n", "",
             (f"{ABANDONED}::test_restart_with_a_recovery_grace_expires_scans_past_their_"
              f"lifetime",)),
    Mutation("merge-key-without-model",
             "stored rows are merged on the image alone: a second model's result is dropped",
             "vgi_vision/worker/lance/store.py",
             "await table.merge_insert(IMAGE_IDENTITY)", 'await table.merge_insert(["image_key"])',
             ("test/worker/test_writeback_replay.py::"
              "test_one_image_under_two_models_is_stored_once_per_model",)),
    Mutation("replayed-state-writes",
             "a replayed mid-scan state (classify, ocr, detect) stages rows again after its "
             "run committed",
             "vgi_vision/worker/calls/runs.py",
             "    if rows.start and store.committed(state.run_id):\n        return\n", "",
             ("test/worker/test_writeback_replay.py::test_a_mid_scan_token_replayed_last_stages_nothing",
              "test/worker/test_ocr_writeback.py::test_a_mid_scan_state_replayed_last_stages_nothing",
              "test/worker/test_detect_writeback.py::"
              "test_a_mid_scan_state_replayed_last_stages_nothing")),
    Mutation("gallery-face-count-unchecked",
             "the gallery's face-count filter takes any text from the query string",
             "vgi_vision/gallery/catalog.py",
             'faces=params.get("faces", "") if params.get("faces") in FACE_COUNTS else "",',
             'faces=params.get("faces", ""),',
             ("test/gallery/test_gallery.py::test_hostile_requests_get_a_page_or_a_404",)),
    Mutation("user-detector-unchecked-at-start",
             "serve --detector starts with a directory that is not an SSD detector",
             "vgi_vision/worker/build.py",
             "        objects()  # a directory of one's own is checked first", "        pass  #",
             ("test/worker/test_user_detector.py::"
              "test_serve_refuses_a_detector_that_is_not_ssd_in_one_line",)),
    Mutation("worker-compaction-retention-zero",
             "the worker's own maintenance removes every older version (pinned scans break)",
             "vgi_vision/worker/lance/writeback.py",
             "await self.store.maintain(kinds, self.version_retention, force=force)",
             "await self.store.maintain(kinds, timedelta(0), force=force)",
             ("test/worker/test_compaction.py::"
              "test_the_workers_own_maintenance_keeps_a_pinned_scan_readable",)),
    Mutation("write-back-in-flight-loose",
             "inference may run one batch further ahead of the LanceDB writer than allowed",
             "vgi_vision/worker/lance/writeback.py",
             "threading.BoundedSemaphore(max_in_flight)",
             "threading.BoundedSemaphore(max_in_flight + 1)",
             ("test/worker/test_lance.py::test_inference_waits_for_a_slow_writer",)),
    Mutation("draining-worker-serves",
             "a worker stopping after SIGTERM still serves new requests",
             "vgi_vision/worker/dispatcher.py",
             "admitted = not self._stopping", "admitted = True",
             ("test/worker/test_worker_lifecycle.py::"
              "test_requests_after_sigterm_are_refused_with_a_reason",)),
    Mutation("answer-sent-after-drain",
             "stdio and unix write an answer after the request stops counting as in flight "
             "(a worker told to stop may exit while it is being sent)",
             "vgi_vision/worker/serve/streams.py",
             "dispatcher.reply(request, states, deliver=lambda answer: "
             "write_frame(writer, answer))",
             "write_frame(writer, dispatcher.reply(request, states).data)",
             ("test/worker/test_worker_lifecycle.py::"
              "test_an_answer_still_being_sent_at_sigterm_is_sent_whole",)),
    Mutation("collected-connection-waits-for-attach",
             "a connection collected in a thread that attach() waits for blocks on its lock",
             "vgi_vision/client/binding.py",
             "if not _lock.acquire(blocking=False):", "if not _lock.acquire(blocking=True):",
             ("test/client/test_binding.py::"
              "test_a_connection_collected_in_a_thread_attach_waits_for_does_not_deadlock",)),
    Mutation("classify-format-mismatch-accepted",
             "classify writes the --format it is given into a file whose extension says another",
             "vgi_vision/cli/outputs.py",
             "if given is not None and implied is not None and given != implied:",
             "if False:", (REFUSED,)),
    Mutation("classify-output-folder-unchecked",
             "classify starts the worker although -o names a file in a missing folder",
             "vgi_vision/cli/outputs.py", "if not path.parent.is_dir():", "if False:",
             (REFUSED,)),
    Mutation("classify-missing-input-unchecked",
             "classify starts the worker for input paths that do not exist",
             "vgi_vision/cli/classify.py", "    if unmatched:", "    if False:", (REFUSED,)),
    Mutation("port-range-unchecked", "serve and browse take any integer as --port",
             "vgi_vision/cli/options.py", "port_number = bounded_int(0, 65535)",
             "port_number = int",
             (f"{CLASSIFY_CLI}::test_out_of_range_options_are_usage_errors",)),
    Mutation("skip-existing-ignores-top-k",
             "--skip-existing skips images stored with fewer classes than --top-k asks for",
             "vgi_vision/client/classify_command.py",
             'pc.greater_equal(batch["top_k"], top_k)', 'pc.greater_equal(batch["top_k"], 0)',
             (f"{CLASSIFY_CLI}::test_skip_existing_classifies_nothing_the_second_time",)),
    Mutation("sql-always-starts-a-worker",
             "vgi-vision sql starts a worker for SQL that never names the vision schema",
             "vgi_vision/cli/attaching.py", "if not self.attached and mentions_worker(sql):",
             "if not self.attached:",
             ("test/cli/test_cli.py::test_sql_without_the_vision_schema_starts_no_worker",)),
    Mutation("gallery-original-unverified",
             "the gallery serves a file as an image's full size without checking it still "
             "holds that image", "vgi_vision/gallery/facts.py",
             "if data is None or hashlib.sha256(data).hexdigest() != image_key:",
             "if data is None:",
             (f"{GALLERY}::test_the_full_size_file_is_served_only_while_it_holds_the_stored_"
              "image",)),
    Mutation("missing-path-silently-null",
             "a path naming no file gives NULL / no rows without missing := 'null'",
             "vgi_vision/worker/paths.py", "if missing == MISSING_NULL:", "if True:",
             (HOSTILE_SQL, f"{CONFINEMENT}::test_paths_inside_the_root_are_read")),
    Mutation("missing-folder-read-as-no-image",
             "a folder passed as a path (no data root) gives no rows instead of an error",
             "vgi_vision/worker/paths.py", "if stat.S_ISDIR(os.stat(real).st_mode):",
             "if False:", (HOSTILE_SQL,)),
    Mutation("missing-argument-unchecked", "a missing := value other than 'error' or 'null' "
             "is taken as 'error'", "vgi_vision/worker/paths.py",
             "if value not in MISSING_CHOICES:", "if False:", (HOSTILE_SQL,)),
    Mutation("image-key-spliced-unchecked",
             "an image key reaches a LanceDB filter without being checked as sha256 hex",
             "vgi_vision/worker/lance/paths.py",
             "if not isinstance(key, str) or not _IMAGE_KEY.fullmatch(key):",
             "if not isinstance(key, str):",
             ("test/worker/test_paths.py::test_only_sha256_keys_reach_a_filter",)),
    Mutation("path-first-seen-overwritten",
             "a path stored again gets the later run's first_seen",
             "vgi_vision/worker/lance/paths.py",
             "min(at, first.get((key, path), at))", "at",
             ("test/worker/test_paths.py::test_first_and_last_seen_move_only_forward",)),
    Mutation("model-name-spliced-unchecked",
             "a model name from a SQL argument reaches a LanceDB filter unchecked",
             "vgi_vision/worker/lance/vector_index.py",
             "return f\"model = '{model}'\" if _MODEL.fullmatch(model) else None",
             "return f\"model = '{model}'\"",
             ("test/worker/test_vector_index.py::test_only_plain_model_names_reach_a_filter",)),
    Mutation("similar-mixes-models",
             "a similarity search returns images another model stored",
             "vgi_vision/worker/lance/vector_index.py",
             ".where(where).nprobes(NPROBES)", ".nprobes(NPROBES)",
             ("test/worker/test_vector_index.py::test_a_search_never_leaves_its_model",)),
    Mutation("duplicates-bound-ignored",
             "duplicates() groups hashes one bit further apart than asked",
             "vgi_vision/worker/functions/duplicates.py",
             "np.nonzero(bits <= max_distance)", "np.nonzero(bits <= max_distance + 1)",
             ("test/worker/test_duplicates.py::"
              "test_groups_are_the_connected_pairs_within_the_bound",)),
    Mutation("run-id-spliced-unchecked",
             "a run id read from the store reaches the gallery's LanceDB filter unchecked",
             "vgi_vision/store.py",
             "        if not _RUN_ID.fullmatch(run_id):\n            raise",
             "        if False:\n            raise",
             ("test/test_store_reader.py::test_only_run_ids_reach_a_filter",)),
    Mutation("gallery-refresh-trusts-runs",
             "the gallery keeps its summary when its row count disagrees with the store's",
             "vgi_vision/gallery/catalog.py",
             "if stored == await images.count():", "if stored or await images.count():",
             ("test/gallery/test_catalog_refresh.py::"
              "test_new_runs_are_upserted_and_other_changes_reload",)),
)


def copy_repo(into: Path) -> Path:
    tree = into / "repo"
    shutil.copytree(REPO, tree, ignore=SKIP, symlinks=True)
    return tree


def run_tests(tree: Path, tests: tuple[str, ...], timeout: float, show_failures: bool = False
              ) -> tuple[int, list[str]]:
    """pytest's exit status on ``tests`` in ``tree``, and the tests that failed (with pytest's
    report when ``show_failures``: for the baseline, where a failure is not expected)."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    command = [sys.executable, "-m", "pytest", "-q", "-rf", "-p", "no:cacheprovider", *tests]
    try:
        done = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return -1, ["(timed out)"]
    failed = re.findall(r"^(?:FAILED|ERROR) (.+?)(?: - .*)?$", done.stdout, re.MULTILINE)
    if done.returncode not in (0, 1) or (failed and show_failures):
        sys.stderr.write(done.stdout[-6000:] + done.stderr[-4000:])
    return done.returncode, failed


def imports_from(tree: Path) -> bool:
    """Whether a Python started like the tests' workers imports the package from ``tree``."""
    found = subprocess.run([sys.executable, "-c", "import vgi_vision; print(vgi_vision.__file__)"],
                           cwd=tempfile.gettempdir(), env={**os.environ, "PYTHONPATH": str(tree)},
                           capture_output=True, text=True, check=True).stdout.strip()
    return Path(found).resolve().is_relative_to(tree.resolve())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", metavar="NAME",
                        help="run only this mutation (repeatable)")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--timeout", type=float, default=900,
                        help="seconds allowed for one pytest run (default 900)")
    options = parser.parse_args(argv)
    if options.list:
        for mutation in MUTATIONS:
            print(f"{mutation.name}: {mutation.what}")
        return 0
    unknown = set(options.only or ()) - {m.name for m in MUTATIONS}
    if unknown:
        parser.error(f"unknown mutation(s): {', '.join(sorted(unknown))}")
    chosen = [m for m in MUTATIONS if not options.only or m.name in options.only]

    with tempfile.TemporaryDirectory(prefix="vgi-mutation-") as scratch:
        pristine = copy_repo(Path(scratch))
        if not imports_from(pristine):
            print("the scratch copy is not what Python imports (is PYTHONPATH overridden?)")
            return 1
        tests = tuple(dict.fromkeys(t for m in chosen for t in m.tests))
        print(f"baseline: {len(tests)} test selection(s) on the unmutated copy ...", flush=True)
        status, failed = run_tests(pristine, tests, options.timeout, show_failures=True)
        if status != 0:
            print(f"baseline FAILED (pytest exit {status}): {failed}; fix that first")
            return 1
        survived, stale = [], []
        for mutation in chosen:
            tree = Path(scratch) / mutation.name
            shutil.copytree(pristine, tree, symlinks=True)
            try:
                mutation.apply(tree)
            except (LookupError, py_compile.PyCompileError) as exc:
                print(f"STALE     {mutation.name}: {exc}")
                stale.append(mutation.name)
                continue
            started = time.monotonic()
            status, failed = run_tests(tree, mutation.tests, options.timeout)
            verdict = "caught" if status == 1 else "SURVIVED" if status == 0 else \
                f"ERROR (pytest exit {status})"
            print(f"{verdict:<9} {mutation.name}: {mutation.what} "
                  f"[{time.monotonic() - started:.0f}s]", flush=True)
            for test in failed:
                print(f"            failed: {test}")
            if status != 1:
                survived.append(mutation.name)
            shutil.rmtree(tree, ignore_errors=True)
    caught = len(chosen) - len(survived) - len(stale)
    print(f"{caught} of {len(chosen)} mutations caught"
          + (f"; survived or errored: {', '.join(survived)}" if survived else "")
          + (f"; stale: {', '.join(stale)}" if stale else ""))
    return 2 if stale else 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
