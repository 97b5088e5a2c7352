"""The service over real HTTP: a `bentoml serve` process on loopback (fixture
`served`), every endpoint, Tier 4 from feedback, auth, the OpenAI proxy
against a fake upstream, and a table of bad inputs that must all be 4xx."""
from __future__ import annotations

import json
import sqlite3
import time

import httpx
import pytest

from serving_support import KEYS

NEUTRAL = "Tell me about the history of the Roman empire"


def msg(text: str) -> dict:
    return {"messages": [{"role": "user", "content": text}]}


@pytest.fixture(scope="module")
def client(served):
    with httpx.Client(base_url=served.url, timeout=30.0, trust_env=False) as c:
        yield c


def key(org: str = "acme") -> dict:
    return {"x-api-key": KEYS[org]}


# ----------------------------------------------------------------- endpoints
def test_route_decision_fields(client):
    r = client.post("/route", json={**msg("Fix this bug: ```python\ndef f(): return 1/0\n```"), "user_id": "u1"})
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["selected_model"] == "claude-sonnet-4" and d["tier"] == 2 and d["task"] == "debugging"
    assert d["reason"] and 0 <= d["confidence"] <= 1 and len(d["decision_id"]) == 32
    assert d["alternatives"] and all("score" in a for a in d["alternatives"])
    assert d["estimated_cost"] > 0 and d["degraded"] is True      # the tmp model store is empty


def test_request_id_is_echoed_on_answers_and_refusals(client):
    ok = client.post("/route", json=msg(NEUTRAL), headers={"x-request-id": "trace-1"})
    bad = client.post("/route", content=b"{not json", headers={"x-request-id": "trace-2"})
    assert ok.status_code == 200 and ok.headers["x-request-id"] == "trace-1"
    assert bad.status_code == 400 and bad.headers["x-request-id"] == "trace-2"
    assert "x-request-id" not in client.post("/route", json=msg(NEUTRAL)).headers


def test_route_batch_in_order(client):
    r = client.post("/route_batch", json={"requests": [msg("hello"), msg(NEUTRAL),
                                                       {**msg("hi"), "space": {"type": "coding"}}]})
    assert r.status_code == 200, r.text
    ds = r.json()["decisions"]
    assert [d["task"] for d in ds][0] == "simple_qa" and ds[2]["task"] == "coding"
    assert len({d["decision_id"] for d in ds}) == 3


def test_models_auto_first(client):
    r = client.get("/models")
    assert r.status_code == 200
    body = r.json()
    assert body["models"][0]["id"] == "auto" and body["models"][0]["display_name"] == "Auto (recommended)"
    assert {"claude-sonnet-4", "gpt-4o"} <= {m["id"] for m in body["models"]}
    assert [m["id"] for m in body["auto_modes"]] == ["auto:floor", "auto:nitro"]
    assert {m["id"] for m in client.get("/v1/models").json()["data"]} >= {"auto", "auto:floor", "auto:nitro"}


def test_health_ready_degraded_and_metrics(client):
    for path in ("/healthz", "/readyz"):
        r = client.get(path)
        assert r.status_code == 200 and r.json()["degraded"] is True and r.json()["ready"] is True
    assert "not in the BentoML model store" in client.get("/readyz").json()["problem"]
    client.post("/route", json=msg("hello"))
    text = client.get("/metrics").text
    for name in ("autoroute_decisions_total{", "autoroute_decision_latency_seconds_bucket",
                 "autoroute_degraded"):
        assert name in text
    assert 'tier="2"' in text and 'task="simple_qa"' in text


def test_openapi_has_typed_endpoints_and_examples(client):
    spec = client.get("/docs.json").json()
    for path in ("/route", "/route_batch", "/feedback", "/models", "/v1/chat/completions"):
        assert path in spec["paths"], path
    route = spec["paths"]["/route"]["post"]
    assert {"400", "401", "413", "422"} <= set(route["responses"])
    assert "Fix this bug" in json.dumps(spec["paths"]["/route"]) + json.dumps(spec["components"])


