"""Shared fixtures. Sections are owned by the part of the project they serve;
append new fixtures under their own header."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROCESSED = ROOT / "data" / "processed"


@pytest.fixture(scope="session")
def prompts():
    """The processed prompt splits of the real data (`dvc repro` builds them when missing)."""
    if not (PROCESSED / "manifest.json").exists():
        subprocess.run([str(Path(sys.executable).with_name("dvc")), "repro"], cwd=ROOT, check=True)
    import pandas as pd
    return {s: pd.read_parquet(PROCESSED / "prompts" / f"{s}.parquet") for s in ("train", "validation", "test")}
PY = sys.executable
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))


# ---------------------------------------------------------------------------- training
# A tmp MLflow store + tmp BENTOML_HOME + the tiny config, and one `experiment=tiny`
# run of `python -m training.run` per session that the training, bundle and
# notebook tests share.
def _real_processed() -> Path | None:
    p = ROOT / "data" / "processed"
    need = ["prompts/train.parquet", "prompts/validation.parquet", "prompts/test.parquet",
            "comparisons.parquet", "outcomes.parquet", "manifest.json"]
    return p if all((p / n).exists() for n in need) else None


@pytest.fixture(scope="session")
def fixture_data(tmp_path_factory) -> Path:
    """The self-written synthetic stand-in for data/processed."""
    from fixtures.synthetic import write_fixture

    return write_fixture(tmp_path_factory.mktemp("fixture_processed"))


@pytest.fixture(scope="session")
def training_env(tmp_path_factory, fixture_data):
    """Paths and Hydra overrides of an isolated training run (tmp MLflow + BentoML).

    Uses the real `data/processed` (sliced by experiment=tiny) when `dvc repro`
    has built it, else the synthetic fixture; AUTOROUTE_TEST_DATA=fixture forces the fixture."""
    tmp = tmp_path_factory.mktemp("training")
    real = None if os.environ.get("AUTOROUTE_TEST_DATA") == "fixture" else _real_processed()
    data_dir = real or fixture_data
    env = {"root": tmp, "data_dir": data_dir, "mlflow_db": tmp / "mlruns.db",
           "mlflow_artifacts": tmp / "mlartifacts", "bentoml_home": tmp / "bentoml",
           "out": tmp / "run", "tracking_uri": f"sqlite:///{tmp / 'mlruns.db'}"}
    env["overrides"] = [
        "experiment=tiny", f"training.data.dir={data_dir}", f"paths.mlflow_db={env['mlflow_db']}",
        f"paths.mlflow_artifacts={env['mlflow_artifacts']}", f"paths.bentoml_home={env['bentoml_home']}",
        f"training.embedding_cache={tmp / 'cache'}", f"training.data.feedback_db={tmp / 'no_feedback.sqlite'}"]
    return env


def run_training(overrides, out_dir: Path, module: str = "training.run", timeout: int = 600, env=None):
    """Run a training entry point in a subprocess; returns (CompletedProcess, seconds)."""
    t0 = time.time()
    proc = subprocess.run([PY, "-m", module, *overrides, f"hydra.run.dir={out_dir}"], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})
    return proc, time.time() - t0


@pytest.fixture(scope="session")
def tiny_run(training_env):
    """One `python -m training.run experiment=tiny` into the tmp store."""
    proc, seconds = run_training(training_env["overrides"], training_env["out"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    out = training_env["out"]
    # a tiny run never becomes the champion (the gate); the serving tests need one in the
    # session's BentoML store, so its bundle is exported there by hand
    code = f"from autoroute.bundle import export_to_bentoml; print(export_to_bentoml({str(out / 'bundle')!r}))"
    exp = subprocess.run([PY, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "BENTOML_HOME": str(training_env["bentoml_home"])})
    assert exp.returncode == 0, exp.stderr[-3000:]
    return {**training_env, "seconds": seconds, "stdout": proc.stdout,
            "metrics": json.loads((out / "metrics.json").read_text()),
            "selection": json.loads((out / "selection.json").read_text()), "bundle": out / "bundle"}


# ---------------------------------------------------------------------------- serving
# (serving helper) a fake OpenAI upstream and one real `bentoml serve` process per
# session, on free loopback ports; helpers in tests/serving_support.py.


@pytest.fixture(scope="session")
def fake_upstream():
    from fake_upstream import FakeUpstream

    up = FakeUpstream(delay=3.0).start()
    yield up
    up.stop()


@pytest.fixture(scope="session")
def served(tmp_path_factory, fake_upstream):
    """A real `bentoml serve` (rules-only/degraded: the tmp model store is empty),
    API keys for orgs acme and beta (and an admin key), providers pointed at the
    fake upstream, prompts written to the server log (to check their redaction),
    provider cooldown out of the way (tests/test_service_faults.py covers it)."""
    from serving_support import serving_overrides, start_server

    tmp = tmp_path_factory.mktemp("served")
    server = start_server(tmp, serving_overrides(tmp, fake_upstream.url, extra=["serving.log_prompts=true",
                                                                    "serving.proxy.cooldown.failures=1000"]))
    yield server
    server.stop()


# ---------------------------------------------------------------------------- browser
# (picker page and dashboard) headless Chromium from Debian's `chromium` and
# `chromium-driver`, installed here with apt-get when missing (CI runs as root on
# a fresh machine); nothing downloads a browser build. Screenshots go to
# artifacts/screenshots/ (gitignored).
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1280,900"]


def ensure_chromium() -> None:
    if CHROMIUM.exists() and CHROMEDRIVER.exists():
        return
    if os.geteuid() != 0:
        pytest.fail("the browser test needs Debian's chromium and chromium-driver: "
                    "sudo apt-get install -y chromium chromium-driver")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium", "chromium-driver"]):
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"


@pytest.fixture(scope="session")
def browser(tmp_path_factory):
    """A headless Chromium driven by selenium through the system chromedriver."""
    ensure_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"]:
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    out = ROOT / "artifacts" / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    return out
