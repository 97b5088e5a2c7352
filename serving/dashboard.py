"""The analytics behind /dashboard, computed from the decision and feedback
log (SQLite, read-only): decisions per model, task and tier over time, the
override rate, the estimated spend against always using the most capable
model, decision latency percentiles, and the A/B arms side by side.

Definitions (the page shows them too):
- an *auto* decision is one the router made (`requested = 'auto'`); a
  decision for a model the client picked (a lock) is traffic, not routing;
- override rate = auto decisions with at least one override / auto decisions;
- spend = the served model's estimated cost of every auto decision plus the
  estimated cost of each override and of each regeneration with another
  model (a second call); baseline = the most capable offered model's (best
  quality prior averaged over tasks) estimated cost on the same auto
  decisions (same input and output tokens);
- latency = the routing decision's own latency (`latency_ms`), not the
  upstream model's.
"""
from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from autoroute.scoring import prior_quality
from autoroute.types import TASK_LABELS

#: bucket sizes the time series may use, smallest first (at most MAX_BUCKETS per chart)
BUCKETS = (("1min", 60), ("5min", 300), ("15min", 900), ("1h", 3600), ("6h", 21600), ("1D", 86400))
MAX_BUCKETS = 48
ROLLING = 6          # intervals in the rolling override rate
TIER_NAMES = {1: "1 context rules", 2: "2 fast signals", 3: "3 learned", 4: "4 your usage"}


def most_capable(catalog) -> str:
    """The offered model with the best quality prior averaged over tasks (ties: the dearer one)."""
    quality, _ = prior_quality(catalog, catalog.offered, None)
    return max(zip(catalog.offered, quality),
               key=lambda mq: (round(float(mq[1]), 6), catalog.cards[mq[0]].price.output or 0.0))[0]


def read_window(db: str | Path, since: str | None, org: str | None = None
                ) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """(decisions, feedback) since the ISO time `since` (all when None), of one org when
    `org` is given, and the orgs seen in the window; empty frames without a log."""
    if not Path(db).exists():
        return pd.DataFrame(), pd.DataFrame(), []
    con = sqlite3.connect(f"file:{Path(db)}?mode=ro", uri=True, timeout=10.0)
    try:
        cols = {r[1] for r in con.execute("PRAGMA table_info(decisions)")}
        extra = ", ".join(c if c in cols else f"NULL AS {c}" for c in ("requested", "arm"))
        conds = [("ts >= ?", since)] if since else []
        orgs = sorted(r[0] for r in con.execute(
            "SELECT DISTINCT org_id FROM decisions" + (" WHERE ts >= ?" if since else ""),
            (since,) if since else ()) if r[0] is not None)
        conds += [("org_id = ?", org)] if org is not None else []
        where = ("WHERE " + " AND ".join(c for c, _ in conds)) if conds else ""
        args = tuple(v for _, v in conds)
        decisions = pd.read_sql_query(
            "SELECT decision_id, ts, user_id, org_id, selected_model, task, tier, "
            "json_extract(payload, '$.estimated_cost') AS cost, json_extract(payload, '$.estimated_tokens') AS "
            f"tokens, json_extract(payload, '$.latency_ms') AS latency_ms, {extra} FROM decisions {where}",
            con, params=args)
        feedback = pd.read_sql_query(
            f"SELECT id, decision_id, routed_model, chosen_model, event, rating, user_id, org_id, ts FROM feedback "
            f"{where} ORDER BY id", con, params=args)
    finally:
        con.close()
    return decisions, feedback, orgs


def _bucket(span_s: float) -> tuple[str, int]:
    for name, secs in BUCKETS:
        if span_s / secs <= MAX_BUCKETS:
            return name, secs
    return BUCKETS[-1]


def _cost_of(catalog, model: str, tokens: float, out_tokens: float) -> float:
    card = catalog.cards.get(model)
    if card is None or tokens != tokens or out_tokens != out_tokens:
        return float("nan")
    c = card.estimate_cost(int(tokens), int(out_tokens))
    return float("nan") if c is None else c


def _out_tokens(catalog, model: str, cost: float, tokens: float) -> float:
    """The output tokens the router assumed, from the served model's price and estimated cost."""
    card = catalog.cards.get(model)
    if card is None or not card.price.known or not card.price.output or cost != cost or cost is None:
        return float("nan")
    return max(0.0, (cost * 1e6 - tokens * card.price.input) / card.price.output)


