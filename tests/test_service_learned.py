"""The service with the real champion (the trained bundle in the BentoML store
at paths.bentoml_home): not degraded, the learned tiers decide, and the ONNX
Runtime encoder agrees with PyTorch. Slow (loads and exports the model);
they need a champion in the BentoML store (`make train`)."""
from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from serving_support import ROOT, serving_overrides, start_server

pytestmark = pytest.mark.slow


def _home() -> Path:
    from autoroute.config import load_config
    return Path(load_config([]).paths.bentoml_home)


def _champion(home: Path) -> Path | None:
    """The champion's bundle folder in the store at `home` (read from disk: the
    bentoml module may already be bound to another store in this session)."""
    latest = home / "models" / "autoroute-router" / "latest"
    if not latest.is_file():
        return None
    folder = latest.parent / latest.read_text().strip()
    return folder if (folder / "manifest.json").is_file() else None


@pytest.fixture(scope="module")
def champion_home():
    home = _home()
    if _champion(home) is None:
        pytest.fail(f"no champion autoroute-router in {home}: run `make train` first")
    return home


def test_served_champion_decides_with_learned_tiers(tmp_path, champion_home):
    overrides = [o for o in serving_overrides(tmp_path, keys=False) if not o.startswith("serving.on_model_error")]
    server = start_server(tmp_path, overrides, bentoml_home=champion_home, timeout=300)
    try:
        with httpx.Client(base_url=server.url, timeout=60, trust_env=False) as c:
            ready = c.get("/readyz").json()
            assert ready["degraded"] is False and ready["model"].startswith("autoroute-router:")
            d = c.post("/route", json={"messages": [{"role": "user", "content":
                                                     "Tell me about the history of the Roman empire"}]}).json()
            assert d["tier"] in (3, 4) and d["degraded"] is False and d["tier_name"] in ("learned", "user preference")
            ds = c.post("/route_batch", json={"requests": [{"messages": [{"role": "user", "content": t}]} for t in
                                                           ("Prove that sqrt(2) is irrational",
                                                            "Translate 'good night' into Spanish")]}).json()
            assert len(ds["decisions"]) == 2 and all(not x["degraded"] for x in ds["decisions"])
    finally:
        server.stop()


def test_onnx_encoder_agrees_with_pytorch(tmp_path, champion_home):
    import numpy as np

    from autoroute.bundle import load_router
    from serving.onnx_scorer import accelerate

    folder = _champion(champion_home)
    ref = load_router(folder, overrides=["bundle.quantize=false"]).scorer
    fast, note = accelerate(load_router(folder, overrides=["bundle.quantize=false"]).scorer, tmp_path,
                            f"autoroute-router:{folder.name}")
    assert "ONNX" in note, note
    texts = [json.loads(line)["prompt"] for f in sorted((ROOT / "data" / "authored").glob("*.jsonl"))
             for line in f.read_text().splitlines()[:20]]
    a, b = ref.score(texts), fast.score(texts)
    agree = float(np.mean(a.task_probs.argmax(1) == b.task_probs.argmax(1)))
    assert agree >= 0.9, agree
    if a.quality is not None:
        assert float(np.abs(a.quality - b.quality).mean()) < 0.05
