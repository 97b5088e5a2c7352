"""The champion / challenger comparison from the service's log: the numbers a
human looks at before promoting a challenger (nothing here promotes).

    python -m training.compare_arms [paths.feedback_db=<log>]

Per A/B arm (the `arm` column of the log's decisions): users, decisions,
override / regenerate / rating rates, mean rating, estimated cost per
decision, decision latency p50 / p95; the difference in override rate with a
95% interval; and, for a challenger run in shadow (table `shadow_decisions`),
how often its decision matched what was served and what the user finally
used (the routed model, or the one they switched to). Printed, and logged as
an MLflow run (experiment `autoroute-ab`) with a bar chart.
"""
from __future__ import annotations

import json
import math
import sqlite3
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ARMS = ("champion", "challenger")


def _read(db: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    if not Path(db).exists():
        raise SystemExit(f"no decision log at {db}: point paths.feedback_db at the service's log")
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        cols = {r[1] for r in con.execute("PRAGMA table_info(decisions)")}
        arm = "COALESCE(arm, 'champion')" if "arm" in cols else "'champion'"
        dec = pd.read_sql_query(f"SELECT decision_id, user_id, selected_model, {arm} AS arm, "
                                "json_extract(payload, '$.estimated_cost') AS cost, "
                                "json_extract(payload, '$.latency_ms') AS latency_ms FROM decisions", con)
        fb = pd.read_sql_query("SELECT decision_id, event, chosen_model, routed_model, rating FROM feedback", con)
        sh = pd.read_sql_query("SELECT decision_id, arm, selected_model, estimated_cost, latency_ms "
                               "FROM shadow_decisions", con) if "shadow_decisions" in tables else pd.DataFrame()
    finally:
        con.close()
    return dec, fb, sh


def _rate_ci(k1: int, n1: int, k2: int, n2: int) -> tuple[float, float, float]:
    """p2 - p1 with a normal-approximation 95% interval."""
    p1, p2 = k1 / max(n1, 1), k2 / max(n2, 1)
    se = math.sqrt(p1 * (1 - p1) / max(n1, 1) + p2 * (1 - p2) / max(n2, 1))
    d = p2 - p1
    return d, d - 1.96 * se, d + 1.96 * se


def report(db: str | Path, print_table: bool = False) -> dict:
    dec, fb, sh = _read(Path(db))
    over = set(fb.loc[fb["event"] == "override", "decision_id"])
    regen = set(fb.loc[fb["event"] == "regenerate", "decision_id"])
    ratings = fb[fb["event"] == "rating"]
    arms = {}
    for arm in ARMS:
        d = dec[dec["arm"] == arm]
        if d.empty:
            continue
        ids = set(d["decision_id"])
        r = ratings[ratings["decision_id"].isin(ids)]["rating"].dropna()
        lat = d["latency_ms"].dropna().to_numpy(dtype=float)
        arms[arm] = {"users": int(d["user_id"].nunique()), "decisions": int(len(d)),
                     "overrides": int(len(ids & over)), "override_rate": len(ids & over) / len(d),
                     "regenerate_rate": len(ids & regen) / len(d), "rating_rate": len(r) / len(d),
                     "mean_rating": float(r.mean()) if len(r) else None,
                     "cost_per_decision": float(d["cost"].dropna().mean()) if d["cost"].notna().any() else None,
                     "latency_p50_ms": float(np.percentile(lat, 50)) if len(lat) else None,
                     "latency_p95_ms": float(np.percentile(lat, 95)) if len(lat) else None}
    out: dict = {"log": str(db), "arms": arms, "difference": None, "shadow": None}
    if len(arms) == 2:
        a, b = arms["champion"], arms["challenger"]
        diff, lo, hi = _rate_ci(a["overrides"], a["decisions"], b["overrides"], b["decisions"])
        out["difference"] = {"override_rate_challenger_minus_champion": diff, "ci95": [lo, hi],
                             "challenger_better": hi < 0}
    if len(sh):
        final = dec.set_index("decision_id")["selected_model"].to_dict()
        final.update(fb[fb["event"] == "override"].drop_duplicates("decision_id", keep="last")
                     .set_index("decision_id")["chosen_model"].to_dict())
        served = dec.set_index("decision_id")["selected_model"]
        s = sh[sh["decision_id"].isin(served.index)]
        fin = s["decision_id"].map(final)
        out["shadow"] = {"decisions": int(len(s)),
                         "agrees_with_served": float((s["selected_model"].to_numpy() ==
                                                      s["decision_id"].map(served).to_numpy()).mean()),
                         "challenger_matches_final_choice": float((s["selected_model"] == fin).mean()),
                         "champion_matches_final_choice": float((s["decision_id"].map(served) == fin).mean()),
                         "cost_per_decision": float(s["estimated_cost"].dropna().mean())
                         if s["estimated_cost"].notna().any() else None,
                         "latency_p50_ms": float(s["latency_ms"].median())}
    if print_table:
        print(format_report(out))
    return out


def format_report(r: dict) -> str:
    lines = [f"A/B report from {r['log']}"]
    keys = ["users", "decisions", "override_rate", "regenerate_rate", "rating_rate", "mean_rating",
            "cost_per_decision", "latency_p50_ms", "latency_p95_ms"]
    arms = r["arms"]
    lines.append(f"  {'':20s}" + "".join(f"{a:>14s}" for a in arms))
    for k in keys:
        vals = [arms[a][k] for a in arms]
        fmt = [("-" if v is None else f"{v:.1%}" if k.endswith("rate") else f"{v:.6f}" if k.startswith("cost")
                else f"{v:.2f}" if isinstance(v, float) else str(v)) for v in vals]
        lines.append(f"  {k:20s}" + "".join(f"{f:>14s}" for f in fmt))
    if r["difference"]:
        d = r["difference"]
        lines.append(f"  override rate, challenger - champion: {d['override_rate_challenger_minus_champion']:+.1%} "
                     f"(95% CI {d['ci95'][0]:+.1%} .. {d['ci95'][1]:+.1%})")
    if r["shadow"]:
        s = r["shadow"]
        lines.append(f"  shadow: {s['decisions']} challenger decisions; same model as served "
                     f"{s['agrees_with_served']:.1%}; matches the user's final choice {s['challenger_matches_final_choice']:.1%} "
                     f"(champion {s['champion_matches_final_choice']:.1%})")
    lines.append("  promotion is a human decision: move the MLflow alias `champion` to the challenger's version "
                 "and export it as autoroute-router")
    return "\n".join(lines)


def log_to_mlflow(r: dict, tracking_uri: str, out_dir: Path) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment("autoroute-ab")
    out_dir.mkdir(parents=True, exist_ok=True)
    with mlflow.start_run(run_name="ab-report") as run:
        mlflow.log_param("log", r["log"])
        for arm, m in r["arms"].items():
            mlflow.log_metrics({f"{arm}/{k}": float(v) for k, v in m.items() if v is not None})
        if r["shadow"]:
            mlflow.log_metrics({f"shadow/{k}": float(v) for k, v in r["shadow"].items() if v is not None})
        if r["arms"]:
            fig, axes = plt.subplots(1, 3, figsize=(9, 3))
            for ax, k in zip(axes, ("override_rate", "regenerate_rate", "cost_per_decision")):
                ax.bar(list(r["arms"]), [r["arms"][a][k] or 0.0 for a in r["arms"]], color=["#888", "#36c"])
                ax.set_title(k.replace("_", " "))
            path = out_dir / "ab_report.png"
            fig.savefig(path, dpi=120, bbox_inches="tight")
            plt.close(fig)
            mlflow.log_artifact(str(path))
        mlflow.log_text(json.dumps(r, indent=1, default=float), "ab_report.json")
        mlflow.log_text(format_report(r), "ab_report.txt")
        return run.info.run_id


def main(argv: list[str] | None = None) -> dict:
    from autoroute.config import load_config

    cfg = load_config(list(sys.argv[1:] if argv is None else argv))
    r = report(Path(cfg.paths.feedback_db), print_table=True)
    r["mlflow_run_id"] = log_to_mlflow(r, str(cfg.tracking.tracking_uri), Path(cfg.paths.artifacts) / "ab_report")
    print(f"logged to MLflow run {r['mlflow_run_id']} (experiment autoroute-ab)")
    return r


if __name__ == "__main__":
    main()
