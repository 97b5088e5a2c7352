"""The decision and feedback log the service writes (SQLite, ``paths.feedback_db``)
and its conversion into training data.

The serving side creates the tables with `FEEDBACK_DDL` and `DECISIONS_DDL`
and appends one `feedback` row per user event:

- ``override``: the user switched from the routed model to ``chosen_model``;
- ``regenerate``: the user asked for another answer (``chosen_model`` is the
  model used for the new answer: the model shown before when it retried);
- ``rating``: the user rated the answer of ``chosen_model`` (``rating`` in 1..5;
  after an override, the model switched to).

`feedback_to_comparisons` turns overrides (and regenerations to another model)
into pairwise comparisons (the chosen model beats the model whose answer the
user left); `user_stats` aggregates per user and per organisation.
"""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pandas as pd

from autoroute.catalog import Catalog

EVENTS = ("override", "regenerate", "rating")

FEEDBACK_DDL = """
CREATE TABLE IF NOT EXISTS feedback (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    decision_id   TEXT NOT NULL,
    prompt        TEXT NOT NULL,
    routed_model  TEXT NOT NULL,
    chosen_model  TEXT NOT NULL,
    event         TEXT NOT NULL CHECK (event IN ('override', 'regenerate', 'rating')),
    rating        REAL CHECK (rating IS NULL OR (rating >= 1 AND rating <= 5)),
    user_id       TEXT,
    org_id        TEXT,
    ts            TEXT NOT NULL          -- ISO 8601 UTC
);
CREATE INDEX IF NOT EXISTS feedback_user ON feedback (user_id);
CREATE INDEX IF NOT EXISTS feedback_decision ON feedback (decision_id);
"""

DECISIONS_DDL = """
CREATE TABLE IF NOT EXISTS decisions (
    decision_id    TEXT PRIMARY KEY,
    ts             TEXT NOT NULL,        -- ISO 8601 UTC
    user_id        TEXT,
    org_id         TEXT,
    prompt         TEXT NOT NULL,
    selected_model TEXT NOT NULL,
    task           TEXT,
    tier           INTEGER,
    payload        TEXT,                 -- the full Decision as JSON
    requested      TEXT,                 -- what the client asked for: 'auto' or the model it picked (a lock)
    arm            TEXT                  -- the A/B arm that decided: 'champion' or 'challenger'
);
"""
#: columns added to `decisions` after its first release (added to older logs on open)
DECISIONS_ADDED = {"requested": "TEXT", "arm": "TEXT"}

# Decisions a challenger made in shadow for a served decision (scored and logged, not served).
SHADOW_DDL = """
CREATE TABLE IF NOT EXISTS shadow_decisions (
    decision_id    TEXT PRIMARY KEY,     -- the served decision
    ts             TEXT NOT NULL,
    arm            TEXT NOT NULL,        -- the arm that decided in shadow
    selected_model TEXT NOT NULL,
    task           TEXT,
    tier           INTEGER,
    estimated_cost REAL,
    latency_ms     REAL,
    payload        TEXT                  -- the shadow Decision as JSON
);
"""

FEEDBACK_COLUMNS = ["decision_id", "prompt", "routed_model", "chosen_model", "event", "rating", "user_id", "org_id",
                    "ts"]
COMPARISON_COLUMNS = ["prompt_id", "prompt", "model_a", "model_b", "winner", "preference", "source", "split",
                      "decision_id", "event", "user_id", "org_id", "ts"]
STATS_COLUMNS = ["scope", "key", "model", "decisions", "overrides_to", "overrides_from", "override_rate",
                 "regenerations", "ratings", "mean_rating"]


def create_tables(conn: sqlite3.Connection) -> None:
    conn.executescript(FEEDBACK_DDL + DECISIONS_DDL + SHADOW_DDL)


def read_feedback(db: Path) -> pd.DataFrame:
    """The feedback table, with the task of each event's decision (`task`, None when
    the decision is not in the log); an empty frame with the schema when the log does not exist."""
    if not Path(db).exists():
        return pd.DataFrame({c: pd.Series(dtype="float64" if c == "rating" else "object")
                             for c in FEEDBACK_COLUMNS + ["task"]})
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        cols = ", ".join(f"f.{c}" for c in FEEDBACK_COLUMNS)
        if "decisions" in tables:
            return pd.read_sql_query(f"SELECT {cols}, d.task FROM feedback f LEFT JOIN decisions d "
                                     "ON d.decision_id = f.decision_id ORDER BY f.ts, f.id", conn)
        return pd.read_sql_query(f"SELECT {cols}, NULL AS task FROM feedback f ORDER BY f.ts, f.id", conn)


