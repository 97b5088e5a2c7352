"""`python -m training.run experiment=tiny` end to end: MLflow logging, the
served router's evaluation, the gate (a tiny run never replaces the champion),
BentoML export (one shared run per session, see conftest)."""
from __future__ import annotations

import json
import os
import subprocess

import mlflow
import pytest

from conftest import PY, ROOT


def test_tiny_run_reports_every_metric(tiny_run):
    m = tiny_run["metrics"]
    for fam in ("lobo", "heldout"):
        for bench in ("mmlu", "gsm8k"):
            for router in ("router", "head", "knn", "classifier_prior", "length", "random", "oracle"):
                for k in ("apgr", "cpt50", "cpt80"):
                    assert f"two_model/{fam}/{bench}/{router}/{k}" in m
    for router in ("router", "head", "length", "random", "oracle"):
        assert f"two_model/loso/chat/{router}/apgr" in m
    for k in ("best_model_quality", "best_model_cost", "router/cost_to_match_best", "router/quality_at_best_cost",
              "head/quality_at_best_cost", "oracle/quality_at_best_cost", "knn/quality_at_half_best_cost"):
        assert f"routerbench/{k}" in m
    for k in ("accuracy", "macro_f1", "ece"):
        assert 0.0 <= m[f"classifier/test/{k}"] <= 1.0
    assert 0.0 <= m["val/classifier/macro_f1"] <= 1.0
    assert m["two_model/lobo/mmlu/random/apgr"] == pytest.approx(0.5)
    assert m["two_model/lobo/mmlu/oracle/apgr"] >= m["two_model/lobo/mmlu/router/apgr"] - 1e-9
    for k in ("mean_expected_quality", "quality_vs_reference", "cost_vs_reference"):
        assert f"mix/{k}" in m
    assert sum(v for k, v in m.items() if k.startswith("mix/share/")) == pytest.approx(1.0)
    assert "primary" in m
    assert "router" in tiny_run["stdout"] and "oracle" in tiny_run["stdout"]   # the printed quality table


def test_mlflow_run_has_config_params_metrics_plots_and_model(tiny_run):
    mlflow.set_tracking_uri(tiny_run["tracking_uri"])
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name("autoroute")
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])
    run = runs[0]
    assert run.data.params["classifier.max_steps"] == "4"
    assert "git_sha" in run.data.tags and any(t.startswith("data.") for t in run.data.tags)
    assert run.data.metrics["primary"] == pytest.approx(tiny_run["metrics"]["primary"])
    arts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config", "plots", "quality_table.csv", "classifier_report.json", "selection.json"} <= arts
    plots = {a.path.split("/")[-1] for a in client.list_artifacts(run.info.run_id, "plots")}
    assert {"routerbench_cost_quality.png", "classifier_confusion.png", "two_model_mmlu_lobo.png",
            "two_model_chat_loso.png", "two_model_mmlu_heldout.png"} <= plots


def test_tiny_run_never_replaces_the_champion(tiny_run):
    sel = tiny_run["selection"]
    assert sel["promoted"] is False and "sliced data" in sel["reason"]
    mlflow.set_tracking_uri(tiny_run["tracking_uri"])
    with pytest.raises(mlflow.exceptions.MlflowException):
        mlflow.MlflowClient().get_model_version_by_alias("autoroute-router", "champion")
    assert "bento_tag" not in sel                       # the run itself exported nothing to BentoML


