"""The service class called directly (no HTTP), and its parts: the log store,
Tier 4 refits, the micro-batcher, the score cache, keys, input checks."""
from __future__ import annotations

import asyncio
import json
import sqlite3
import time

import numpy as np
import pytest

from autoroute.scoring import LearnedScorer, Scores
from autoroute.types import Decision, Request
from serving_support import serving_overrides

NEUTRAL = "Tell me about the history of the Roman empire"


@pytest.fixture
def service(tmp_path, monkeypatch):
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "bentoml"))
    monkeypatch.setenv("AUTOROUTE_SERVING_OVERRIDES", json.dumps(serving_overrides(tmp_path, keys=False)))
    from serving.service import AutoRoute

    svc = AutoRoute()
    yield svc
    asyncio.run(svc.shutdown())


def run(coro):
    return asyncio.run(coro)


def test_route_and_batch_direct(service):
    d = run(service.route(Request.from_prompt("hello", user_id="u")))
    assert isinstance(d, Decision) and d.selected_model == "claude-haiku-4.5" and d.degraded
    out = run(service.route_batch(__import__("serving.schemas").schemas.RouteBatch(
        requests=[Request.from_prompt("hello"), Request.from_prompt(NEUTRAL)])))
    assert len(out.decisions) == 2
    bad = run(service.route(Request.from_prompt("hi", candidates=["nope"])))
    assert bad.status_code == 400 and b"unknown model" in bad.body
    h = service.health()
    assert h.ready and h.degraded and "not in the BentoML model store" in h.problem
    assert service.models().models[0].display_name == "Auto (recommended)"


def test_feedback_direct_teaches_tier4(service):
    from serving.schemas import Feedback

    first = run(service.route(Request.from_prompt(NEUTRAL, user_id="u9")))
    target = first.alternatives[0].model
    for _ in range(3):
        d = run(service.route(Request.from_prompt(NEUTRAL, user_id="u9")))
        if d.selected_model == target:             # learned already
            break
        ack = run(service.feedback(Feedback(decision_id=d.decision_id, event="override", chosen_model=target)))
        assert ack.stored and ack.routed_model == d.selected_model
    run(service.admin_refresh())
    after = run(service.route(Request.from_prompt(NEUTRAL, user_id="u9")))
    assert after.selected_model == target and after.tier == 4
    missing = run(service.feedback(Feedback(decision_id="nope", event="regenerate")))
    assert missing.status_code == 404


def test_degraded_refuse_exits_with_a_message(tmp_path, monkeypatch):
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "bentoml"))
    monkeypatch.setenv("AUTOROUTE_SERVING_OVERRIDES", json.dumps(
        serving_overrides(tmp_path, keys=False, extra=["serving.on_model_error=refuse"])))
    from serving.service import AutoRoute

    with pytest.raises(SystemExit, match="not in the BentoML model store.*refusing to start"):
        AutoRoute()


# ------------------------------------------------------------------ store
def test_store_commits_feedback_and_decisions(tmp_path):
    from serving.store import LogStore, read_log

    store = LogStore(tmp_path / "log.sqlite", flush_ms=5)
    d = Decision(decision_id="d1", selected_model="gpt-4o", display_name="GPT-4o", tier=3, tier_name="learned",
                 task="analysis", confidence=0.8, reason="r", signals=[], alternatives=[], scores={},
                 estimated_cost=0.01, estimated_tokens=5)
    store.log_decision(d, "u", "o", "a prompt")
    n = store.add_feedback([{"decision_id": "d1", "prompt": "a prompt", "routed_model": "gpt-4o",
                             "chosen_model": "claude-sonnet-4", "event": "override", "rating": None,
                             "user_id": "u", "org_id": "o", "ts": "2025-01-01T00:00:00.000Z"}])
    assert n == 1
    con = sqlite3.connect(tmp_path / "log.sqlite")
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("SELECT COUNT(*) FROM decisions").fetchone()[0] == 1   # flushed before the feedback
    assert len(store.feedback_frame()) == 1
    store.close()
    decisions, feedback = read_log(tmp_path / "log.sqlite")
    assert decisions.payload[0]["selected_model"] == "gpt-4o" and feedback.event[0] == "override"
    from autoroute.feedback import read_feedback, validate_feedback
    assert len(validate_feedback(read_feedback(tmp_path / "log.sqlite"))) == 1   # the training side reads it


# ------------------------------------------------------------ runtime parts
class CountingScorer(LearnedScorer):
    models = ("gpt-4o", "claude-sonnet-4")

    def __init__(self):
        self.calls = []

    def score(self, texts, models=None):
        self.calls.append(list(texts))
        n = len(texts)
        return Scores(task_probs=np.full((n, 11), 1 / 11), quality=np.tile([0.5, 0.6], (n, 1)), models=self.models)


class FakeBundle:
    """A bundle's two heads on pooled states: task probs and per-model quality."""
    models = ("gpt-4o", "claude-sonnet-4")

    class classifier:  # noqa: N801 - stands in for the TaskClassifier
        @staticmethod
        def from_pooled(pooled):
            n = len(pooled)
            return pooled / np.linalg.norm(pooled, axis=1, keepdims=True), np.full((n, 11), 1 / 11)

    def from_embeddings(self, texts, emb, probs, models=None):
        return Scores(task_probs=probs, quality=np.tile([0.5, 0.6], (len(texts), 1)) + emb[:, :1] * 0,
                      models=self.models)