# ---------------------------------------------------------- feedback + tier 4
def _route(client, user, org=None, text=NEUTRAL, headers=None):
    body = {**msg(text), "user_id": user}
    if org:
        body["org_id"] = org
    r = client.post("/route", json=body, headers=headers or {})
    assert r.status_code == 200, r.text
    return r.json()


def _until(fn, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        out = fn()
        if out or time.monotonic() > deadline:
            return out
        time.sleep(0.2)


def test_overrides_teach_tier4_without_restart(client, served):
    first = _route(client, "u-t4", headers=key())
    assert first["tier"] == 3
    target = first["alternatives"][0]["model"]
    sent = 0
    for _ in range(3):
        d = _route(client, "u-t4", headers=key())
        if d["selected_model"] == target:        # learned already (a tier-3 choice moves with little evidence)
            break
        r = client.post("/feedback", json={"decision_id": d["decision_id"], "event": "override",
                                           "chosen_model": target}, headers=key())
        assert r.status_code == 200, r.text
        assert r.json()["stored"] is True and r.json()["chosen_model"] == target
        sent += 1
    after = _until(lambda: (lambda d: d if d["selected_model"] == target else None)(_route(client, "u-t4",
                                                                                          headers=key())))
    assert after, "Tier 4 did not pick the user's preferred model"
    assert after["tier"] == 4 and "you usually switch to" in after["reason"]
    other = _route(client, "u-someone-else", org="zeta")
    assert other["selected_model"] == first["selected_model"]
    con = sqlite3.connect(served.db)
    rows = con.execute("SELECT event, chosen_model, user_id, org_id, prompt FROM feedback WHERE user_id='u-t4'").fetchall()
    assert len(rows) == sent >= 1 and all(r[0] == "override" and r[1] == target and r[3] == "acme" for r in rows)
    assert rows[0][4] == NEUTRAL


def test_coding_space_overrides_win_over_the_rule_but_never_over_a_lock_or_policy(client):
    """The acceptance case: a user who keeps switching a coding-Space decision to the
    same model gets that model next time, and is told why; locks and policy still win."""
    coding = {"space": {"type": "coding"}}
    code = "Write a Python function that merges two sorted lists"
    first = client.post("/route", json={**msg(code), **coding, "user_id": "u-coder"}, headers=key()).json()
    assert first["selected_model"] == "claude-sonnet-4" and first["tier"] == 1
    for _ in range(3):
        d = client.post("/route", json={**msg(code), **coding, "user_id": "u-coder"}, headers=key()).json()
        r = client.post("/feedback", json={"decision_id": d["decision_id"], "event": "override",
                                           "chosen_model": "claude-opus-4.5"}, headers=key())
        assert r.status_code == 200, r.text
    nxt = _until(lambda: (lambda d: d if d["selected_model"] == "claude-opus-4.5" else None)(client.post(
        "/route", json={**msg("Implement an LRU cache in Go"), **coding, "user_id": "u-coder"}, headers=key()).json()))
    assert nxt, "three overrides in a coding Space did not change the next coding decision"
    assert nxt["tier"] == 4 and "you usually switch to Claude Opus 4.5 for coding" in nxt["reason"], nxt["reason"]
    locked = client.post("/route", json={**msg(code), **coding, "user_id": "u-coder",
                                         "area": {"model_lock": "claude-sonnet-4"}}, headers=key()).json()
    assert locked["selected_model"] == "claude-sonnet-4" and locked["tier"] == 1
    policy = client.post("/route", json={**msg(code), **coding, "user_id": "u-coder",
                                         "policy": {"approved_models": ["claude-sonnet-4", "gpt-4o"]}},
                         headers=key()).json()
    assert policy["selected_model"] == "claude-sonnet-4"
    other = client.post("/route", json={**msg(code), **coding, "user_id": "u-not-a-coder"}, headers=key()).json()
    assert other["selected_model"] == "claude-sonnet-4"        # one user's habit is not the org's rule


def test_org_defaults_apply_to_new_users(client):
    base = _route(client, "u-fresh-0", headers=key("beta"))
    target = base["alternatives"][0]["model"]
    for i in range(4):
        d = _route(client, f"u-org-{i}", headers=key("beta"))
        if d["selected_model"] == target:        # the org's preference is learned already
            break
        r = client.post("/feedback", json={"decision_id": d["decision_id"], "event": "override",
                                           "chosen_model": target}, headers=key("beta"))
        assert r.status_code == 200, r.text
    newcomer = _until(lambda: (lambda d: d if d["selected_model"] == target else None)(
        _route(client, "u-newcomer", headers=key("beta"))))
    assert newcomer and newcomer["tier"] == 4


def test_regenerate_and_rating_are_logged(client, served):
    d = _route(client, "u-rr", headers=key())
    for body in ({"event": "regenerate"}, {"event": "rating", "rating": 2}):
        r = client.post("/feedback", json={"decision_id": d["decision_id"], **body}, headers=key())
        assert r.status_code == 200, r.text
    rows = sqlite3.connect(served.db).execute(
        "SELECT event, rating, routed_model, chosen_model FROM feedback WHERE decision_id=?",
        (d["decision_id"],)).fetchall()
    assert sorted(r[0] for r in rows) == ["rating", "regenerate"]
    assert all(r[2] == r[3] == d["selected_model"] for r in rows)
    dec = sqlite3.connect(served.db).execute("SELECT selected_model, payload FROM decisions WHERE decision_id=?",
                                             (d["decision_id"],)).fetchone()
    assert dec[0] == d["selected_model"] and json.loads(dec[1])["decision_id"] == d["decision_id"]


# ----------------------------------------------------------------------- auth
def test_auth_rules(client):
    d = _route(client, "u-auth")                                   # routing without a key is allowed
    fb = {"decision_id": d["decision_id"], "event": "regenerate"}
    r = client.post("/feedback", json=fb)
    assert r.status_code == 401 and "API key" in r.json()["error"]
    r = client.post("/feedback", json=fb, headers={"x-api-key": "wrong"})
    assert r.status_code == 401 and "not valid" in r.json()["error"]
    assert client.post("/admin/refresh").status_code == 401
    r = client.post("/admin/refresh", headers=key())                # an org key has no admin scope
    assert r.status_code == 403 and "admin" in r.json()["error"]
    assert client.post("/admin/refresh", headers=key("admin")).status_code == 200
    assert client.post("/route", json=msg("hi"), headers=key("admin")).status_code == 403   # admin-only key
    r = client.post("/route", json={**msg("hi"), "org_id": "beta"}, headers=key("acme"))
    assert r.status_code == 403 and "acme" in r.json()["error"]
    mine = _route(client, "u-auth2", headers=key("acme"))         # bound to acme
    r = client.post("/feedback", json={"decision_id": mine["decision_id"], "event": "regenerate"},
                    headers=key("beta"))
    assert r.status_code == 403
    r = client.post("/feedback", json={"decision_id": mine["decision_id"], "event": "regenerate"},
                    headers={"authorization": f"Bearer {KEYS['acme']}"})
    assert r.status_code == 200, r.text
    r = client.post("/feedback", json=fb, headers=key("acme"))     # a decision made without the key's org
    assert r.status_code == 403 and "org" in r.json()["error"]
    r = client.post("/feedback", json={"decision_id": mine["decision_id"], "event": "override",
                                       "chosen_model": "gpt-4o", "user_id": "u-victim"}, headers=key("acme"))
    assert r.status_code == 403 and "user" in r.json()["error"]   # another user's preferences: refused


# ---------------------------------------------------------------- bad inputs
BIG = "x" * 2500
BAD = [
    ("/route", b"{not json", 400, "malformed JSON"),
    ("/route", b"", 400, "empty"),
    ("/route", b"[]", 400, "request body"),
    ("/route", b'{"messages": []}', 400, "messages"),
    ("/route", b'{}', 400, "messages"),
    ("/route", b'{"messages": [{"role": "user", "content": ""}]}', 400, "non-empty user message"),
    ("/route", b'{"messages": [{"role": "user", "content": "   "}]}', 400, "non-empty user message"),
    ("/route", b'{"messages": [{"role": "assistant", "content": "hi"}]}', 400, "user message"),
    ("/route", b'{"messages": [{"role": "wizard", "content": "hi"}]}', 400, "role"),
    ("/route", b'{"messages": [{"role": "user"}]}', 400, "content"),
    ("/route", b'{"messages": [{"role": "user", "content": 42}]}', 400, "content"),
    ("/route", b'{"messages": [{"role": "user", "content": "hi"}], "candidates": ["no-such-model"]}', 400,
     "unknown model"),
    ("/route", b'{"messages": [{"role": "user", "content": "hi"}], "area": {"model_lock": "gpt-99"}}', 400,
     "unknown model"),
    ("/route", b'{"messages": [{"role": "user", "content": "hi"}], "cost_quality": 7}', 400, "cost_quality"),
    ("/route", b'{"messages": [{"role": "user", "content": "hi"}], "surprise": 1}', 400, "surprise"),
    ("/route", b'{"messages": [{"role": "user", "content": "\\ud800"}]}', 400, "surrogate"),
    ("/route", b'{"messages": [{"role": "user", "content": "\xff\xfe"}]}', 400, "UTF-8"),
    ("/route", json.dumps(msg(BIG)).encode(), 413, "limit is 2000"),
    ("/route", b'{"messages": [{"role": "user", "content": "hi"}], "budget": 0}', 422, "no eligible model"),
    ("/route_batch", b'{"requests": []}', 400, "requests"),
    ("/route_batch", json.dumps({"requests": [msg("hi")] * 17}).encode(), 413, "limit is 16"),
    ("/route_batch", json.dumps({"requests": [msg("hi"), {**msg("x"), "candidates": ["nope"]}]}).encode(), 400,
     "requests.1"),
    ("/feedback", b'{"event": "override"}', 400, "decision_id"),
    ("/feedback", b'{"decision_id": "abc", "event": "override"}', 400, "chosen_model"),
    ("/feedback", b'{"decision_id": "abc", "event": "rating", "rating": 9}', 400, "rating"),
    ("/feedback", b'{"decision_id": "abc", "event": "like"}', 400, "event"),
    ("/feedback", b'{"decision_id": "deadbeef", "event": "regenerate"}', 404, "unknown decision_id"),
    ("/v1/chat/completions", b'{"model": "auto", "messages": []}', 400, "messages"),
    ("/v1/chat/completions", b'{"model": "auto"}', 400, "messages"),
    ("/v1/chat/completions", b'{"model": "gpt-99", "messages": [{"role": "user", "content": "hi"}]}', 404,
     "does not exist"),
    ("/v1/chat/completions", b'{"model": "auto", "messages": [{"role": "system", "content": "be nice"}]}', 400,
     "user message"),
    ("/v1/chat/completions", b'{"model": "auto", "messages": [{"role": "user", "content": "hi"}], '
                             b'"route": {"candidates": ["nope"]}}', 400, "unknown model"),
]


@pytest.mark.parametrize("path,body,status,words", BAD, ids=[f"{i}-{b[0]}" for i, b in enumerate(BAD)])
def test_bad_input_is_4xx_with_a_message(client, path, body, status, words):
    headers = {"content-type": "application/json", **(key() if path == "/feedback" else {})}
    r = client.post(path, content=body, headers=headers)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    text = err["message"] if isinstance(err, dict) else err
    assert words.lower() in text.lower(), text
    assert "xxxxxxxxxx" not in text                     # the prompt is not echoed back


def test_wrong_method_and_path_are_4xx(client):
    assert client.get("/route").status_code == 405
    assert client.get("/no-such-endpoint").status_code == 404


# ---------------------------------------------------------- OpenAI proxy
@pytest.fixture
def upstream(fake_upstream):
    fake_upstream.reset()
    yield fake_upstream
    fake_upstream.reset()


def openai_client(served, **kw):
    import openai
    return openai.OpenAI(base_url=served.url + "/v1", api_key=KEYS["acme"], max_retries=0,
                         http_client=httpx.Client(trust_env=False, timeout=30.0), **kw)


def test_openai_client_auto(served, upstream):
    c = openai_client(served)
    raw = c.chat.completions.with_raw_response.create(model="auto", messages=[{"role": "user", "content": "hello"}])
    resp = raw.parse()
    assert resp.choices[0].message.content == f"hello from {resp.model}"
    assert raw.headers["x-autoroute-model"] == "claude-haiku-4.5" and raw.headers["x-autoroute-tier"] == "2"
    extra = resp.model_extra["autoroute"]
    assert extra["selected_model"] == "claude-haiku-4.5" and extra["fallbacks"] == []
    assert upstream.calls == [("claude-haiku-4-5", False)]        # the provider's id for the model


def test_openai_streaming(served, upstream):
    c = openai_client(served)
    chunks = list(c.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hello"}],
                                            stream=True))
    assert chunks[0].model_extra["autoroute"]["selected_model"] == "claude-haiku-4.5"
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == "hello from claude-haiku-4-5"
    assert upstream.calls == [("claude-haiku-4-5", True)]


