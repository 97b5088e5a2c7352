"""The learning loop end to end with simulated users against real `bentoml serve`
processes (slow: a few minutes; `make simulate` is the full-size run).

The tiny champion of the session is the router; the users' hidden preferences
come from held-out outcome data. Tier 4 on must bring the override rate from
its start to under 10% within the interaction budget, Tier 4 off must not; a
challenger trained on the Tier-4-on log must beat the champion in the A/B
report on held-out users and prompts."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import mlflow
import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def simulation(tiny_run, tmp_path_factory):
    from autoroute.config import load_config
    if not (ROOT / "data" / "processed" / "prompts" / "test.parquet").exists():
        pytest.fail("the simulation needs data/processed (run `dvc repro`)")
    tmp = tmp_path_factory.mktemp("simulate")
    shared = load_config([]).paths.shared_data
    args = [f"simulate.out_dir={tmp / 'out'}", f"simulate.bentoml_home={tiny_run['bentoml_home']}",
            f"paths.mlflow_db={tiny_run['mlflow_db']}", f"paths.mlflow_artifacts={tiny_run['mlflow_artifacts']}",
            f"training.embedding_cache={tmp / 'cache'}", f"paths.shared_data={shared}",
            "simulate.interactions=30", "simulate.heldout_interactions=12", "simulate.shadow_interactions=3"]
    proc = subprocess.run([sys.executable, "-m", "training.simulate_users", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=3000, env={**os.environ, "BENTOML_HOME": str(tiny_run["bentoml_home"])})
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-6000:]
    return {"stdout": proc.stdout, "summary": json.loads((tmp / "out" / "summary.json").read_text()),
            "tracking_uri": tiny_run["tracking_uri"]}


def test_tier4_on_brings_overrides_under_ten_percent_and_off_does_not(simulation):
    on, off = simulation["summary"]["phases"]["tier4_on"], simulation["summary"]["phases"]["tier4_off"]
    assert on["override_rate_first"] >= 0.3, on["curve"]
    assert on["override_rate_last"] < 0.10 and on["first_window_under_target"] is not None, on["curve"]
    assert min(off["curve"]["override_rate"]) >= 0.10, off["curve"]
    out = simulation["stdout"]
    assert "tier4_on: override rate per window" in out and "tier4_off: override rate per window" in out
    assert on["cost_vs_strongest"] > 0 and off["cost_vs_strongest"] > 0          # reported for both
    assert on["routed_quality_vs_preferred"] >= off["routed_quality_vs_preferred"]  # what Auto gave them


def test_challenger_from_their_feedback_beats_the_champion_in_the_ab_report(simulation):
    ab = simulation["summary"]["ab"]
    champ, chall = ab["arms"]["champion"], ab["arms"]["challenger"]
    assert chall["override_rate"] < champ["override_rate"], ab
    assert ab["difference"]["override_rate_challenger_minus_champion"] < 0
    sh = ab["shadow"]
    assert sh["decisions"] > 0 and sh["challenger_matches_final_choice"] > sh["champion_matches_final_choice"], sh
    assert "A/B report from" in simulation["stdout"]


def test_curves_and_plots_are_logged_to_mlflow(simulation):
    mlflow.set_tracking_uri(simulation["tracking_uri"])
    run = mlflow.get_run(simulation["summary"]["mlflow_run_id"])
    client = mlflow.MlflowClient()
    for arm in ("tier4_on", "tier4_off"):
        assert len(client.get_metric_history(run.info.run_id, f"{arm}/override_rate")) >= 3
    names = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert {"plots/override_rate.png", "plots/cost_quality.png"} <= names
