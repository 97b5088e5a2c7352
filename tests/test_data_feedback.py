"""The feedback log the service writes -> comparisons and per-user statistics."""
from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from autoroute.catalog import Catalog
from autoroute.config import load_config
from autoroute.feedback import (DECISIONS_DDL, FEEDBACK_COLUMNS, FEEDBACK_DDL, feedback_to_comparisons, read_feedback,
                                user_stats, validate_feedback)

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def catalog():
    return Catalog.from_config(load_config().catalog)


@pytest.fixture()
def log_db(tmp_path):
    db = tmp_path / "decisions.sqlite"
    rows = [json.loads(line) for line in (FIXTURES / "feedback_log.jsonl").read_text().splitlines()]
    with sqlite3.connect(db) as conn:
        conn.executescript(FEEDBACK_DDL + DECISIONS_DDL)
        conn.executemany(f"INSERT INTO feedback ({', '.join(FEEDBACK_COLUMNS)}) VALUES "
                         f"({', '.join('?' * len(FEEDBACK_COLUMNS))})",
                         [[r[c] for c in FEEDBACK_COLUMNS] for r in rows])
    return db


def test_fixture_log_becomes_expected_comparisons(log_db, catalog):
    log = validate_feedback(read_feedback(log_db), catalog)
    got = feedback_to_comparisons(log)
    expected = pd.DataFrame([json.loads(x) for x in (FIXTURES / "feedback_expected_comparisons.jsonl")
                             .read_text().splitlines()])
    pd.testing.assert_frame_equal(got[expected.columns].reset_index(drop=True), expected)
    assert (got["split"] == "train").all() and got["prompt_id"].str.len().eq(16).all()


def test_user_and_org_stats(log_db, catalog):
    stats = user_stats(validate_feedback(read_feedback(log_db), catalog)).set_index(["scope", "key", "model"])
    u3 = stats.loc[("user", "u3", "gpt-4o-mini")]
    assert (u3["decisions"], u3["overrides_from"], u3["ratings"]) == (3, 1, 2)
    assert u3["override_rate"] == pytest.approx(1 / 3) and u3["mean_rating"] == pytest.approx(3.0)
    assert stats.loc[("user", "u3", "claude-opus-4.5"), "overrides_to"] == 1
    assert stats.loc[("user", "u2", "deepseek-v3"), "regenerations"] == 1
    assert stats.loc[("user", "u2", "gpt-5.2"), "mean_rating"] == 5.0
    acme = stats.loc[("org", "acme", "gpt-4o-mini")]
    assert (acme["overrides_from"], acme["decisions"]) == (1, 1)
    assert math.isnan(stats.loc[("org", "acme", "claude-sonnet-4"), "mean_rating"])


def test_missing_log_gives_empty_tables_with_schema(tmp_path):
    log = read_feedback(tmp_path / "absent.sqlite")
    assert list(log.columns) == FEEDBACK_COLUMNS + ["task"] and log.empty
    comps, stats = feedback_to_comparisons(log), user_stats(log)
    assert comps.empty and {"model_a", "model_b", "winner", "preference"} <= set(comps.columns)
    assert stats.empty and {"override_rate", "mean_rating"} <= set(stats.columns)


def test_ddl_rejects_unknown_event(tmp_path):
    with sqlite3.connect(tmp_path / "x.sqlite") as conn:
        conn.executescript(FEEDBACK_DDL)
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute("INSERT INTO feedback (decision_id, prompt, routed_model, chosen_model, event, ts) "
                         "VALUES ('d', 'p', 'a', 'b', 'like', 't')")


def test_unknown_model_in_log_is_an_error(log_db, catalog):
    log = read_feedback(log_db)
    log.loc[0, "chosen_model"] = "no-such-model"
    with pytest.raises(ValueError, match="no-such-model"):
        validate_feedback(log, catalog)


def test_comparisons_follow_the_answer_the_user_left():
    """Override sonnet -> opus, regenerate with gpt-5.2, retry gpt-5.2, then override to gpt-4o:
    each switch beats the model shown just before it; the retry is no comparison."""
    events = [("override", "claude-opus-4.5"), ("rating", "claude-opus-4.5"), ("regenerate", "gpt-5.2"),
              ("regenerate", "gpt-5.2"), ("override", "gpt-4o")]
    df = pd.DataFrame([{"decision_id": "d", "prompt": "p", "routed_model": "claude-sonnet-4", "chosen_model": c,
                        "event": e, "rating": 5.0 if e == "rating" else None, "user_id": "u", "org_id": None,
                        "ts": f"2026-01-01T00:00:0{i}.000Z"} for i, (e, c) in enumerate(events)])
    got = feedback_to_comparisons(df.iloc[::-1])                    # order comes from ts, not from the rows
    assert sorted(zip(got["model_a"], got["model_b"])) == [
        ("claude-opus-4.5", "claude-sonnet-4"), ("gpt-4o", "gpt-5.2"), ("gpt-5.2", "claude-opus-4.5")]