@pytest.mark.parametrize("mode,stream", [("500", False), ("500", True), ("timeout", False), ("timeout", True)])
def test_upstream_failure_falls_back(served, upstream, mode, stream):
    upstream.modes["claude-haiku-4-5"] = mode
    with httpx.Client(base_url=served.url, timeout=30.0, trust_env=False) as h:
        r = h.post("/v1/chat/completions", json={"model": "auto", "stream": stream,
                                                  "messages": [{"role": "user", "content": "hello"}]})
        assert r.status_code == 200, r.text
        served_model = r.headers["x-autoroute-model"]
        assert served_model != "claude-haiku-4.5" and r.headers["x-autoroute-selected-model"] == "claude-haiku-4.5"
        assert "claude-haiku-4.5" in r.headers["x-autoroute-fallback"]
        if stream:
            events = [json.loads(e[len("data: "):]) for e in r.text.strip().split("\n\n")[:-1]]
            field = events[0]["autoroute"]
            assert {"content": " from"} in [e["choices"][0]["delta"] for e in events if e["choices"]]
            assert r.text.rstrip().endswith("data: [DONE]")
        else:
            field = r.json()["autoroute"]
        assert field["served_model"] == served_model and field["fallbacks"][0]["model"] == "claude-haiku-4.5"
        assert ("timed out" if mode == "timeout" else "500") in field["fallbacks"][0]["error"]
        assert "fallback_note" in field
        assert 'autoroute_fallbacks_total{' in h.get("/metrics").text
    assert upstream.calls[0][0] == "claude-haiku-4-5" and len(upstream.calls) == 2


