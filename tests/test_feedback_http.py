"""/feedback over real HTTP (fixture `served`): every kind of bad feedback
gets a 4xx that says what is wrong and writes nothing; events are credited
to the model whose answer they are about; every acknowledged event is in
the log, also under concurrent posts. Also the dashboard's admin key and
the pages the service serves."""
from __future__ import annotations

import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from autoroute.feedback import feedback_to_comparisons, read_feedback
from serving_support import ADMIN_KEY, KEYS

BUG = "Fix this bug: ```python\ndef f(): return 1/0\n```"


@pytest.fixture(scope="module")
def client(served):
    with httpx.Client(base_url=served.url, timeout=30.0, trust_env=False) as c:
        yield c


def key(org: str = "gamma") -> dict:
    return {"x-api-key": KEYS[org]}


def decide(client, user: str, text: str = BUG) -> dict:
    r = client.post("/route", json={"messages": [{"role": "user", "content": text}], "user_id": user},
                    headers=key())
    assert r.status_code == 200, r.text
    return r.json()


def rows(served, decision_id: str) -> list[tuple]:
    return sqlite3.connect(served.db).execute(
        "SELECT event, routed_model, chosen_model, rating, user_id, org_id FROM feedback WHERE decision_id = ? "
        "ORDER BY id", (decision_id,)).fetchall()


# (name, body on top of {"decision_id": <a fresh decision of user u-bad>}, headers, status, code, words)
BAD_FEEDBACK = [
    ("unknown decision", {"decision_id": "0" * 32, "event": "regenerate"}, None, 404, "unknown_decision",
     "unknown decision_id"),
    ("unknown model in an override", {"event": "override", "chosen_model": "gpt-99"}, None, 400, "unknown_model",
     "unknown model 'gpt-99'"),
    ("unknown model in a rating", {"event": "rating", "rating": 4, "chosen_model": "llama-99"}, None, 400,
     "unknown_model", "unknown model 'llama-99'"),
    ("unknown model in a regeneration", {"event": "regenerate", "chosen_model": "nope"}, None, 400,
     "unknown_model", "chosen_model"),
    ("wrong user", {"event": "rating", "rating": 5, "user_id": "u-intruder"}, None, 403, "wrong_user",
     "another user"),
    ("wrong org's key", {"event": "regenerate"}, "beta", 403, "forbidden", "another org"),
    ("rating above 5", {"event": "rating", "rating": 6}, None, 400, "invalid_request", "rating"),
    ("rating below 1", {"event": "rating", "rating": 0}, None, 400, "invalid_request", "rating"),
    ("fractional rating", {"event": "rating", "rating": 4.5}, None, 400, "invalid_request", "rating"),
    ("rating as text", {"event": "rating", "rating": "five"}, None, 400, "invalid_request", "rating"),
    ("rating event without rating", {"event": "rating"}, None, 400, "invalid_request", "needs rating"),
    ("rating on an override", {"event": "override", "chosen_model": "gpt-4o", "rating": 3}, None, 400,
     "invalid_request", "only for event=rating"),
    ("override without a model", {"event": "override"}, None, 400, "invalid_request", "chosen_model"),
    ("override to the routed model", {"event": "override", "chosen_model": "claude-sonnet-4"}, None, 400,
     "not_an_override", "routed to"),
    ("unknown event", {"event": "like"}, None, 400, "invalid_request", "event"),
    ("no key", {"event": "regenerate"}, "none", 401, "unauthorized", "API key"),
]


@pytest.mark.parametrize("name,body,org,status,code,words", BAD_FEEDBACK, ids=[b[0] for b in BAD_FEEDBACK])
def test_bad_feedback_is_4xx_and_writes_nothing(client, served, name, body, org, status, code, words):
    d = decide(client, "u-bad")
    assert d["selected_model"] == "claude-sonnet-4"
    headers = {} if org == "none" else key(org or "gamma")
    r = client.post("/feedback", json={"decision_id": d["decision_id"], **body}, headers=headers)
    assert r.status_code == status, r.text
    assert r.json()["code"] == code and words.lower() in r.json()["error"].lower(), r.json()
    assert rows(served, d["decision_id"]) == [] and rows(served, body.get("decision_id", "")) == []


