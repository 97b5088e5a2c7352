"""The dashboard's numbers (serving/dashboard.py) on a synthetic log whose
true counts are known, on an empty log, and on a log written before the
`requested` and `arm` columns existed; Tier 4 credits a rating to the model
whose answer was rated."""
from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timezone

import pandas as pd
import pytest

from autoroute.config import build_router, load_config
from autoroute.feedback import FEEDBACK_DDL
from autoroute.scoring import prior_quality
from autoroute.types import Request
from autoroute.user_preference import fit_tier4
from log_history import write_history
from serving import dashboard
from serving.store import LogStore

NOW = 1_800_000_000.0


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    db = tmp_path_factory.mktemp("dash") / "log.sqlite"
    truth = write_history(db, hours=30, n=240, now=NOW)
    return db, truth


@pytest.fixture(scope="module")
def catalog():
    return build_router(load_config([]), degraded=True).catalog


def _build(db, catalog, days=7.0):
    return dashboard.build(db, catalog, days, now=datetime.fromtimestamp(NOW + 60, tz=timezone.utc))


def test_totals_match_the_log(history, catalog):
    db, truth = history
    out = _build(db, catalog)
    t = out["totals"]
    assert t["decisions"] == truth["auto"] and t["picked"] == truth["overrides"]
    assert t["overrides"] == truth["overrides"] and t["regenerations"] == truth["regenerations"]
    assert t["override_rate"] == pytest.approx(truth["overrides"] / truth["auto"])
    assert t["ratings"] == len(truth["ratings"])
    assert t["mean_rating"] == pytest.approx(sum(truth["ratings"]) / len(truth["ratings"]), abs=1e-3)
    assert sum(p["count"] for p in out["override_pairs"]) <= truth["overrides"]
    assert t["p50_ms"] <= t["p90_ms"] <= t["p99_ms"]


def test_time_series_add_up(history, catalog):
    db, truth = history
    out = _build(db, catalog)
    n = len(out["buckets"])
    assert 1 < n <= dashboard.MAX_BUCKETS and out["bucket"] == "1h"
    for key in ("by_model", "by_task", "by_tier"):
        assert all(len(v) == n for v in out[key].values())
        assert sum(map(sum, out[key].values())) == truth["auto"] + truth["overrides"], key
    assert sum(out["by_requested"]["auto"]) == truth["auto"]
    rates = [r for r in out["override_rate"]["override rate"] if r is not None]
    assert rates and all(0 <= r <= 1 for r in rates)
    spend = out["spend"][f"always {out['baseline_name']}"]
    assert spend == sorted(spend), "cumulative spend must not fall"


def test_baseline_is_the_most_capable_model_on_the_same_tokens(history, catalog):
    """Recomputed independently: each Auto decision's input tokens and the rules' expected
    output tokens for its task, priced at the offered model with the best mean quality prior."""
    db, _ = history
    out = _build(db, catalog)
    quality, _ = prior_quality(catalog, catalog.offered, None)
    top = catalog.offered[int(quality.argmax())]
    assert out["baseline_model"] == top and out["baseline_name"] == catalog.cards[top].display_name
    table = load_config([]).rules.expected_output_tokens
    con = sqlite3.connect(db)
    rows = con.execute("SELECT task, payload FROM decisions WHERE requested = 'auto'").fetchall()
    card = catalog.cards[top]
    want = sum(card.estimate_cost(json.loads(p)["estimated_tokens"], table.get(task, table["default"]))
               for task, p in rows)
    assert out["totals"]["baseline_spend"] == pytest.approx(want, rel=1e-3)
    assert out["totals"]["savings"] == pytest.approx(1 - out["totals"]["spend"] / want, rel=1e-3)


def test_arms_side_by_side(history, catalog):
    db, truth = history
    arms = {a["arm"]: a for a in _build(db, catalog)["arms"]}
    assert list(arms) == ["champion", "challenger-a"]
    for name, a in arms.items():
        assert a["decisions"] == truth["per_arm"][name]
        assert a["overrides"] == truth["per_arm_overrides"][name]
        assert a["cost_per_decision"] > 0 and a["p99_ms"] is not None


def test_one_org(history, catalog):
    db, truth = history
    at = datetime.fromtimestamp(NOW + 60, tz=timezone.utc)
    mine = dashboard.build(db, catalog, 7.0, now=at, org="acme")
    assert mine["orgs"] == ["acme"] and mine["totals"]["decisions"] == truth["auto"]
    other = dashboard.build(db, catalog, 7.0, now=at, org="globex")
    assert other["empty"] is True and other["orgs"] == ["acme"]


def test_window_excludes_old_decisions(history, catalog):
    db, truth = history
    recent = _build(db, catalog, days=0.25)["totals"]["decisions"]
    assert 0 < recent < truth["auto"]


def test_empty_and_missing_log(tmp_path, catalog):
    assert _build(tmp_path / "none.sqlite", catalog)["empty"] is True
    LogStore(tmp_path / "new.sqlite").close()
    out = _build(tmp_path / "new.sqlite", catalog)
    assert out["empty"] is True and out["arms"] == []


def test_a_log_from_before_the_arm_column(tmp_path, catalog):
    """Older logs lack `requested` and `arm`: the store adds them; their decisions count as Auto, champion."""
    db = tmp_path / "old.sqlite"
    con = sqlite3.connect(db)
    con.executescript(FEEDBACK_DDL)
    con.executescript("""CREATE TABLE decisions (decision_id TEXT PRIMARY KEY, ts TEXT NOT NULL, user_id TEXT,
        org_id TEXT, prompt TEXT NOT NULL, selected_model TEXT NOT NULL, task TEXT, tier INTEGER, payload TEXT);""")
    d = build_router(load_config([]), degraded=True).route(Request.from_prompt("hello"))
    ts = datetime.fromtimestamp(NOW, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    con.execute("INSERT INTO decisions VALUES (?,?,?,?,?,?,?,?,?)",
                (d.decision_id, ts, "u", None, "hello", d.selected_model, d.task, d.tier, d.model_dump_json()))
    con.commit()
    con.close()
    assert _build(db, catalog)["arms"][0]["arm"] == "champion"          # read before migration
    LogStore(db).close()
    cols = {r[1] for r in sqlite3.connect(db).execute("PRAGMA table_info(decisions)")}
    assert {"requested", "arm"} <= cols
    out = _build(db, catalog)
    assert [a["arm"] for a in out["arms"]] == ["champion"] and out["totals"]["decisions"] == 1


def test_tier4_credits_a_rating_to_the_rated_model():
    """Ratings after an override are about the model switched to, not the routed one."""
    rows = [{"decision_id": f"d{i}", "prompt": "p", "routed_model": "claude-haiku-4.5",
             "chosen_model": "claude-opus-4.5", "event": "rating", "rating": 5.0, "user_id": "u", "org_id": None,
             "ts": "2026-01-01T00:00:00.000Z"} for i in range(4)]
    view = fit_tier4(pd.DataFrame(rows)).view("u", None, ["claude-opus-4.5", "claude-haiku-4.5"])
    assert view.logits[0] > 0 and view.logits[1] == 0
