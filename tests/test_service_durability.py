"""An acknowledged feedback is on disk: SIGKILL the server right after the
2xx, restart it, and every acknowledged event is in the log. And a service
that must not run without its model refuses to start, saying why."""
from __future__ import annotations

import sqlite3
import threading

import httpx

from serving_support import KEYS, serving_overrides, start_server


def test_sigkill_after_ack_loses_no_feedback(tmp_path):
    overrides = serving_overrides(tmp_path, keys=True)
    server = start_server(tmp_path, overrides)
    acked: list[str] = []
    try:
        with httpx.Client(base_url=server.url, timeout=30.0, trust_env=False,
                          headers={"x-api-key": KEYS["acme"]}) as c:
            ids = [c.post("/route", json={"messages": [{"role": "user", "content": f"question {i}?"}],
                                          "user_id": "u-kill"}).json()["decision_id"] for i in range(20)]
            lock = threading.Lock()

            def send(chunk):
                with httpx.Client(base_url=server.url, timeout=30.0, trust_env=False,
                                  headers={"x-api-key": KEYS["acme"]}) as cc:
                    for did in chunk:
                        r = cc.post("/feedback", json={"decision_id": did, "event": "rating", "rating": 4})
                        if r.status_code == 200:
                            with lock:
                                acked.append(did)

            threads = [threading.Thread(target=send, args=(ids[k::4],)) for k in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        server.kill9()                              # right after the last acknowledgement
    finally:
        server.stop()
    assert len(acked) == 20
    restarted = start_server(tmp_path, overrides)
    try:
        health = httpx.get(restarted.url + "/readyz", trust_env=False).json()
        assert health["tier4"]["feedback_events"] == 20
    finally:
        restarted.stop()
    con = sqlite3.connect(server.db)
    logged = {r[0] for r in con.execute("SELECT decision_id FROM feedback WHERE event='rating'")}
    assert set(acked) <= logged
    assert con.execute("SELECT COUNT(*) FROM decisions WHERE decision_id IN (%s)" % ",".join("?" * 20),
                       acked).fetchone()[0] == 20


def test_refuse_mode_exits_with_a_clear_message(tmp_path):
    overrides = serving_overrides(tmp_path, keys=False, extra=["serving.on_model_error=refuse"])
    server = start_server(tmp_path, overrides, wait=False)
    try:
        server.proc.wait(timeout=120)
    finally:
        server.stop()
    assert server.proc.returncode != 0
    assert "autoroute cannot start" in server.log() and "refusing to start" in server.log()