def test_every_upstream_down_is_reported(served, upstream):
    upstream.default = "500"
    try:
        with httpx.Client(base_url=served.url, timeout=30.0, trust_env=False) as h:
            r = h.post("/v1/chat/completions", json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 502 and "every upstream attempt failed" in r.json()["error"]["message"]
        assert len(upstream.calls) == 3                           # the choice + max_fallbacks
    finally:
        upstream.default = "ok"


def test_concrete_model_and_modes(served, upstream):
    c = openai_client(served)
    raw = c.chat.completions.with_raw_response.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert raw.headers["x-autoroute-model"] == "gpt-4o" and raw.headers["x-autoroute-tier"] == "1"
    floor = c.chat.completions.with_raw_response.create(
        model="auto:floor", messages=[{"role": "user", "content": NEUTRAL}])
    auto = c.chat.completions.with_raw_response.create(model="auto", messages=[{"role": "user", "content": NEUTRAL}])
    cost = lambda raw_: raw_.parse().model_extra["autoroute"]["estimated_cost"]  # noqa: E731
    fd = floor.parse().model_extra["autoroute"]
    assert fd["quality_vs_best"] >= 0.95 - 1e-6            # within floor_band of the best predicted quality ...
    best_q = max(fd["scores"].values())
    for alt in fd["alternatives"]:                         # ... and no cheaper model is
        if alt["quality"] >= 0.95 * best_q - 1e-6 and alt["estimated_cost"] is not None:
            assert cost(floor) <= alt["estimated_cost"]
    assert cost(auto) is not None
    nitro = c.chat.completions.with_raw_response.create(
        model="auto:nitro", messages=[{"role": "user", "content": NEUTRAL}])
    assert "auto:nitro" in nitro.parse().model_extra["autoroute"]["reason"]


def test_openai_stream_chunks_as_the_sdk_expects(served, upstream):
    c = openai_client(served)
    chunks = list(c.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hello"}],
                                            stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len({ch.id for ch in chunks}) == 1 and len({ch.model for ch in chunks}) == 1
    assert len({ch.created for ch in chunks}) == 1
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == 8       # the upstream's usage
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "stop"
    upstream.modes["claude-haiku-4-5"] = "nousage"                              # no usage upstream: estimated
    chunks = list(c.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hello"}],
                                            stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].usage.completion_tokens > 0 and "estimated" in chunks[-1].model_extra["autoroute_usage"]
    without = list(c.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hello"}],
                                             stream=True))
    assert all(ch.usage is None for ch in without)


def test_langchain_chat_openai_streams_and_invokes(served, upstream):
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(model="auto", base_url=served.url + "/v1", api_key=KEYS["acme"], max_retries=0,
                     http_client=httpx.Client(trust_env=False, timeout=30.0), stream_usage=True)
    answer = llm.invoke("hello")
    assert answer.content == "hello from claude-haiku-4-5"
    parts = list(llm.stream("hello"))
    merged = parts[0]
    for part in parts[1:]:
        merged = merged + part
    assert merged.content == "hello from claude-haiku-4-5" and merged.usage_metadata["total_tokens"] == 8
    assert merged.id and merged.response_metadata["model_name"] == "claude-haiku-4-5"


@pytest.mark.parametrize("stream", [False, True])
def test_compressed_upstream_is_decoded(served, upstream, stream):
    upstream.modes["claude-haiku-4-5"] = "gzip"
    c = openai_client(served)
    if stream:
        chunks = list(c.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hello"}],
                                                stream=True))
        text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    else:
        text = c.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hello"}]
                                         ).choices[0].message.content
    assert text == "hello from claude-haiku-4-5"


def test_max_tokens_count_in_cost_and_context(served, upstream):
    c = openai_client(served)
    ask = lambda **kw: c.chat.completions.with_raw_response.create(  # noqa: E731
        model="auto", messages=[{"role": "user", "content": "hello"}], **kw).parse().model_extra["autoroute"]
    small, large = ask(max_tokens=10), ask(max_completion_tokens=4000)
    assert small["selected_model"] == large["selected_model"]
    assert large["estimated_cost"] > 10 * small["estimated_cost"]
    with httpx.Client(base_url=served.url, timeout=30.0, trust_env=False) as h:
        r = h.post("/v1/chat/completions", json={"model": "auto", "max_tokens": 5_000_000,
                                                  "messages": [{"role": "user", "content": "hello"}]})
        assert r.status_code == 422 and "context window" in r.json()["error"]["message"]
        r = h.post("/v1/chat/completions", json={"model": "auto", "max_tokens": 0,
                                                  "messages": [{"role": "user", "content": "hello"}]})
        assert r.status_code == 400 and "max_tokens" in r.json()["error"]["message"]
