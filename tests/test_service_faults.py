"""Overload is refused, not queued, and a dead provider is given a rest: a real
`bentoml serve` with small traffic limits, a per-org rate limit and a short
provider cooldown, against its own fake upstream."""
from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest

from serving_support import KEYS, serving_overrides, start_server

HELLO = {"model": "auto", "messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture(scope="module")
def upstream():
    from fake_upstream import FakeUpstream

    up = FakeUpstream(delay=1.5).start()
    yield up
    up.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory, upstream):
    tmp = tmp_path_factory.mktemp("faults")
    extra = ["serving.proxy.cooldown.failures=2", "serving.proxy.cooldown.seconds=2.0",
             "serving.proxy.timeout_s=5.0", "serving.traffic.proxy_max_concurrency=1",
             "serving.traffic.proxy_max_queue=0", "+serving.rate_limits.orgs.beta={rps: 1, burst: 2}"]
    s = start_server(tmp, serving_overrides(tmp, upstream.url, extra=extra))
    yield s
    s.stop()


@pytest.fixture
def client(server, upstream):
    upstream.reset()
    with httpx.Client(base_url=server.url, timeout=30.0, trust_env=False) as c:
        yield c
    upstream.reset()


def test_upstream_down_fallback_then_cooldown_then_recovery(client, upstream):
    providers = {m["id"]: m["provider"] for m in client.get("/models").json()["models"]}
    upstream.modes["claude-haiku-4-5"] = "500"               # the provider of the routed model goes down
    for _ in range(2):                                       # 1. fallback, twice: the second opens the cooldown
        r = client.post("/v1/chat/completions", json=HELLO)
        assert r.status_code == 200 and r.headers["x-autoroute-model"] != "claude-haiku-4.5", r.text
        assert "upstream answered 500" in r.headers["x-autoroute-fallback"]
    assert [m for m, _ in upstream.calls].count("claude-haiku-4-5") == 2
    upstream.calls.clear()
    r = client.post("/v1/chat/completions", json=HELLO)     # 2. cooldown: not even tried
    assert r.status_code == 200 and "cooling down" in r.headers["x-autoroute-fallback"], r.headers
    assert "claude-haiku-4-5" not in [m for m, _ in upstream.calls]
    assert providers[r.headers["x-autoroute-model"]] != "anthropic"
    assert 'reason="cooldown"' in client.get("/metrics").text
    upstream.modes.clear()                                   # 3. the provider is back
    time.sleep(2.2)
    upstream.calls.clear()
    r = client.post("/v1/chat/completions", json=HELLO)     # the probe succeeds: served again
    assert r.status_code == 200 and r.headers["x-autoroute-model"] == "claude-haiku-4.5", r.headers
    assert "x-autoroute-fallback" not in r.headers and upstream.calls[0][0] == "claude-haiku-4-5"


def test_rate_limit_per_org_is_429_with_retry_after(client):
    beta = {"x-api-key": KEYS["beta"]}
    body = {"messages": [{"role": "user", "content": "hello"}]}
    codes = [client.post("/route", json=body, headers=beta) for _ in range(4)]
    assert [r.status_code for r in codes[:2]] == [200, 200]
    limited = [r for r in codes if r.status_code == 429]
    assert limited, [r.status_code for r in codes]
    r = limited[0]
    assert int(r.headers["retry-after"]) >= 1 and "rate limit" in r.json()["error"] and "beta" in r.json()["error"]
    assert client.post("/route", json=body, headers={"x-api-key": KEYS["acme"]}).status_code == 200  # other orgs
    time.sleep(1.1)
    assert client.post("/route", json=body, headers=beta).status_code == 200                        # refilled