def _series(frame: pd.DataFrame, col: str, labels: list[str], order: list[str] | None = None) -> dict:
    counts = frame.groupby(["bucket", col]).size().unstack(fill_value=0) if len(frame) else pd.DataFrame()
    keys = order or list(counts.sum().sort_values(ascending=False).index) if len(counts) else []
    out = {}
    for k in keys:
        if k in counts:
            out[str(k)] = [int(counts[k].get(b, 0)) for b in labels]
    return out


def _pct(x: pd.Series, q: float) -> float | None:
    x = x.dropna()
    return round(float(np.percentile(x, q)), 3) if len(x) else None


def _rates(dec: pd.DataFrame, fb: pd.DataFrame) -> dict[str, Any]:
    mine = fb.merge(dec[["decision_id"]], on="decision_id", how="inner")
    n = len(dec)
    over = mine.loc[mine["event"] == "override", "decision_id"].nunique()
    regen = mine.loc[mine["event"] == "regenerate", "decision_id"].nunique()
    ratings = mine.loc[mine["event"] == "rating", "rating"].dropna()
    return {"decisions": n, "overrides": int(over), "override_rate": over / n if n else None,
            "regenerations": int(regen), "regenerate_rate": regen / n if n else None,
            "ratings": int(len(ratings)), "mean_rating": round(float(ratings.mean()), 3) if len(ratings) else None}


