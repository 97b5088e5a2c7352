"""The tiny run logging to a real `mlflow server` process on loopback (SQLite
backend, one worker) instead of the local store."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request

import pytest

from conftest import ROOT, run_training


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def mlflow_server(tmp_path):
    port = _free_port()
    mlflow_bin = str(ROOT / ".venv" / "bin" / "mlflow") if (ROOT / ".venv" / "bin" / "mlflow").exists() else "mlflow"
    proc = subprocess.Popen([mlflow_bin, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                             "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
                             "--artifacts-destination", str(tmp_path / "server_artifacts")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            urllib.request.urlopen(url + "/health", timeout=2)
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail("mlflow server exited")
            time.sleep(0.5)
    else:
        _stop(proc)
        pytest.fail("mlflow server did not come up")
    yield url
    _stop(proc)


def _stop(proc: subprocess.Popen) -> None:
    """Stop the server and its workers (uvicorn, job runner, huey consumers): its whole process group."""
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue
        try:   # the leader is gone; its workers may still be shutting down
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return


def test_tiny_run_logs_to_a_tracking_server(training_env, mlflow_server, tmp_path):
    import mlflow

    overrides = [o for o in training_env["overrides"] if not o.startswith("paths.mlflow")]
    overrides += ["tracking=server", f"tracking.tracking_uri={mlflow_server}", "classifier.max_steps=2",
                  f"paths.bentoml_home={tmp_path / 'bentoml'}"]
    proc, _ = run_training(overrides, tmp_path / "run")
    assert proc.returncode == 0, proc.stderr[-5000:]
    mlflow.set_tracking_uri(mlflow_server)
    client = mlflow.MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("autoroute").experiment_id])
    assert len(runs) == 1 and "primary" in runs[0].data.metrics
    assert any(a.path == "plots" for a in client.list_artifacts(runs[0].info.run_id))
    assert runs[0].data.tags["selection"] == "not_servable"      # a tiny run never becomes the champion