class CountingEncoder:
    note = "counting encoder"

    def __init__(self):
        self.calls = []

    def pooled(self, texts):
        self.calls.append(list(texts))
        return np.ones((len(texts), 4), np.float32)


def test_composed_scorer_encodes_each_text_once():
    from autoroute.compose import ComposedScorer

    enc = CountingEncoder()
    scorer = ComposedScorer(FakeBundle(), enc, cache_size=2)
    a = scorer.score(["x", "y", "x"])
    b = scorer.score(["y", "z"])
    assert enc.calls == [["x", "y"], ["z"]]                      # one encoder pass per batch, cached after
    assert a.quality.shape == (3, 2) and b.task_probs.shape == (2, 11) and scorer.note == "counting encoder"


def test_compose_falls_back_when_the_backend_cannot_be_built():
    from autoroute.compose import compose_scorer

    def broken(classifier, tag, bundle_dir):
        raise RuntimeError("no ONNX Runtime here")

    scorer = compose_scorer(FakeBundle(), broken, lambda classifier: CountingEncoder(), cache_size=0)
    assert "not used: RuntimeError: no ONNX Runtime here" in scorer.note
    assert scorer.score(["a"]).quality.shape == (1, 2)


def test_micro_batcher_groups_concurrent_calls():
    from serving.runtime import MicroBatcher

    seen = []

    def fn(items):
        seen.append(list(items))
        time.sleep(0.01)
        return [ValueError("bad") if i == 3 else i * 10 for i in items]

    async def main():
        mb = MicroBatcher(fn, max_batch=8, window_ms=5)
        return await asyncio.gather(*(mb.submit(i) for i in range(6)), return_exceptions=True)

    out = asyncio.run(main())
    assert out[:3] == [0, 10, 20] and isinstance(out[3], ValueError) and out[5] == 50
    assert len(seen) == 1 and seen[0] == list(range(6))


def test_nitro_and_floor_are_router_variants():
    from autoroute.config import build_router, load_config
    from serving.proxy import to_route_request
    from serving.schemas import ChatCompletionRequest

    router = build_router(load_config([]))
    body = ChatCompletionRequest(model="auto:nitro", messages=[{"role": "user", "content": NEUTRAL}])
    n = router.route(to_route_request(body, "nitro"))
    best = max(n.scores.values())
    ok = [m for m, q in n.scores.items() if q >= best * (1 - router.settings.nitro_band) - 1e-9]
    assert n.selected_model == max(ok, key=lambda m: router.catalog.cards[m].speed)
    assert "auto:nitro" in n.reason


# --------------------------------------------------------------- guard/auth
def test_keyring_rules():
    from serving.auth import AuthError, KeyRing

    open_ring = KeyRing.from_config({"keys": []})
    assert open_ring.check("/feedback", []) is None
    from serving_support import sha256
    ring = KeyRing.from_config({"keys": [{"org": "acme", "sha256": sha256("k1")}, {"org": "beta", "env": "BETA_KEY"},
                                         {"sha256": sha256("k3"), "scopes": ["admin"]}]}, environ={"BETA_KEY": "k2"})
    assert "k1" not in repr(ring) and "k2" not in repr(ring)             # held as digests only
    assert ring.check("/route", []) is None
    assert ring.check("/route", [(b"x-api-key", b"k1")]) == "acme"
    assert ring.check("/feedback", [(b"authorization", b"Bearer k2")]) == "beta"
    with pytest.raises(AuthError, match="needs an API key"):
        ring.check("/feedback", [])
    with pytest.raises(AuthError, match="not valid"):
        ring.check("/admin/refresh", [(b"x-api-key", b"zzz")])
    with pytest.raises(AuthError, match="'admin' scope") as err:          # an org key cannot open /admin
        ring.check("/admin/refresh", [(b"x-api-key", b"k1")])
    assert err.value.status == 403
    assert ring.check("/admin/refresh", [(b"x-api-key", b"k3")]) is None
    with pytest.raises(AuthError, match="'feedback' scope"):                # and the admin key is no org key
        ring.check("/feedback", [(b"x-api-key", b"k3")])
    with pytest.raises(ValueError, match="not set"):
        KeyRing.from_config({"keys": [{"org": "x", "env": "SURELY_UNSET_VAR"}]}, environ={})
    with pytest.raises(ValueError, match="plain keys are not accepted"):
        KeyRing.from_config({"keys": [{"org": "x", "key": "k1"}]})
    with pytest.raises(ValueError, match="unknown scopes"):
        KeyRing.from_config({"keys": [{"org": "x", "sha256": sha256("k"), "scopes": ["root"]}]})


@pytest.mark.parametrize("raw,words", [(b"\xff", "UTF-8"), (b"", "empty"), (b"{", "malformed JSON"),
                                       (b'"\\udc00"', "surrogate")])
def test_parse_body_messages(raw, words):
    from serving.guard import BadInput, parse_body

    with pytest.raises(BadInput, match=words):
        parse_body(raw)
