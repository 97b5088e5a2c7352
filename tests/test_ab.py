"""Champion / challenger: the stable A/B split, the comparison report from the
log, and a real `bentoml serve` running the tiny champion with a challenger in
an A/B split (the challenger learned a population preference from feedback)."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time

import httpx
import pandas as pd
import pytest

from autoroute.types import Alternative, Decision
from serving.runtime import arm_of
from serving.store import LogStore
from training.compare_arms import format_report, report

PY = sys.executable


def test_arm_split_is_stable_and_follows_the_share():
    users = [f"user-{i}" for i in range(4000)]
    arms = [arm_of(u, None, 0.3, "s1") for u in users]
    assert arms == [arm_of(u, "any-org", 0.3, "s1") for u in users]       # the user decides, not the org
    assert abs(arms.count("challenger") / len(users) - 0.3) < 0.03
    assert [arm_of(u, None, 0.3, "s2") for u in users] != arms            # a new salt reshuffles
    assert {arm_of(u, None, 0.0, "s1") for u in users} == {"champion"}
    assert {arm_of(u, None, 1.0, "s1") for u in users} == {"challenger"}
    assert arm_of(None, None, 1.0, "s1") == "champion"


def _decision(i: int, model: str, cost: float, ms: float) -> Decision:
    return Decision(decision_id=f"d{i:04d}", selected_model=model, display_name=model, tier=3, tier_name="learned",
                    task="coding", confidence=0.9, reason="r", signals=[], alternatives=[
                        Alternative(model="gpt-4o", display_name="GPT-4o", score=0.1, quality=0.5,
                                    estimated_cost=0.01)],
                    scores={}, estimated_cost=cost, estimated_tokens=10, latency_ms=ms)


def test_report_counts_each_arm_and_the_shadow(tmp_path):
    store = LogStore(tmp_path / "log.sqlite", flush_ms=5)
    for i in range(40):
        arm = "challenger" if i % 2 else "champion"
        store.log_decision(_decision(i, "claude-sonnet-4", 0.01 if arm == "champion" else 0.002, 1.0 + i),
                           f"u{i % 4}", "o", "p", arm=arm)
        store.log_shadow(f"d{i:04d}", _decision(1000 + i, "gpt-4o" if i < 10 else "claude-sonnet-4", 0.003, 2.0))
    store.flush()
    events = [{"decision_id": f"d{i:04d}", "prompt": "p", "routed_model": "claude-sonnet-4", "chosen_model": "gpt-4o",
               "event": "override", "rating": None, "user_id": "u", "org_id": "o", "ts": "2026-01-01T00:00:00.000Z"}
              for i in (0, 2, 4, 6, 1)]
    events += [{"decision_id": "d0008", "prompt": "p", "routed_model": "claude-sonnet-4",
                "chosen_model": "claude-sonnet-4", "event": "rating", "rating": 2.0, "user_id": "u", "org_id": "o",
                "ts": "2026-01-01T00:00:00.000Z"}]
    store.add_feedback(events)
    store.close()
    r = report(tmp_path / "log.sqlite")
    champ, chall = r["arms"]["champion"], r["arms"]["challenger"]
    assert champ["decisions"] == chall["decisions"] == 20
    assert champ["override_rate"] == pytest.approx(4 / 20) and chall["override_rate"] == pytest.approx(1 / 20)
    assert champ["mean_rating"] == 2.0 and chall["mean_rating"] is None
    assert champ["cost_per_decision"] == pytest.approx(0.01) and chall["cost_per_decision"] == pytest.approx(0.002)
    assert r["difference"]["override_rate_challenger_minus_champion"] == pytest.approx(-0.15)
    sh = r["shadow"]
    assert sh["decisions"] == 40 and sh["agrees_with_served"] == pytest.approx(30 / 40)
    # final choices: gpt-4o for the 5 overridden decisions (all among the first 10), the routed model otherwise
    assert sh["challenger_matches_final_choice"] == pytest.approx((5 + 30) / 40)
    assert sh["champion_matches_final_choice"] == pytest.approx(35 / 40)
    assert "override rate, challenger - champion: -15.0%" in format_report(r)


@pytest.fixture(scope="module")
def servers(tiny_run, tmp_path_factory):
    """The tiny champion, and as challenger the same bundle whose Tier 4 was fit on
    logged feedback where many users switched coding answers to GPT-4o-mini."""
    from serving_support import serving_overrides, start_server, wait_ready

    tmp = tmp_path_factory.mktemp("ab")
    script = f"""
import shutil, pandas as pd
from autoroute.bundle import export_to_bentoml
from autoroute.user_preference import fit_tier4, save_user_preference
shutil.copytree({str(tiny_run['bundle'])!r}, {str(tmp / 'challenger')!r})
rows = [dict(decision_id=f"d{{i}}", prompt="p", event="override", routed_model="claude-sonnet-4",
             chosen_model="gpt-4o-mini", rating=None, user_id=f"old-{{i % 12}}", org_id=f"org-{{i % 3}}",
             task="coding", ts=float(i)) for i in range(60)]
