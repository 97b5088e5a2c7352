"""The learned service end to end, in the default suite: the tiny champion the
test session trains (`tiny_run`, seconds on the fixtures, registered in a tmp
BentoML store) served by a real `bentoml serve` on the ONNX int8 encoder, with
micro-batching, Tier 4 and the OpenAI proxy driven by the official client."""
from __future__ import annotations

import json
import threading

import httpx
import numpy as np
import pytest

from serving_support import KEYS, ROOT, serving_overrides, start_server

NEUTRAL = "Tell me about the history of the Roman empire"


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def learned(tiny_run, tmp_path_factory, fake_upstream, onnx_cache):
    tmp = tmp_path_factory.mktemp("learned")
    overrides = [o for o in serving_overrides(tmp, fake_upstream.url) if not o.startswith("serving.on_model_error")]
    overrides += [f"serving.encoder.cache_dir={onnx_cache}",
                  "serving.batching.window_ms=20", "serving.proxy.cooldown.failures=1000"]
    server = start_server(tmp, overrides, bentoml_home=tiny_run["bentoml_home"], timeout=300)
    yield server
    server.stop()


@pytest.fixture
def client(learned):
    with httpx.Client(base_url=learned.url, timeout=60.0, trust_env=False) as c:
        yield c


def test_champion_is_served_on_the_onnx_encoder(client):
    ready = client.get("/readyz").json()
    assert ready["degraded"] is False and ready["model"].startswith("autoroute-router:")
    assert ready["runtime"].startswith("ONNX Runtime int8 encoder (shipped in the bundle"), ready["runtime"]
    d = client.post("/route", json={"messages": [{"role": "user", "content": NEUTRAL}]}).json()
    assert d["tier"] in (3, 4) and d["degraded"] is False and d["tier_name"] in ("learned", "user preference")
    ds = client.post("/route_batch", json={"requests": [{"messages": [{"role": "user", "content": t}]} for t in
                                                       ("Prove that sqrt(2) is irrational",
                                                        "Translate 'good night' into Spanish")]}).json()
    assert len(ds["decisions"]) == 2 and all(not x["degraded"] for x in ds["decisions"])


def test_concurrent_routes_share_encoder_passes(client, learned):
    before = client.get("/readyz").json()["batching"]
    codes: list[int] = []

    def one(i: int) -> None:
        with httpx.Client(base_url=learned.url, timeout=60.0, trust_env=False) as c:
            codes.append(c.post("/route", json={"messages": [{"role": "user", "content": f"{NEUTRAL} ({i})"}]}
                                ).status_code)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    after = client.get("/readyz").json()["batching"]
    assert codes == [200] * 24
    items, batches = after["items"] - before["items"], after["batches"] - before["batches"]
    assert items == 24 and batches < items, after                    # several requests per encoder pass


def test_overrides_teach_tier4_on_the_learned_stack(client):
    key = {"x-api-key": KEYS["acme"]}
    route = lambda: client.post("/route", json={"messages": [{"role": "user", "content": NEUTRAL}],  # noqa: E731
                                                "user_id": "u-learned"}, headers=key).json()
    first = route()
    target = first["alternatives"][0]["model"]
    for _ in range(3):
        d = route()
        if d["selected_model"] == target:      # Tier 4 already moved it: a further "override" is refused (400)
            break
        r = client.post("/feedback", json={"decision_id": d["decision_id"], "event": "override",
                                           "chosen_model": target}, headers=key)
        assert r.status_code == 200, r.text
    assert client.post("/admin/refresh", headers={"x-api-key": KEYS["admin"]}).status_code == 200
    after = route()
    if after["selected_model"] != target:      # the learned gap was wider than Tier 4's bounded term: it still moved
        score = lambda d: next(a["score"] for a in d["alternatives"] if a["model"] == target)  # noqa: E731
        assert score(after) >= score(first) + 0.05, (first, after)
    else:
        assert after["tier"] == 4 and "you usually switch to" in after["reason"], after