def validate_feedback(df: pd.DataFrame, catalog: Catalog | None = None) -> pd.DataFrame:
    """Rows with a bad event or unknown model raise: the log is written by our service. An empty
    prompt is allowed: the service does not store prompts (`serving.log.store_prompts=false`) or
    blanked them after `serving.log.prompt_retention_days`; such rows count for Tier 4 only."""
    missing = [c for c in FEEDBACK_COLUMNS if c not in df]
    if missing:
        raise ValueError(f"feedback log: columns {missing} missing")
    bad = ~df["event"].isin(EVENTS)
    if bad.any():
        first = df[bad].index[0]
        raise ValueError(f"feedback log: {int(bad.sum())} malformed rows (first: row {first}, event "
                         f"{df.loc[first, 'event']!r})")
    if catalog is not None:
        for col in ("routed_model", "chosen_model"):
            unknown = sorted({m for m in df[col].dropna() if catalog.try_resolve(m) is None})
            if unknown:
                raise ValueError(f"feedback log: unknown models in {col}: {unknown}")
            df = df.assign(**{col: df[col].map(lambda m: catalog.resolve(m) if isinstance(m, str) else m)})
    return df


def shown_before(df: pd.DataFrame) -> pd.Series:
    """Per event, the model whose answer the user had in front of them: the model
    of the last earlier override or regeneration of the same decision, else the
    routed one (rows in log order: by ``ts``, then as given)."""
    order = df.sort_values("ts", kind="stable") if "ts" in df else df
    switched = order["chosen_model"].where(order["event"].isin(["override", "regenerate"]))
    prev = switched.groupby(order["decision_id"], sort=False).transform(lambda s: s.ffill().shift(1))
    return prev.fillna(order["routed_model"]).reindex(df.index)


def feedback_to_comparisons(df: pd.DataFrame) -> pd.DataFrame:
    """An override (or a regeneration with another model): the chosen model beats
    the model whose answer the user left (`shown_before`: the routed one, or the
    one an earlier override switched to). A retry of the same model is no comparison.

    model_a is the chosen model, so ``winner='model_a'`` and ``preference=1.0``."""
    from autoroute.data.dedup import prompt_id

    before = shown_before(df) if len(df) else df.get("routed_model", pd.Series(dtype="object"))
    keep = (df["event"].isin(["override", "regenerate"]) & (df["chosen_model"] != before)
            & df["prompt"].fillna("").str.strip().ne(""))
    moved, left = df[keep], before[keep]
    out = pd.DataFrame({
        "prompt_id": moved["prompt"].map(prompt_id), "prompt": moved["prompt"],
        "model_a": moved["chosen_model"], "model_b": left,
        "winner": "model_a", "preference": 1.0, "source": "feedback_" + moved["event"], "split": "train",
        "decision_id": moved["decision_id"], "event": moved["event"], "user_id": moved["user_id"],
        "org_id": moved["org_id"], "ts": moved["ts"]})
    if out.empty:
        return pd.DataFrame({c: pd.Series(dtype="float64" if c == "preference" else "object")
                             for c in COMPARISON_COLUMNS})
    return out[COMPARISON_COLUMNS].reset_index(drop=True)


def user_stats(df: pd.DataFrame) -> pd.DataFrame:
    """Per user and per org, per model: overrides to / from it, override rate, regenerations, mean rating.

    `decisions` counts distinct decisions of the key that routed to the model (seen in the log);
    `override_rate` = overrides away from the model / those decisions."""
    rows = []
    for scope, col in (("user", "user_id"), ("org", "org_id")):
        for key, part in df[df[col].notna()].groupby(col, sort=True):
            models = sorted(set(part["routed_model"]) | set(part["chosen_model"]))
            for model in models:
                routed = part[part["routed_model"] == model]
                over = part["event"] == "override"
                ratings = part[(part["event"] == "rating") & (part["chosen_model"] == model)]["rating"].dropna()
                decisions = routed["decision_id"].nunique()
                from_ = int((over & (part["routed_model"] == model) & (part["chosen_model"] != model)).sum())
                rows.append({
                    "scope": scope, "key": str(key), "model": model, "decisions": int(decisions),
                    "overrides_to": int((over & (part["chosen_model"] == model) & (part["routed_model"] != model)).sum()),
                    "overrides_from": from_,
                    "override_rate": from_ / decisions if decisions else 0.0,
                    "regenerations": int(((part["event"] == "regenerate") & (part["routed_model"] == model)).sum()),
                    "ratings": int(len(ratings)),
                    "mean_rating": float(ratings.mean()) if len(ratings) else float("nan"),
                })
    if not rows:
        return pd.DataFrame({c: pd.Series(dtype="object" if c in ("scope", "key", "model") else "float64")
                             for c in STATS_COLUMNS})
    return pd.DataFrame(rows, columns=STATS_COLUMNS)