def test_events_are_credited_to_the_answer_they_are_about(client, served):
    d = decide(client, "u-attr")
    did, routed = d["decision_id"], d["selected_model"]
    steps = [({"event": "rating", "rating": 2}, routed),                              # the routed answer
             ({"event": "override", "chosen_model": "opus-4.5"}, "claude-opus-4.5"),   # an alias resolves
             ({"event": "rating", "rating": 5}, "claude-opus-4.5"),                    # the answer now shown
             ({"event": "regenerate", "chosen_model": "gpt-5.2"}, "gpt-5.2"),          # a new answer by GPT-5.2
             ({"event": "regenerate"}, "gpt-5.2"),                                     # retried, same model
             ({"event": "rating", "rating": 4, "chosen_model": "gpt-4o"}, "gpt-4o")]   # said explicitly
    for body, chosen in steps:
        r = client.post("/feedback", json={"decision_id": did, "user_id": "u-attr", **body}, headers=key())
        assert r.status_code == 200, r.text
        ack = r.json()
        assert ack["stored"] is True and ack["routed_model"] == routed and ack["chosen_model"] == chosen, (body, ack)
        assert ack["user_id"] == "u-attr" and ack["org_id"] == "gamma"
    logged = rows(served, did)
    assert [(e, c, rt) for e, _, c, rt, _, _ in logged] == [
        ("rating", routed, 2.0), ("override", "claude-opus-4.5", None), ("rating", "claude-opus-4.5", 5.0),
        ("regenerate", "gpt-5.2", None), ("regenerate", "gpt-5.2", None), ("rating", "gpt-4o", 4.0)]
    comps = feedback_to_comparisons(read_feedback(Path(served.db)))
    mine = comps[comps["decision_id"] == did]
    assert sorted(zip(mine["event"], mine["model_a"], mine["model_b"])) == [      # a retry is no comparison
        ("override", "claude-opus-4.5", routed), ("regenerate", "gpt-5.2", "claude-opus-4.5")]


def test_every_acknowledged_event_is_logged_under_concurrency(client, served):
    ds = [decide(client, f"u-conc-{i}") for i in range(6)]
    bodies = []
    for i, d in enumerate(ds):
        bodies += [{"decision_id": d["decision_id"], "event": "rating", "rating": 1 + i % 5},
                   {"decision_id": d["decision_id"], "event": "override", "chosen_model": "gpt-4o"},
                   {"decision_id": d["decision_id"], "event": "rating", "rating": 9},            # refused
                   {"decision_id": d["decision_id"], "event": "regenerate", "user_id": "u-x"}]   # refused

    def post(body):
        with httpx.Client(base_url=served.url, timeout=30.0, trust_env=False) as c:
            return body, c.post("/feedback", json=body, headers=key())
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(post, bodies))
    acked = [b for b, r in results if r.status_code == 200]
    assert len(acked) == 12 and all(r.status_code in (200, 400, 403) for _, r in results)
    con = sqlite3.connect(served.db)
    for d in ds:
        got = sorted(con.execute("SELECT event FROM feedback WHERE decision_id = ?", (d["decision_id"],)))
        assert got == [("override",), ("rating",)], got


# ------------------------------------------------------------- dashboard + pages
def test_dashboard_data_needs_an_admin_key(client):
    decide(client, "u-dash")
    assert client.post("/route", json={"messages": [{"role": "user", "content": "hi"}], "user_id": "u-dash-beta"},
                       headers=key("beta")).status_code == 200
    r = client.get("/admin/dashboard")
    assert r.status_code == 401 and "API key" in r.json()["error"]
    r = client.get("/admin/dashboard", headers=key())
    assert r.status_code == 403 and "admin" in r.json()["error"]
    assert client.get("/admin/dashboard", headers={"x-api-key": "wrong"}).status_code == 401
    r = client.get("/admin/dashboard?days=0", headers={"x-api-key": ADMIN_KEY})
    assert r.status_code == 400 and "days" in r.json()["error"] and "0.01" in r.json()["error"]
    r = client.get("/admin/dashboard?days=1", headers={"authorization": f"Bearer {ADMIN_KEY}"})
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["totals"]["decisions"] >= 1 and data["baseline_name"] == data["names"][data["baseline_model"]]
    assert [a["arm"] for a in data["arms"]] == ["champion"]
    assert data["by_model"] and data["buckets"] and "gamma" in data["orgs"]
    one = client.get("/admin/dashboard?org=gamma", headers={"x-api-key": ADMIN_KEY}).json()
    assert one["org"] == "gamma" and 0 < one["totals"]["all_decisions"] < data["totals"]["all_decisions"]


def test_pages_are_served_and_self_contained(client):
    static = Path(__file__).resolve().parents[1] / "serving" / "static"
    for path, marker in (("/ui", "Auto (recommended)"), ("/dashboard", "analytics")):
        r = client.get(path)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html") and marker in r.text
    for f in sorted(static.iterdir()):
        r = client.get(f"/assets/{f.name}")
        assert r.status_code == 200 and r.content == f.read_bytes()
        assert "http://" not in r.text.replace("http://www.w3.org/2000/svg", "") and "https://" not in r.text, f.name
    assert client.get("/assets/../service.py").status_code == 404
