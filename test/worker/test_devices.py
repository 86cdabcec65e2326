"""Execution-provider choice (``--device cpu|cuda|auto``) and model choice at start-up.

These machines have no GPU: the selection logic is tested on the provider lists onnxruntime
could report, and the real start-up paths on the CPU-only onnxruntime installed here (an
explicit ``cuda`` must refuse to start, ``auto`` must fall back to the CPU and say so).
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import duckdb
import onnxruntime
import pytest

import vgi_vision
from vgi_vision.client.client import Client
from vgi_vision.errors import ModelError
from vgi_vision.transports.stdio import WorkerStartError
from vgi_vision.worker.vision.model import load_classifier
from vgi_vision.worker.vision.providers import CPU, CUDA, check_provider, providers_for

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("device", "available", "wanted"), [
    ("cpu", [CPU], [CPU]),
    ("cpu", [CUDA, CPU], [CPU]),
    ("auto", [CPU], [CPU]),
    ("auto", [CUDA, CPU], [CUDA, CPU]),
    ("auto", ["TensorrtExecutionProvider", CUDA, CPU], [CUDA, CPU]),
    ("cuda", [CUDA, CPU], [CUDA, CPU]),
])
def test_providers_for(device: str, available: list[str], wanted: list[str]) -> None:
    assert providers_for(device, available) == wanted


def test_cuda_without_a_cuda_provider_is_an_error() -> None:
    with pytest.raises(ModelError, match="offers no CUDA provider .*onnxruntime-gpu"):
        providers_for("cuda", [CPU])


def test_unknown_device() -> None:
    with pytest.raises(ModelError, match="device must be one of cpu, cuda, auto, got 'tpu'"):
        providers_for("tpu", [CPU])


def test_cuda_that_fell_back_to_the_cpu_is_an_error() -> None:
    """onnxruntime-gpu without a usable GPU creates a CPU session with only a warning."""
    with pytest.raises(ModelError, match="could not start the CUDA provider"):
        check_provider("cuda", [CPU])
    assert check_provider("cuda", [CUDA, CPU]) == CUDA


def test_auto_logs_what_it_got(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="vgi_vision.worker.vision.providers"):
        assert check_provider("auto", [CPU]) == CPU
    assert "device auto: running on CPUExecutionProvider" in caplog.text


def test_installed_onnxruntime_is_cpu_only() -> None:
    """The premise of the start-up tests below; with a GPU build they would test nothing."""
    assert CUDA not in onnxruntime.get_available_providers()


def test_auto_falls_back_to_the_cpu_in_a_real_session() -> None:
    classifier = load_classifier(device="auto")
    assert classifier.provider == CPU
    result = classifier.classify([(REPO / "test/sql/data/coffee.png").read_bytes()], top_k=1)
    assert classifier.info.labels[int(result[0].indices[0])] == "espresso"


def serve(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vgi_vision", "serve", *args],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=120, cwd=REPO)


def one_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_serve_cuda_without_a_gpu_refuses_to_start() -> None:
    line = one_line(serve("--device", "cuda"))
    assert "--device cuda: this onnxruntime offers no CUDA provider" in line
    assert "onnxruntime-gpu" in line


def test_serve_unknown_model_refuses_to_start() -> None:
    line = one_line(serve("--model", "no-such-model"))
    assert "unknown model 'no-such-model'" in line and "efficientnet-lite0" in line


def test_attach_device_auto_reports_the_provider() -> None:
    con = duckdb.connect()
    vgi_vision.attach(con, device="auto")
    try:
        row = con.execute("SELECT name, provider FROM vision.models() WHERE serving").fetchone()
        assert row == ("efficientnet-lite0", CPU)
    finally:
        vgi_vision.detach(con)


def test_attach_device_cuda_fails_with_the_workers_message() -> None:
    con = duckdb.connect()
    with pytest.raises(WorkerStartError, match="no CUDA provider"):
        vgi_vision.attach(con, device="cuda")


def test_worker_info_names_the_serving_model() -> None:
    with Client() as client:
        info = client.worker_info()
    assert info["model"] == "efficientnet-lite0"
    assert info["model_precision"] == "fp32"
    assert info["model_classes"] == 1000
    assert info["device"] == "cpu" and info["provider"] == CPU
    assert len(info["model_sha256"]) == 64


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vgi_vision", *args], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=300, cwd=REPO)


def test_cli_commands_take_model_and_device() -> None:
    rows = cli("classify", "--model", "efficientnet-lite0-int8", "--device", "auto",
               "--top-k", "1", "--format", "csv", "test/sql/data/coffee.png")
    assert rows.returncode == 0, rows.stderr
    assert "espresso" in rows.stdout
    serving = cli("sql", "--model", "efficientnet-lite0-int8",
                  "SELECT name, provider FROM vision.models() WHERE serving")
    assert serving.returncode == 0, serving.stderr
    assert "efficientnet-lite0-int8" in serving.stdout and CPU in serving.stdout


def test_cli_model_flags_are_refused_for_a_running_worker() -> None:
    for command in (("classify", "test/sql/data/coffee.png"), ("sql", "SELECT 1")):
        result = cli(*command, "--location", "unix:///nowhere.sock", "--model",
                     "efficientnet-lite0-int8")
        assert result.returncode == 2
        assert "configure" in result.stderr and "--model" in result.stderr, result.stderr