def test_overload_is_refused_at_once_with_503(client, server, upstream):
    upstream.default = "timeout"                     # every upstream answer takes 1.5 s
    try:
        slow: list[httpx.Response] = []
        t = threading.Thread(target=lambda: slow.append(
            httpx.post(server.url + "/v1/chat/completions", json=HELLO, timeout=30.0, trust_env=False)))
        t.start()
        time.sleep(0.5)                              # the one proxy slot is taken
        t0 = time.perf_counter()
        r = client.post("/v1/chat/completions", json=HELLO)
        took = time.perf_counter() - t0
        t.join()
    finally:
        upstream.default = "ok"
    assert r.status_code == 503 and r.headers["retry-after"] == "1", r.text
    assert r.json()["error"]["code"] == "overloaded" and took < 0.5, took
    assert slow[0].status_code == 200                # the admitted request is served
    assert client.post("/route", json={"messages": [{"role": "user", "content": "hi"}]}).status_code == 200


def test_gate_bounds_concurrency_and_queue():
    from serving.admission import Gate, Refused

    async def main():
        gate = Gate("decision", limit=2, queue=1, wait_ms=200)
        release = asyncio.Event()
        outcomes: list[str] = []

        async def hold():
            try:
                async with gate:
                    outcomes.append("in")
                    await release.wait()
            except Refused as err:
                outcomes.append(f"refused {err.status}")

        tasks = [asyncio.create_task(hold()) for _ in range(5)]
        await asyncio.sleep(0.05)
        assert gate.stats() == {"active": 2, "waiting": 1, "refused": 2}
        assert outcomes.count("in") == 2 and outcomes.count("refused 503") == 2
        release.set()
        await asyncio.gather(*tasks)
        assert outcomes.count("in") == 3 and gate.active == 0             # the waiter got a slot
        slow = Gate("decision", limit=1, queue=4, wait_ms=30)
        async with slow:
            t0 = time.perf_counter()
            with pytest.raises(Refused):
                async with slow:
                    pass
            assert time.perf_counter() - t0 < 0.2                           # the wait is bounded
        assert slow.active == 0 and slow.stats()["waiting"] == 0

    asyncio.run(main())


def test_gate_limit_follows_the_completion_rate():
    from serving.admission import Gate, Refused

    async def main():
        gate = Gate("decision", limit=64, target_ms=100, min_limit=2)
        assert gate.current_limit() == 64                     # nothing measured yet
        for _ in range(100):                                  # ~100 completions in a quarter second
            async with gate:
                pass
        await asyncio.sleep(0.26)
        limit = gate.current_limit()                           # ~380/s x 0.1 s
        assert 10 <= limit < 64, limit
        holders = [await gate.__aenter__() for _ in range(limit)]
        with pytest.raises(Refused):                           # no queue: the next is refused at once
            async with gate:
                pass
        for h in holders:
            await h.__aexit__(None, None, None)
        assert gate.active == 0

    asyncio.run(main())


@pytest.mark.parametrize("policy", ["refuse", "degrade"])
def test_corrupt_champion_is_refused_or_degraded_per_config(tiny_run, tmp_path, policy):
    import shutil
    from types import SimpleNamespace

    from serving.runtime import ModelLoadError, load_champion, load_serving_config

    home = tiny_run["bentoml_home"] / "models" / "autoroute-router"
    folder = tmp_path / "bundle"
    shutil.copytree(home / (home / "latest").read_text().strip(), folder)
    (folder / "preference.pt").write_bytes(b"not a torch file")          # a corrupt weight file
    stored = SimpleNamespace(path=str(folder), tag="autoroute-router:corrupt")
    cfg = load_serving_config([f"serving.on_model_error={policy}", f"serving.encoder.cache_dir={tmp_path}"])
    if policy == "refuse":
        with pytest.raises(ModelLoadError, match="could not be loaded.*refusing to start"):
            load_champion(stored, cfg, [])
    else:
        champ = load_champion(stored, cfg, [])
        assert champ.degraded and champ.router.scorer is None and "could not be loaded" in champ.problem
        from autoroute.types import Request
        assert champ.router.route(Request.from_prompt("hello")).degraded
