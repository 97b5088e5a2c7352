"""The champion gate (training.tracking.Tracker.select_and_register): validation
metrics only, comparable runs only (same data version and protocol), a
configurable min_improvement, and runs that may never replace the champion
(sweeps, sliced-data runs such as experiment=tiny)."""
from __future__ import annotations

import mlflow
import pytest
from omegaconf import OmegaConf

from autoroute.config import load_config
from training.pipeline import check_config, data_version, protocol_version, servable
from training.tracking import Tracker


class _Echo(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input


@pytest.fixture(scope="module")
def logged_model(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gate")
    uri = f"sqlite:///{tmp / 'm.db'}"
    tracker = Tracker(tracking_uri=uri, artifact_location=f"file://{tmp / 'a'}")
    with tracker.start(run_name="model"):
        info = mlflow.pyfunc.log_model(name="router", python_model=_Echo(), pip_requirements=[])
    return uri, f"file://{tmp / 'a'}", info.model_uri


@pytest.fixture()
def store(logged_model, request):
    """A tracker on its own registered model (one per test) with min_improvement 0.01."""
    uri, art, model_uri = logged_model
    tracker = Tracker(tracking_uri=uri, artifact_location=art, min_improvement=0.01,
                      registered_model=f"gate-{request.node.name}"[:60])
    return tracker, model_uri, None


def _candidate(tracker, uri, metrics, data="d1", proto="p1", ok=True, why=""):
    with tracker.start(run_name="candidate") as run:
        return tracker.select_and_register(uri, metrics, run.info.run_id, data, proto, ok, why)


def test_a_run_that_may_not_be_served_never_moves_the_champion(store):
    tracker, uri, _ = store
    first = _candidate(tracker, uri, {"primary": 0.5})
    assert first["promoted"]
    better = _candidate(tracker, uri, {"primary": 0.99}, ok=False, why="a sweep (--multirun) run")
    assert not better["promoted"] and "sweep" in better["reason"]
    assert str(tracker.current_champion()[0].version) == first["version"]


def test_min_improvement_is_required(store):
    tracker, uri, _ = store
    _candidate(tracker, uri, {"primary": 0.5})
    assert not _candidate(tracker, uri, {"primary": 0.505})["promoted"]     # within min_improvement 0.01
    assert _candidate(tracker, uri, {"primary": 0.52})["promoted"]


def test_the_gate_reads_the_validation_primary_not_test_metrics(store):
    tracker, uri, _ = store
    _candidate(tracker, uri, {"primary": 0.6, "two_model/lobo/mmlu/router/apgr": 0.40})
    worse_val = _candidate(tracker, uri, {"primary": 0.55, "two_model/lobo/mmlu/router/apgr": 0.90})
    assert not worse_val["promoted"]
    # and the pipeline refuses a selection term that is not a validation metric
    cfg = load_config(["training.primary_terms=[val/classifier/macro_f1,two_model/lobo/mmlu/router/apgr]"])
    with pytest.raises(ValueError, match="not validation metrics"):
        check_config(cfg, None, None, None)


def test_runs_are_compared_only_on_the_same_data_version_and_protocol(store):
    tracker, uri, _ = store
    _candidate(tracker, uri, {"primary": 0.9})
    other = _candidate(tracker, uri, {"primary": 0.3}, data="d2")
    assert other["promoted"] and "not comparable" in other["reason"]   # new data: the old score means nothing
    same = _candidate(tracker, uri, {"primary": 0.2}, data="d2")
    assert not same["promoted"]                                         # compared with the d2 champion
    proto = _candidate(tracker, uri, {"primary": 0.1}, data="d2", proto="p2")
    assert proto["promoted"] and "protocol" in proto["reason"]


def test_tiny_and_sweeps_are_not_servable_and_versions_see_limits():
    full = load_config([])
    tiny = load_config(["experiment=tiny"])
    assert servable(full, sweep=False) == (True, "")
    assert not servable(full, sweep=True)[0]
    ok, why = servable(tiny, sweep=False)
    assert not ok and "sliced data" in why
    assert not servable(load_config(["experiment=tiny", "training.servable=true"]), sweep=False)[0]

    class D:
        versions = {"outcomes": "abc"}
    assert data_version(full, D()) != data_version(tiny, D())           # slicing is part of the data version
    assert protocol_version(full) != protocol_version(
        OmegaConf.merge(full, {"training": {"evaluation": {"validation_fraction": 0.2}}}))