def test_openai_client_through_the_learned_router(learned, fake_upstream):
    import openai

    fake_upstream.reset()
    c = openai.OpenAI(base_url=learned.url + "/v1", api_key=KEYS["acme"], max_retries=0,
                      http_client=httpx.Client(trust_env=False, timeout=60.0))
    raw = c.chat.completions.with_raw_response.create(model="auto", messages=[{"role": "user", "content": NEUTRAL}])
    resp = raw.parse()
    assert raw.headers["x-autoroute-degraded"] == "false" and raw.headers["x-autoroute-tier"] in ("3", "4")
    assert resp.choices[0].message.content.startswith("hello from ")
    chunks = list(c.chat.completions.create(model="auto:floor", messages=[{"role": "user", "content": NEUTRAL}],
                                            stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant" and not chunks[0].model_extra["autoroute"]["degraded"]
    assert len({ch.id for ch in chunks}) == 1 and chunks[-1].usage is not None
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices).startswith("hello from ")


def test_onnx_encoder_agrees_with_pytorch(tiny_run, learned, onnx_cache):
    import bentoml  # noqa: F401  (the store path is read from disk below)

    from autoroute.bundle import load_scorer
    from autoroute.compose import ComposedScorer, OnnxInt8Encoder, TorchEncoder

    home = tiny_run["bentoml_home"] / "models" / "autoroute-router"
    folder = home / (home / "latest").read_text().strip()
    bundle = load_scorer(folder, quantize=False)
    texts = [json.loads(line)["prompt"] for f in sorted((ROOT / "data" / "authored").glob("*.jsonl"))
             for line in f.read_text().splitlines()[:20]]
    fp32 = ComposedScorer(bundle, TorchEncoder(bundle.classifier, quantize=False), 0).score(texts)
    onnx = OnnxInt8Encoder(bundle.classifier, onnx_cache, f"autoroute-router:{folder.name}", bundle_dir=folder)
    assert "shipped in the bundle" in onnx.note                          # training exported it
    int8 = ComposedScorer(bundle, onnx, 0).score(texts)
    agree = float(np.mean(fp32.task_probs.argmax(1) == int8.task_probs.argmax(1)))
    assert agree >= 0.8, agree
    if fp32.quality is not None:
        assert float(np.abs(fp32.quality - int8.quality).mean()) < 0.05


def test_the_run_measured_the_served_encoder(tiny_run):
    m = tiny_run["metrics"]
    acc, fp32 = m["classifier/test_served/accuracy"], m["classifier/test/accuracy"]
    assert 0.0 <= acc <= 1.0 and abs(acc - fp32) < 0.15, (acc, fp32)     # int8 as served vs fp32, held-out prompts
    assert 0.0 <= m["val/classifier/macro_f1"] <= 1.0                    # the gate reads the served encoder too


def test_the_run_evaluated_the_router_as_served(tiny_run):
    """Every bundle the run evaluated ships the run's one ONNX file, and the evaluated router is
    the service's composition (same backend, same decisions as a fresh load by the service)."""
    from autoroute.compose import ONNX_FILE, served_router
    from autoroute.config import load_config
    from autoroute.types import Request

    out = tiny_run["out"]
    bundles = [out / "bundle", *sorted((out / "bundles").iterdir())]
    inodes = {(b / ONNX_FILE).stat().st_ino for b in bundles}
    assert len(bundles) > 3 and len(inodes) == 1                          # one export, hard-linked everywhere
    serving = load_config([]).serving
    router = served_router(out / "bundle", serving, tag="t")
    assert router.scorer.note.startswith("ONNX Runtime int8 encoder (shipped in the bundle"), router.scorer.note
    m = tiny_run["metrics"]
    assert m["served/batch_vs_alone/decision_agreement"] >= 0.75         # cached pass vs one prompt alone
    texts = [NEUTRAL, "Prove that sqrt(2) is irrational", "Translate 'good night' into Spanish"]
    d = router.route_batch([Request.from_prompt(t) for t in texts])
    assert not any(x.degraded for x in d) and any(x.tier >= 3 for x in d)