def build(db: str | Path, catalog, days: float | None = 7.0, now: datetime | None = None,
          org: str | None = None) -> dict[str, Any]:
    """Everything the dashboard draws, as JSON-ready data (of one org when `org` is given)."""
    now = now or datetime.now(timezone.utc)
    since = (now - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%S.000Z") if days else None
    dec, fb, orgs = read_window(db, since, org)
    top = most_capable(catalog)
    out: dict[str, Any] = {"generated_at": now.strftime("%Y-%m-%dT%H:%M:%SZ"), "days": days, "org": org, "orgs": orgs,
                           "baseline_model": top, "baseline_name": catalog.cards[top].display_name,
                           "names": {m: c.display_name for m, c in catalog.cards.items()},
                           "task_labels": dict(TASK_LABELS)}
    if dec.empty:
        return {**out, "empty": True, "totals": {"decisions": 0}, "arms": []}
    dec["requested"] = dec["requested"].fillna("auto")
    dec["arm"] = dec["arm"].fillna("champion")
    dec["time"] = pd.to_datetime(dec["ts"], utc=True, format="ISO8601")
    fb["time"] = pd.to_datetime(fb["ts"], utc=True, format="ISO8601") if len(fb) else pd.Series(dtype="datetime64[ns, UTC]")
    start, end = dec["time"].min(), max(dec["time"].max(), fb["time"].max() if len(fb) else dec["time"].max())
    name, secs = _bucket(max((end - start).total_seconds(), 1.0))
    dec["bucket"] = dec["time"].dt.floor(name)
    labels_t = pd.date_range(dec["bucket"].min(), end.floor(name), freq=name)
    labels = list(labels_t)
    out["buckets"] = [t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in labels_t]
    out["bucket"] = name
    auto = dec[dec["requested"] == "auto"].copy()
    dec["tier_name"] = dec["tier"].map(lambda t: TIER_NAMES.get(int(t), str(t)) if t == t else "?")
    out["by_model"] = _series(dec, "selected_model", labels)
    out["by_task"] = _series(dec, "task", labels)
    out["by_tier"] = _series(dec, "tier_name", labels, [v for v in TIER_NAMES.values() if v in set(dec["tier_name"])])
    out["by_requested"] = {"auto": [int(v) for v in auto.groupby("bucket").size().reindex(labels, fill_value=0)],
                           "picked by the user": [int(v) for v in dec[dec["requested"] != "auto"].groupby("bucket")
                                                  .size().reindex(labels, fill_value=0)]}

    # overrides and regenerations, by the bucket of the decision they are about
    fb_auto = fb.merge(auto[["decision_id", "bucket", "tokens", "cost", "selected_model", "arm"]], on="decision_id",
                       how="inner")
    n_auto = auto.groupby("bucket").size().reindex(labels, fill_value=0)

    def rate(event: str, window: int = 1) -> list[float | None]:
        k = fb_auto[fb_auto["event"] == event].groupby("bucket")["decision_id"].nunique().reindex(labels, fill_value=0)
        k, n = k.rolling(window, min_periods=1).sum(), n_auto.rolling(window, min_periods=1).sum()
        return [round(float(a / b), 4) if b else None for a, b in zip(k, n)]
    out["override_rate"] = {"override rate": rate("override"), "regenerate rate": rate("regenerate")}
    if len(labels) > ROLLING:
        out["override_rate"][f"override rate, last {ROLLING} intervals"] = rate("override", ROLLING)
    moved = fb_auto[(fb_auto["event"] == "override")]
    pairs = moved.groupby(["routed_model", "chosen_model"]).size().sort_values(ascending=False).head(10)
    out["override_pairs"] = [{"from": a, "to": b, "count": int(c)} for (a, b), c in pairs.items()]
    rated = fb[fb["event"] == "rating"].dropna(subset=["rating"])
    out["ratings"] = [{"model": m, "mean": round(float(g.mean()), 3), "count": int(len(g))}
                      for m, g in rated.groupby("chosen_model")["rating"]]

    # spend against always using the most capable model
    auto["out_tokens"] = [_out_tokens(catalog, m, c, t) for m, c, t in zip(auto["selected_model"], auto["cost"],
                                                                          auto["tokens"])]
    auto["baseline"] = [_cost_of(catalog, top, t, o) for t, o in zip(auto["tokens"], auto["out_tokens"])]
    extra = fb_auto[fb_auto["event"].isin(["override", "regenerate"]) &
                    (fb_auto["chosen_model"] != fb_auto["selected_model"])].merge(
        auto[["decision_id", "out_tokens"]], on="decision_id", how="left")
    extra["extra"] = [_cost_of(catalog, m, t, o) for m, t, o in zip(extra["chosen_model"], extra["tokens"],
                                                                    extra["out_tokens"])]
    priced = auto.dropna(subset=["cost", "baseline"])
    spend_b = priced.groupby("bucket")["cost"].sum().reindex(labels, fill_value=0.0) + \
        extra.dropna(subset=["extra"]).groupby("bucket")["extra"].sum().reindex(labels, fill_value=0.0)
    base_b = priced.groupby("bucket")["baseline"].sum().reindex(labels, fill_value=0.0)
    out["spend"] = {"autoroute (incl. overrides)": [round(float(v), 6) for v in spend_b.cumsum()],
                    f"always {catalog.cards[top].display_name}": [round(float(v), 6) for v in base_b.cumsum()]}
    spend, base = float(spend_b.sum()), float(base_b.sum())

    # decision latency percentiles per bucket
    lat = dec.dropna(subset=["latency_ms"]).groupby("bucket")["latency_ms"]
    out["latency"] = {f"p{q}": [None if v != v else round(float(v), 3)
                                for v in lat.quantile(q / 100).reindex(labels)] for q in (50, 90, 99)}

    # A/B arms side by side
    arms = []
    for arm, part in auto.groupby("arm", sort=True):
        r = _rates(part, fb)
        pa = priced[priced["arm"] == arm]
        ex = extra[extra["arm"] == arm]["extra"].dropna().sum()
        sp, bs = float(pa["cost"].sum() + ex), float(pa["baseline"].sum())
        lat_arm = dec.loc[dec["arm"] == arm, "latency_ms"]
        arms.append({"arm": str(arm), **r, "cost_per_decision": sp / len(pa) if len(pa) else None,
                     "savings": (1 - sp / bs) if bs else None, "p50_ms": _pct(lat_arm, 50),
                     "p99_ms": _pct(lat_arm, 99)})
    arms.sort(key=lambda a: (a["arm"] != "champion", a["arm"]))
    out["arms"] = arms
    totals = _rates(auto, fb)
    totals.update({"all_decisions": len(dec), "picked": int((dec["requested"] != "auto").sum()),
                   "spend": round(spend, 6), "baseline_spend": round(base, 6),
                   "savings": (1 - spend / base) if base else None,
                   "p50_ms": _pct(dec["latency_ms"], 50), "p90_ms": _pct(dec["latency_ms"], 90),
                   "p99_ms": _pct(dec["latency_ms"], 99)})
    out["totals"] = totals
    out["empty"] = False
    return out
