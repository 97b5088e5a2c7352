"""Logs safe to keep: sensitive spans never reach the log DB (nor its WAL), the
server log, /metrics or error messages; prompt retention; and a log that cannot
be written turns writes and /readyz into 503 without losing anything that was
acknowledged."""
from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import httpx
import pytest

from autoroute.signals import redact
from autoroute.types import Decision
from serving_support import KEYS, serving_overrides, start_server

CARD, EMAIL, SECRET = "4111 1111 1111 1111", "jane.doe@example.com", "sk-proj0123456789abcdefXYZ"
NEEDLES = (CARD, CARD.replace(" ", ""), EMAIL, SECRET)
PROMPT = f"My card is {CARD}, mail me at {EMAIL}, and use key {SECRET} to fix this failing test"


def decision(i: int | str) -> Decision:
    return Decision(decision_id=f"d{i}", selected_model="gpt-4o", display_name="GPT-4o", tier=3,
                    tier_name="learned", task="analysis", confidence=0.8, reason="r", signals=[], alternatives=[],
                    scores={}, estimated_cost=0.01, estimated_tokens=5)


def test_redact_replaces_every_detected_span():
    out = redact(PROMPT + " or call +1 415-555-0123")
    assert not any(n in out for n in NEEDLES) and "415-555" not in out
    assert "[card_number]" in out and "[email]" in out and "[secret]" in out and "fix this failing test" in out
    assert redact("order 12345 shipped on 2025-01-02, 2+2=4") == "order 12345 shipped on 2025-01-02, 2+2=4"


# ------------------------------------------------------------------ the store
def test_store_writes_redacted_prompts_and_expires_old_ones(tmp_path):
    from serving.store import LogStore, iso_now

    db = tmp_path / "log.sqlite"
    store = LogStore(db, prompt_retention_days=1.0)
    store.log_decision(decision(1), "u", "o", PROMPT).result(timeout=10)
    store.add_feedback([{"decision_id": "d1", "prompt": PROMPT, "routed_model": "gpt-4o", "chosen_model": "gpt-4o",
                         "event": "rating", "rating": 4, "user_id": "u", "org_id": "o", "ts": iso_now()}])
    old = iso_now(time.time() - 3 * 86400)
    con = sqlite3.connect(db)
    con.execute("INSERT INTO decisions (decision_id, ts, prompt, selected_model) VALUES ('old', ?, 'an old prompt', "
                "'gpt-4o')", (old,))
    con.commit()
    store.close()
    assert con.execute("SELECT prompt FROM decisions WHERE decision_id='d1'").fetchone()[0] == redact(PROMPT)
    assert con.execute("SELECT prompt FROM feedback").fetchone()[0] == redact(PROMPT)
    store = LogStore(db, prompt_retention_days=1.0)            # the writer purges at start and then hourly
    deadline = time.monotonic() + 10
    while con.execute("SELECT prompt FROM decisions WHERE decision_id='old'").fetchone()[0] and \
            time.monotonic() < deadline:
        time.sleep(0.1)
    store.close()
    assert con.execute("SELECT prompt FROM decisions WHERE decision_id='old'").fetchone()[0] == ""
    assert con.execute("SELECT prompt FROM decisions WHERE decision_id='d1'").fetchone()[0] != ""   # recent: kept
    con.close()
    blob = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("log.sqlite"))
    assert not any(n.encode() in blob for n in NEEDLES)
    assert b"an old prompt" not in blob                                   # expired: not in the file, nor its WAL


def test_unwritable_log_is_reported_not_swallowed(tmp_path):
    from serving.store import LogStore, LogUnavailable

    (tmp_path / "file").write_text("a regular file where the log's folder should be")
    store = LogStore(tmp_path / "file" / "log.sqlite", retry_s=0.1)
    try:
        assert not store.healthy and "cannot" in store.error
        with pytest.raises(LogUnavailable):
            store.log_decision(decision(1), "u", "o", "hi").result(timeout=10)
        with pytest.raises(LogUnavailable):
            store.add_feedback([{"decision_id": "d1", "prompt": "hi", "routed_model": "gpt-4o",
                                 "chosen_model": "gpt-4o", "event": "regenerate", "ts": "t"}])
    finally:
        store.close()