def test_bentoml_export_holds_the_bundle(tiny_run):
    # the session's store holds the tiny bundle, exported by the fixture (conftest.tiny_run)
    code = ("import bentoml, json, pathlib; p = pathlib.Path(bentoml.models.get('autoroute-router:latest').path);"
            "print(json.dumps(sorted(x.name for x in p.iterdir())))")
    out = subprocess.run([PY, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                         env={**os.environ, "BENTOML_HOME": str(tiny_run["bentoml_home"])})
    assert out.returncode == 0, out.stderr[-2000:]
    names = json.loads(out.stdout.strip().splitlines()[-1])
    assert {"manifest.json", "config.yaml", "classifier", "preference.pt", "metrics.json"} <= set(names)


def test_regression_never_replaces_the_champion(tiny_run):
    from training.tracking import Tracker

    mlflow.set_tracking_uri(tiny_run["tracking_uri"])
    tracker = Tracker(tracking_uri=tiny_run["tracking_uri"], registered_model="autoroute-regression-test")
    run_id = mlflow.search_runs(experiment_names=["autoroute"]).iloc[0]["run_id"]
    source = f"runs:/{run_id}/router"
    results = []
    for value in (0.5, 0.4, 0.6):
        with tracker.start(run_name=f"candidate-{value}") as run:
            results.append(tracker.select_and_register(source, {"primary": value}, run.info.run_id, "d1", "p1"))
    assert [r["promoted"] for r in results] == [True, False, True]
    mv = mlflow.MlflowClient().get_model_version_by_alias("autoroute-regression-test", "champion")
    assert str(mv.version) == results[2]["version"]
    assert tracker.current_champion()[1] == pytest.approx(0.6)


def test_same_seed_reproduces_the_same_metrics(tiny_run, tmp_path):
    from conftest import run_training

    overrides = [o for o in tiny_run["overrides"] if not o.startswith(("paths.mlflow", "paths.bentoml"))]
    overrides += [f"paths.mlflow_db={tmp_path / 'm.db'}", f"paths.mlflow_artifacts={tmp_path / 'a'}",
                  f"paths.bentoml_home={tmp_path / 'b'}", "tracking.export_bentoml=false"]
    proc, _ = run_training(overrides, tmp_path / "run")
    assert proc.returncode == 0, proc.stderr[-4000:]
    again = json.loads((tmp_path / "run" / "metrics.json").read_text())
    keys = [k for k in tiny_run["metrics"] if k.startswith(("two_model/", "routerbench/", "classifier/test/"))]
    assert keys
    for k in keys:
        assert again[k] == pytest.approx(tiny_run["metrics"][k], abs=1e-6, nan_ok=True), k


def test_bundle_ships_the_head_chosen_on_validation(tiny_run):
    from autoroute.bundle import read_manifest

    man = read_manifest(tiny_run["bundle"])
    w = tiny_run["metrics"]["head/champion/mf_weight"]
    assert man["mf_weight"] == pytest.approx(w)
    assert (tiny_run["bundle"] / "knn.npz").exists() == (w < 1.0)


def test_benchmark_quality_prints_and_logs_the_acceptance_table(tiny_run, tmp_path):
    from conftest import run_training

    proc, _ = run_training([o for o in tiny_run["overrides"]] + ["training.benchmark.run=latest"], tmp_path / "bq",
                           module="training.benchmark_quality")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for row in ("LOBO APGR MMLU", "LOBO APGR GSM8K", "AlpacaEval LOSO", "RouterBench cost to match", "realistic mix",
                "always-Opus"):
        assert row in proc.stdout
    mlflow.set_tracking_uri(tiny_run["tracking_uri"])
    client = mlflow.MlflowClient()
    run_id = mlflow.search_runs(experiment_names=["autoroute"], filter_string="tags.mlflow.runName = 'tiny'",
                                order_by=["attributes.start_time DESC"]).iloc[0]["run_id"]
    assert {"acceptance.txt", "acceptance.json"} <= {a.path for a in client.list_artifacts(run_id)}


def test_acceptance_says_when_a_product_source_is_never_matched():
    """A held-out product source whose curve never reaches the best model's quality has no cost ratio: the
    table must say so (with how close it gets), not drop the row."""
    from training.benchmark_quality import acceptance
    text, rows = acceptance({"product/swebench_verified/best_model_quality": 0.674,
                             "product/swebench_verified/router/quality_at_best_cost": 0.620,
                             "product/zeroeval_crux/router/cost_ratio_to_match_best": 0.5,
                             "product/zeroeval_crux/best_model_quality": 0.9})
    swe = next(line for line in text.splitlines() if "swebench_verified" in line)
    assert "NOT MET" in swe and "never reaches" in swe and "0.620" in swe and "0.674" in swe
    crux = next(line for line in text.splitlines() if "zeroeval_crux" in line)
    assert "OK" in crux and "never" not in crux
    assert rows["product models, swebench_verified held out: cost to match the best offered"]["met"] is False
