"""The durable decision and feedback log: SQLite in WAL mode.

Feedback is committed with ``synchronous=FULL`` before the caller gets its
2xx, so an acknowledged event survives ``kill -9`` (and a power cut). Decisions
are far more frequent; a writer thread group-commits them every few
milliseconds and before any feedback is written, so the training pipeline
always finds the decision a feedback row refers to."""
from __future__ import annotations

import json
import logging
import queue
import sqlite3
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

log = logging.getLogger("autoroute.serving.store")

from autoroute.feedback import DECISIONS_ADDED, DECISIONS_DDL, FEEDBACK_DDL, SHADOW_DDL  # the schema the training pipeline reads

FEEDBACK_COLUMNS = ("decision_id", "prompt", "routed_model", "chosen_model", "event", "rating",
                    "user_id", "org_id", "ts")
_STOP = object()


@dataclass
class _Shadow:
    ts: str
    served_id: str
    arm: str
    decision: Any


def iso_now(ts: float | None = None) -> str:
    """ISO 8601 UTC with milliseconds, as the log's `ts` columns hold it."""
    t = datetime.fromtimestamp(time.time() if ts is None else ts, tz=timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def _connect(path: Path, synchronous: str) -> sqlite3.Connection:
    con = sqlite3.connect(str(path), timeout=10.0, check_same_thread=False, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute(f"PRAGMA synchronous={synchronous}")
    con.execute("PRAGMA busy_timeout=10000")
    return con


def _script(ddl: str) -> str:
    return ddl if ddl.rstrip().endswith(";") else ddl + ";"


class LogStore:
    """Decision and feedback log at `path`."""

    def __init__(self, path: str | Path, flush_ms: float = 50.0, store_prompts: bool = True,
                 recent: int = 20000):
        self.path = Path(path)
        self.flush_s = max(flush_ms, 1.0) / 1000.0
        self.store_prompts = store_prompts
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._con = _connect(self.path, "FULL")
        self._con.executescript(_script(FEEDBACK_DDL) + _script(DECISIONS_DDL) + _script(SHADOW_DDL))
        self._con.execute("CREATE INDEX IF NOT EXISTS feedback_ts ON feedback(ts)")
        have = {r[1] for r in self._con.execute("PRAGMA table_info(decisions)")}
        for col, kind in DECISIONS_ADDED.items():       # a log written before these columns existed
            if col not in have:
                self._con.execute(f"ALTER TABLE decisions ADD COLUMN {col} {kind}")
        self._con.execute("CREATE INDEX IF NOT EXISTS decisions_ts ON decisions(ts)")
        self._lock = threading.Lock()
        self._recent: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._recent_max = recent
        self._recent_lock = threading.Lock()
        self._queue: queue.Queue = queue.Queue()
        self._writer = threading.Thread(target=self._write_loop, name="autoroute-log-writer", daemon=True)
        self._writer.start()
        self._feedback_rowid = 0
        self._feedback_rows: list[tuple] = []
        self.written_decisions = 0

    # ------------------------------------------------------------ decisions
    def log_decision(self, decision, user_id: str | None, org_id: str | None, prompt: str,
                     requested: str = "auto", arm: str = "champion") -> None:
        """Queue one decision (returns at once; the writer commits it). `requested`: 'auto' or the
        model the client picked; `arm`: the A/B arm that decided."""
        row = {"decision_id": decision.decision_id, "selected_model": decision.selected_model,
               "user_id": user_id, "org_id": org_id, "prompt": prompt if self.store_prompts else "",
               "task": decision.task, "tier": decision.tier, "requested": requested, "arm": arm}
        with self._recent_lock:
            self._recent[decision.decision_id] = row
            if len(self._recent) > self._recent_max:
                self._recent.popitem(last=False)
        self._queue.put((iso_now(), row, decision))

    def log_shadow(self, served_id: str, decision, arm: str = "challenger") -> None:
        """Queue the decision a shadow arm made for the served decision `served_id`."""
        self._queue.put(_Shadow(iso_now(), served_id, arm, decision))

    def _write_loop(self) -> None:
        con = _connect(self.path, "NORMAL")
        stop = False
        while not stop:
            try:
                first = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            items = [first]
            deadline = time.monotonic() + self.flush_s
            while len(items) < 5000:
                try:
                    items.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            if any(it is _STOP for it in items):
                stop = True
            rows = [it for it in items if isinstance(it, tuple)]
            shadows = [it for it in items if isinstance(it, _Shadow)]
            events = [it for it in items if isinstance(it, threading.Event)]
            if rows:
                try:
                    con.executemany(
                        "INSERT OR REPLACE INTO decisions (decision_id, ts, user_id, org_id, prompt, selected_model,"
                        " task, tier, payload, requested, arm) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                        [(r["decision_id"], ts, r["user_id"], r["org_id"], r["prompt"], r["selected_model"],
                          r["task"], r["tier"], d.model_dump_json(), r["requested"], r["arm"])
                         for ts, r, d in rows])
                    self.written_decisions += len(rows)
                except sqlite3.Error:  # never let the writer die; the decisions are lost, say so
                    log.exception("could not write %d decisions to %s", len(rows), self.path)
            if shadows:
                try:
                    con.executemany(
                        "INSERT OR REPLACE INTO shadow_decisions (decision_id, ts, arm, selected_model, task, tier,"
                        " estimated_cost, latency_ms, payload) VALUES (?,?,?,?,?,?,?,?,?)",
                        [(sh.served_id, sh.ts, sh.arm, sh.decision.selected_model, sh.decision.task, sh.decision.tier,
                          sh.decision.estimated_cost, sh.decision.latency_ms, sh.decision.model_dump_json())
                         for sh in shadows])
                except sqlite3.Error:
                    log.exception("could not write %d shadow decisions to %s", len(shadows), self.path)
            for ev in events:
                ev.set()
            for _ in items:
                self._queue.task_done()
        con.close()

    def flush(self, timeout: float = 10.0) -> bool:
        """Block until every decision queued so far is committed."""
        ev = threading.Event()
        self._queue.put(ev)
        return ev.wait(timeout)

    def decision(self, decision_id: str) -> dict[str, Any] | None:
        with self._recent_lock:
            row = self._recent.get(decision_id)
        if row is not None:
            return row
        with self._lock:
            cur = self._con.execute(
                "SELECT decision_id, selected_model, user_id, org_id, prompt, task, tier, arm FROM decisions "
                "WHERE decision_id = ?", (decision_id,))
            hit = cur.fetchone()
        if hit is None:
            return None
        return dict(zip(("decision_id", "selected_model", "user_id", "org_id", "prompt", "task", "tier", "arm"), hit))

    # ------------------------------------------------------------- feedback
    def add_feedback(self, rows: Iterable[dict[str, Any]]) -> int:
        """Commit feedback rows durably (synchronous=FULL); returns the count."""
        rows = list(rows)
        values = [tuple(r.get(c) for c in FEEDBACK_COLUMNS) for r in rows]
        self.flush()
        with self._lock:
            self._con.execute("BEGIN IMMEDIATE")
            try:
                self._con.executemany(
                    f"INSERT INTO feedback ({', '.join(FEEDBACK_COLUMNS)}) VALUES ({', '.join('?' * len(FEEDBACK_COLUMNS))})",
                    values)
                self._con.execute("COMMIT")
            except BaseException:
                self._con.execute("ROLLBACK")
                raise
        return len(values)

    def last_switch(self, decision_id: str) -> str | None:
        """The model of the last override or regeneration of a decision (None: none yet)."""
        with self._lock:
            hit = self._con.execute(
                "SELECT chosen_model FROM feedback WHERE decision_id = ? AND event IN ('override', 'regenerate') "
                "ORDER BY id DESC LIMIT 1", (decision_id,)).fetchone()
        return hit[0] if hit else None

    def feedback_frame(self) -> pd.DataFrame:
        """Every feedback row with its decision's task (read incrementally; rows from
        other workers included)."""
        cols = ", ".join(f"f.{c}" for c in FEEDBACK_COLUMNS)
        with self._lock:
            cur = self._con.execute(
                f"SELECT f.rowid, {cols}, d.task FROM feedback f LEFT JOIN decisions d "
                "ON d.decision_id = f.decision_id WHERE f.rowid > ? ORDER BY f.rowid", (self._feedback_rowid,))
            new = cur.fetchall()
        if new:
            self._feedback_rowid = new[-1][0]
            self._feedback_rows.extend(r[1:] for r in new)
        return pd.DataFrame(self._feedback_rows, columns=[*FEEDBACK_COLUMNS, "task"])

    def feedback_count(self) -> int:
        with self._lock:
            return self._con.execute("SELECT COUNT(*) FROM feedback").fetchone()[0]

    def ping(self) -> bool:
        try:
            with self._lock:
                self._con.execute("SELECT 1").fetchone()
            return self._writer.is_alive()
        except sqlite3.Error:
            return False

    def close(self) -> None:
        self._queue.put(_STOP)
        self._writer.join(timeout=10)
        with self._lock:
            self._con.close()


def read_log(path: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(decisions, feedback) frames for the training pipeline; payload parsed from JSON."""
    con = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True)
    try:
        decisions = pd.read_sql_query("SELECT * FROM decisions ORDER BY ts", con)
        feedback = pd.read_sql_query("SELECT * FROM feedback ORDER BY ts", con)
    finally:
        con.close()
    if len(decisions):
        decisions["payload"] = decisions["payload"].map(lambda s: json.loads(s) if s else None)
    return decisions, feedback