save_user_preference(fit_tier4(pd.DataFrame(rows)), {str(tmp / 'challenger' / 'user_preference.json')!r})
print(export_to_bentoml({str(tmp / 'challenger')!r}, "autoroute-challenger"))
"""
    env = {**os.environ, "BENTOML_HOME": str(tiny_run["bentoml_home"])}
    proc = subprocess.run([PY, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    servers = {}
    for mode in ("ab", "shadow"):     # started together, waited for together
        (tmp / mode).mkdir()
        overrides = serving_overrides(tmp / mode, keys=False, extra=[
            "serving.on_model_error=refuse", "serving/encoder=torch",
            "serving.challenger.model=autoroute-challenger:latest", f"serving.challenger.mode={mode}",
            "serving.challenger.ab_share=0.5", "serving.challenger.salt=test"])
        servers[mode] = start_server(tmp / mode, overrides, bentoml_home=tiny_run["bentoml_home"], wait=False)
    try:
        for server in servers.values():
            wait_ready(server, 300)
        yield servers
    finally:
        for server in servers.values():
            server.stop()


@pytest.fixture(scope="module")
def ab_server(servers):
    return servers["ab"]


def test_ab_split_serves_each_user_from_one_arm_and_reports_both(ab_server):
    code = "Write a Python function that parses a CSV file"
    with httpx.Client(base_url=ab_server.url, timeout=60, trust_env=False) as c:
        health = c.get("/healthz").json()
        assert health["challenger"]["loaded"] is True and health["challenger"]["mode"] == "ab"
        seen = {}
        for i in range(12):
            user = f"new-user-{i}"
            for _ in range(2):
                d = c.post("/route", json={"messages": [{"role": "user", "content": code}], "user_id": user,
                                           "space": {"type": "coding"}}).json()
                seen.setdefault(user, set()).add(d["selected_model"])
                last = d
            if arm_of(user, None, 0.5, "test") == "champion":
                r = c.post("/feedback", json={"decision_id": last["decision_id"], "event": "override",
                                              "chosen_model": "gpt-4o-mini"})
                assert r.status_code == 200, r.text
        arms = {u: arm_of(u, None, 0.5, "test") for u in seen}
        assert set(arms.values()) == {"champion", "challenger"}
        for u, models in seen.items():     # the challenger learned what users switch to; the champion has not
            assert models == ({"gpt-4o-mini"} if arms[u] == "challenger" else {"claude-sonnet-4"}), (u, models)
        text = c.get("/metrics").text
        assert 'autoroute_arm_decisions_total{arm="challenger"}' in text
        assert 'autoroute_arm_feedback_total{arm="champion",event="override"}' in text
        reason = c.post("/route", json={"messages": [{"role": "user", "content": code}], "space": {"type": "coding"},
                                        "user_id": next(u for u, a in arms.items() if a == "challenger")}).json()["reason"]
        assert "users usually switch to GPT-4o-mini for coding" in reason
    time.sleep(0.5)
    log = pd.read_sql_query("SELECT user_id, arm FROM decisions", sqlite3.connect(ab_server.db))
    assert all(arm == arms[u] for u, arm in zip(log["user_id"], log["arm"]) if u in arms)
    r = report(ab_server.db)
    assert set(r["arms"]) == {"champion", "challenger"}
    assert r["arms"]["champion"]["override_rate"] > r["arms"]["challenger"]["override_rate"] == 0.0


def test_shadow_challenger_decides_every_request_but_never_serves(servers):
    server = servers["shadow"]
    code = "Write a Python function that parses a CSV file"
    served = []
    with httpx.Client(base_url=server.url, timeout=60, trust_env=False) as c:
        for i in range(6):
            d = c.post("/route", json={"messages": [{"role": "user", "content": code}], "user_id": f"s-{i}",
                                       "space": {"type": "coding"}}).json()
            assert d["selected_model"] == "claude-sonnet-4"          # the champion answers everyone
            served.append(d["decision_id"])
        c.post("/feedback", json={"decision_id": served[0], "event": "override", "chosen_model": "gpt-4o-mini"})
        deadline = time.monotonic() + 20
        while 'autoroute_shadow_decisions_total{agree="false"} 6.0' not in c.get("/metrics").text:
            assert time.monotonic() < deadline, "the shadow decisions were not counted"
            time.sleep(0.3)
    deadline = time.monotonic() + 10
    while True:
        rows = sqlite3.connect(server.db).execute("SELECT decision_id, selected_model, arm FROM shadow_decisions").fetchall()
        if len(rows) == 6 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert sorted(r[0] for r in rows) == sorted(served)
    assert {r[1] for r in rows} == {"gpt-4o-mini"} and {r[2] for r in rows} == {"challenger"}
    arms = {r[0] for r in sqlite3.connect(server.db).execute("SELECT arm FROM decisions")}
    assert arms == {"champion"}
    sh = report(server.db)["shadow"]
    assert sh["decisions"] == 6 and sh["agrees_with_served"] == 0.0
    assert sh["challenger_matches_final_choice"] == pytest.approx(1 / 6)
