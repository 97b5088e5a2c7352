"""The durable decision and feedback log: SQLite in WAL mode.

What is written is safe to keep: every prompt passes `autoroute.signals.redact`
before it reaches the writer (no card number, e-mail, key or phone number in
the database or its WAL), and prompts older than `prompt_retention_days` are
blanked.

Durability (`serving.log.durability`):
- ``commit_before_answer`` (default): a decision is answered only after the
  writer thread has committed it (concurrent decisions share one commit);
  an answered decision survives ``kill -9``.
- ``group_commit``: decisions are answered at once and committed within
  ``decision_flush_ms``; a crash in that window loses them.
Feedback is always committed with ``synchronous=FULL`` before its 2xx, and
the decisions it refers to are committed first.

When the log cannot be written (unwritable file, disk full, over ``max_mb``)
the store turns unhealthy: `healthy` is False, the service answers writes
with 503 and `/readyz` with 503, and rows it already holds stay in memory and
are retried until they are written; nothing acknowledged is dropped."""
from __future__ import annotations

import concurrent.futures
import json
import logging
import queue
import sqlite3
import threading
import time
from dataclasses import dataclass
from collections import OrderedDict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from autoroute.feedback import DECISIONS_ADDED, DECISIONS_DDL, FEEDBACK_DDL, SHADOW_DDL  # the schema the training pipeline reads
from autoroute.signals import redact

log = logging.getLogger("autoroute.serving.store")

FEEDBACK_COLUMNS = ("decision_id", "prompt", "routed_model", "chosen_model", "event", "rating",
                    "user_id", "org_id", "ts")
DURABILITY = ("commit_before_answer", "group_commit")
_STOP = object()


@dataclass
class _Shadow:
    ts: str
    served_id: str
    arm: str
    decision: Any


class LogUnavailable(RuntimeError):
    """The log cannot take writes now (the service answers 503)."""