@pytest.mark.parametrize("durability", ["commit_before_answer", "group_commit"])
def test_full_log_keeps_every_acknowledged_decision(tmp_path, durability):
    from serving.store import LogStore, LogUnavailable

    db = tmp_path / "log.sqlite"
    store = LogStore(db, flush_ms=5, durability=durability, max_mb=0.08, retry_s=0.1)
    acked, refused = [], 0
    for i in range(400):
        try:
            store.check_writable()
        except LogUnavailable:
            refused += 1
            continue
        fut = store.log_decision(decision(i), "u", "o", "x" * 200)
        try:
            fut.result(timeout=10)
            acked.append(f"d{i}")
        except LogUnavailable:
            refused += 1
    assert acked and refused and not store.healthy and "full" in store.error
    store.close()
    con = sqlite3.connect(db)
    logged = {r[0] for r in con.execute("SELECT decision_id FROM decisions")}
    assert set(acked) <= logged


# ------------------------------------------------------------- over HTTP
def test_no_trace_of_sensitive_data_in_log_db_server_log_or_metrics(served, fake_upstream):
    fake_upstream.reset()
    key = {"x-api-key": KEYS["acme"]}
    with httpx.Client(base_url=served.url, timeout=30.0, trust_env=False, headers=key) as c:
        body = {"messages": [{"role": "user", "content": PROMPT}], "user_id": "u-sec"}
        d = c.post("/route", json=body)
        assert d.status_code == 200, d.text
        assert c.post("/route_batch", json={"requests": [body, body]}).status_code == 200
        for stream in (False, True):
            r = c.post("/v1/chat/completions", json={"model": "auto", "stream": stream, "user": "u-sec",
                                                      "messages": [{"role": "user", "content": PROMPT}]})
            assert r.status_code == 200, r.text
        r = c.post("/feedback", json={"decision_id": d.json()["decision_id"], "event": "rating", "rating": 2})
        assert r.status_code == 200, r.text
        for bad in ({**body, "candidates": [CARD]}, {**body, "area": {"model_lock": EMAIL}},
                    {**body, "user_id": 5, "org_id": SECRET}):
            r = c.post("/route", json=bad)
            assert 400 <= r.status_code < 500 and not any(n in r.text for n in NEEDLES), r.text
        metrics = c.get("/metrics").text
    con = sqlite3.connect(served.db)
    rows = con.execute("SELECT prompt FROM decisions WHERE user_id='u-sec'").fetchall()
    assert len(rows) == 5 and all(r[0] == redact(PROMPT) for r in rows)          # stored, redacted
    assert con.execute("SELECT prompt FROM feedback WHERE user_id='u-sec'").fetchone()[0] == redact(PROMPT)
    files = [p for p in Path(served.db).parent.iterdir() if p.name.startswith(Path(served.db).name)]
    assert any(p.name.endswith("-wal") for p in files)
    blob = b"".join(p.read_bytes() for p in files)
    server_log = served.log()
    assert "[card_number]" in server_log                                   # prompts are logged (log_prompts)...
    for needle in NEEDLES:                                                 # ...with no trace of the data
        assert needle.encode() not in blob, f"{needle!r} in the log DB"
        assert needle not in server_log, f"{needle!r} in the server log"
        assert needle not in metrics, f"{needle!r} in /metrics"
    assert any(call[0] for call in fake_upstream.calls)                   # the upstream got the real prompt


@pytest.fixture(scope="module")
def full_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("full")
    server = start_server(tmp, serving_overrides(tmp, extra=["serving.log.max_mb=0.08"]))
    yield server
    server.stop()


def test_full_log_answers_503_and_loses_nothing_acknowledged(full_server):
    acked, refused = [], []
    key = {"x-api-key": KEYS["acme"]}
    with httpx.Client(base_url=full_server.url, timeout=30.0, trust_env=False, headers=key) as c:
        for i in range(300):
            r = c.post("/route", json={"messages": [{"role": "user", "content": f"question {i} " + "y" * 300}],
                                       "user_id": "u-full"})
            if r.status_code == 200:
                acked.append(r.json()["decision_id"])
            else:
                assert r.status_code == 503 and r.headers["retry-after"], r.text
                assert "log" in r.json()["error"]
                refused.append(r)
                if len(refused) >= 3:
                    break
        assert acked and refused
        ready = c.get("/readyz")
        assert ready.status_code == 503 and ready.json()["log"] is False and "full" in ready.json()["problem"]
        r = c.post("/feedback", json={"decision_id": acked[0], "event": "regenerate"})
        assert r.status_code == 503, r.text
        r = c.post("/v1/chat/completions", json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 503 and r.json()["error"]["code"] == "log_unavailable"
    full_server.kill9()
    con = sqlite3.connect(full_server.db)
    logged = {r[0] for r in con.execute("SELECT decision_id FROM decisions")}
    assert set(acked) <= logged