def iso_now(ts: float | None = None) -> str:
    """ISO 8601 UTC with milliseconds, as the log's `ts` columns hold it."""
    t = datetime.fromtimestamp(time.time() if ts is None else ts, tz=timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def _rollback(con: sqlite3.Connection) -> None:
    if con.in_transaction:          # SQLite may have rolled back on its own (disk full)
        con.execute("ROLLBACK")


def _script(ddl: str) -> str:
    return ddl if ddl.rstrip().endswith(";") else ddl + ";"


class LogStore:
    """Decision and feedback log at `path`."""

    def __init__(self, path: str | Path, flush_ms: float = 50.0, store_prompts: bool = True, *,
                 durability: str = "commit_before_answer", prompt_retention_days: float | None = None,
                 max_mb: float | None = None, retry_s: float = 1.0, recent: int = 20000):
        if durability not in DURABILITY:
            raise ValueError(f"serving.log.durability must be one of {DURABILITY}, not {durability!r}")
        self.path = Path(path)
        self.flush_s = max(flush_ms, 1.0) / 1000.0
        self.store_prompts = store_prompts
        self.durability = durability
        self.retention_s = None if prompt_retention_days is None else float(prompt_retention_days) * 86400.0
        self.max_mb = max_mb
        self.retry_s = retry_s
        self.error: str | None = None
        self._con: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._recent: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._recent_max = recent
        self._recent_lock = threading.Lock()
        self._queue: queue.Queue = queue.Queue()
        self._feedback_rowid = 0
        self._feedback_rows: list[tuple] = []
        self.written_decisions = 0
        try:
            self._con = self._connect("FULL")
        except (sqlite3.Error, OSError) as err:
            self._fail(err, "open")
        self._writer = threading.Thread(target=self._write_loop, name="autoroute-log-writer", daemon=True)
        self._writer.start()

    # ----------------------------------------------------------- plumbing
    def _connect(self, synchronous: str) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(str(self.path), timeout=10.0, check_same_thread=False, isolation_level=None)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute(f"PRAGMA synchronous={synchronous}")
        con.execute("PRAGMA busy_timeout=10000")
        con.execute("PRAGMA secure_delete=ON")    # blanked (expired) prompts leave no bytes behind
        if self.max_mb is not None:
            page = con.execute("PRAGMA page_size").fetchone()[0]
            con.execute(f"PRAGMA max_page_count={max(int(self.max_mb * 1024 * 1024 / page), 8)}")
        con.executescript(_script(FEEDBACK_DDL) + _script(DECISIONS_DDL) + _script(SHADOW_DDL))
        have = {r[1] for r in con.execute("PRAGMA table_info(decisions)")}
        for col, kind in DECISIONS_ADDED.items():       # a log written before these columns existed
            if col not in have:
                con.execute(f"ALTER TABLE decisions ADD COLUMN {col} {kind}")
        con.executescript("CREATE INDEX IF NOT EXISTS feedback_ts ON feedback(ts);"
                          "CREATE INDEX IF NOT EXISTS decisions_ts ON decisions(ts);")
        return con

    def _fail(self, err: BaseException, what: str) -> None:
        msg = f"cannot {what} the log {self.path}: {type(err).__name__}: {err}"
        if self.error != msg:
            log.error(msg)
        self.error = msg

    @property
    def healthy(self) -> bool:
        """True when the log takes writes (the last write or probe succeeded)."""
        return self.error is None and self._con is not None and self._writer.is_alive()

    def ping(self) -> bool:
        return self.healthy

    def check_writable(self) -> None:
        if not self.healthy:
            raise LogUnavailable(self.error or "the decision log is not available")

    # ------------------------------------------------------------ decisions
    def log_decision(self, decision, user_id: str | None, org_id: str | None, prompt: str,
                     requested: str = "auto", arm: str = "champion") -> concurrent.futures.Future:
        """Queue one decision; the future resolves once it is committed (LogUnavailable
        when the log cannot be written; the row is kept and retried). `requested`: 'auto'
        or the model the client picked; `arm`: the A/B arm that decided."""
        row = {"decision_id": decision.decision_id, "selected_model": decision.selected_model,
               "user_id": user_id, "org_id": org_id, "prompt": redact(prompt) if self.store_prompts else "",
               "task": decision.task, "tier": decision.tier, "requested": requested, "arm": arm}
        with self._recent_lock:
            self._recent[decision.decision_id] = row
            if len(self._recent) > self._recent_max:
                self._recent.popitem(last=False)
        done: concurrent.futures.Future = concurrent.futures.Future()
        self._queue.put((iso_now(), row, decision.model_dump_json(), done))
        return done

    def log_shadow(self, served_id: str, decision, arm: str = "challenger") -> None:
        """Queue the decision a shadow arm made for the served decision `served_id` (best effort)."""
        self._queue.put(_Shadow(iso_now(), served_id, arm, decision))

    def _write_loop(self) -> None:
        con = None
        pending: list[tuple] = []              # rows not yet committed (kept across failures)
        waiters: list[threading.Event] = []
        next_purge = 0.0
        stop = False
        while not stop:
            wait = self.retry_s if (pending or self.error) else 0.5
            try:
                items = [self._queue.get(timeout=wait)]
            except queue.Empty:
                items = []
            if items and self.durability == "group_commit":
                deadline = time.monotonic() + self.flush_s
                while len(items) < 5000:
                    try:
                        items.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
                    except queue.Empty:
                        break
            while len(items) < 5000:            # whatever else is already waiting joins this commit
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = any(it is _STOP for it in items)
            pending += [it for it in items if isinstance(it, tuple)]
            shadows = [it for it in items if isinstance(it, _Shadow)]
            waiters += [it for it in items if isinstance(it, threading.Event)]
            try:
                if con is None:
                    con = self._connect("NORMAL")
                if pending:
                    con.execute("BEGIN IMMEDIATE")
                    try:
                        con.executemany(
                            "INSERT OR REPLACE INTO decisions (decision_id, ts, user_id, org_id, prompt, "
                            "selected_model, task, tier, payload, requested, arm) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                            [(r["decision_id"], ts, r["user_id"], r["org_id"], r["prompt"], r["selected_model"],
                              r["task"], r["tier"], payload, r["requested"], r["arm"])
                             for ts, r, payload, _ in pending])
                        con.execute("COMMIT")
                    except BaseException:
                        _rollback(con)
                        raise
                    self.written_decisions += len(pending)
                    for *_, done in pending:
                        if not done.done():
                            done.set_result(True)
                    pending = []
                elif self.error:
                    self._probe(con)
                if shadows:     # best effort: a shadow decision is never worth a 503
                    try:
                        con.executemany(
                            "INSERT OR REPLACE INTO shadow_decisions (decision_id, ts, arm, selected_model, task, "
                            "tier, estimated_cost, latency_ms, payload) VALUES (?,?,?,?,?,?,?,?,?)",
                            [(sh.served_id, sh.ts, sh.arm, sh.decision.selected_model, sh.decision.task,
                              sh.decision.tier, sh.decision.estimated_cost, sh.decision.latency_ms,
                              sh.decision.model_dump_json()) for sh in shadows])
                    except sqlite3.Error:
                        log.exception("could not write %d shadow decisions", len(shadows))
                if time.monotonic() >= next_purge:
                    self._purge(con)
                    next_purge = time.monotonic() + 3600.0
                if self._con is None:
                    self._con = self._connect("FULL")
                self.error = None
            except (sqlite3.Error, OSError) as err:
                self._fail(err, "write")
                for *_, done in pending:          # the caller's answer is 503; the row is still retried
                    if not done.done():
                        done.set_exception(LogUnavailable(self.error))
            if not pending:
                for ev in waiters:
                    ev.set()
                waiters = []
            for _ in items:
                self._queue.task_done()
        for ev in waiters:
            ev.set()
        if con is not None:
            con.close()

    def _probe(self, con: sqlite3.Connection) -> None:
        """After a failure with nothing left to write: can the log grow again? (rolled back)"""
        con.execute("BEGIN IMMEDIATE")
        try:
            con.execute("INSERT INTO decisions (decision_id, ts, prompt, selected_model, payload) "
                        "VALUES ('_probe', '', '', '', zeroblob(8192))")
        finally:
            _rollback(con)

    def _purge(self, con: sqlite3.Connection) -> None:
        """Blank the prompts older than the retention period (decisions and feedback)."""
        if self.retention_s is None:
            return
        cutoff = iso_now(time.time() - self.retention_s)
        con.execute("BEGIN IMMEDIATE")
        try:
            n = con.execute("UPDATE decisions SET prompt = '' WHERE ts < ? AND prompt != ''", (cutoff,)).rowcount
            n += con.execute("UPDATE feedback SET prompt = '' WHERE ts < ? AND prompt != ''", (cutoff,)).rowcount
            con.execute("COMMIT")
        except BaseException:
            _rollback(con)
            raise
        if n:       # and out of the WAL: its old page images go with a truncating checkpoint
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            log.info("blanked %d prompts older than %s (prompt_retention_days)", n, cutoff)

    def flush(self, timeout: float = 10.0) -> bool:
        """Block until every decision queued so far is committed (False: not within `timeout`,
        e.g. while the log cannot be written)."""
        ev = threading.Event()
        self._queue.put(ev)
        return ev.wait(timeout) and self.healthy

    def decision(self, decision_id: str) -> dict[str, Any] | None:
        with self._recent_lock:
            row = self._recent.get(decision_id)
        if row is not None:
            return row
        if self._con is None:
            return None
        with self._lock:
            cur = self._con.execute(
                "SELECT decision_id, selected_model, user_id, org_id, prompt, task, tier, arm FROM decisions "
                "WHERE decision_id = ?", (decision_id,))
            hit = cur.fetchone()
        if hit is None:
            return None
        return dict(zip(("decision_id", "selected_model", "user_id", "org_id", "prompt", "task", "tier", "arm"), hit))

    def last_switch(self, decision_id: str) -> str | None:
        """The model of the last override or regeneration of a decision (None: none yet)."""
        with self._lock:
            hit = self._con.execute(
                "SELECT chosen_model FROM feedback WHERE decision_id = ? AND event IN ('override', 'regenerate') "
                "ORDER BY id DESC LIMIT 1", (decision_id,)).fetchone()
        return hit[0] if hit else None

    # ------------------------------------------------------------- feedback
    def add_feedback(self, rows: Iterable[dict[str, Any]]) -> int:
        """Commit feedback rows durably (synchronous=FULL); returns the count.
        LogUnavailable when the log cannot be written (nothing was acknowledged)."""
        rows = list(rows)
        values = [tuple(redact(r[c]) if c == "prompt" and r.get(c) else r.get(c) for c in FEEDBACK_COLUMNS)
                  for r in rows]
        if not self.flush():
            raise LogUnavailable(self.error or "the decision log did not commit in time")
        with self._lock:
            try:
                self._con.execute("BEGIN IMMEDIATE")
                try:
                    self._con.executemany(
                        f"INSERT INTO feedback ({', '.join(FEEDBACK_COLUMNS)}) "
                        f"VALUES ({', '.join('?' * len(FEEDBACK_COLUMNS))})", values)
                    self._con.execute("COMMIT")
                except BaseException:
                    _rollback(self._con)
                    raise
            except sqlite3.Error as err:
                self._fail(err, "write")
                raise LogUnavailable(self.error) from None
        return len(values)

    def feedback_frame(self) -> pd.DataFrame:
        """Every feedback row with its decision's task (read incrementally; rows from
        other workers included)."""
        if self._con is None:
            raise LogUnavailable(self.error or "the decision log is not open")
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

    def close(self) -> None:
        self._queue.put(_STOP)
        self._writer.join(timeout=10)
        with self._lock:
            if self._con is not None:
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
