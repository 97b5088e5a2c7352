"""Tier 4: per-user and per-organisation adjustments fit from the feedback
log (overrides, regenerations, ratings)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from autoroute.scoring import StaticUserPreference

FEEDBACK_COLUMNS = ("decision_id", "prompt", "routed_model", "chosen_model", "event", "rating",
                    "user_id", "org_id", "ts")


@dataclass
class UserPreferenceSettings:
    min_events: int = 3            # fewer events than this: no adjustment yet
    override_boost: float = 0.2    # full boost for a model overridden to in >= override_share of events
    override_share: float = 0.3
    regenerate_penalty: float = 0.1
    rating_weight: float = 0.1     # ratings 1..5, centred on 3
    org_weight: float = 0.5        # organisation defaults count half a user's own history
    max_boost: float = 0.25


def fit_user_preference(feedback: pd.DataFrame, settings: UserPreferenceSettings | None = None
                        ) -> StaticUserPreference:
    """Adjustment table keyed ``user:<id>`` and ``org:<id>`` from feedback rows."""
    s = settings or UserPreferenceSettings()
    table: dict[str, dict[str, float]] = {}
    if feedback is None or len(feedback) == 0:
        return StaticUserPreference(table, max_boost=s.max_boost)
    missing = [c for c in ("event", "routed_model", "chosen_model", "user_id", "org_id") if c not in feedback]
    if missing:
        raise ValueError(f"feedback log is missing columns {missing}")
    for key_col, prefix, weight in (("user_id", "user", 1.0), ("org_id", "org", s.org_weight)):
        rows = feedback[feedback[key_col].notna()]
        for key, g in rows.groupby(key_col):
            n = len(g)
            if n < s.min_events:
                continue
            adj: dict[str, float] = {}
            over = g[g["event"] == "override"]
            for model, k in over["chosen_model"].value_counts().items():
                share = k / n
                adj[model] = adj.get(model, 0.0) + s.override_boost * min(1.0, share / s.override_share)
            for model, k in over["routed_model"].value_counts().items():
                adj[model] = adj.get(model, 0.0) - 0.5 * s.override_boost * min(1.0, (k / n) / s.override_share)
            regen = g[g["event"] == "regenerate"]
            for model, k in regen["routed_model"].value_counts().items():
                adj[model] = adj.get(model, 0.0) - s.regenerate_penalty * min(1.0, k / n / s.override_share)
            if "rating" in g:
                rated = g[(g["event"] == "rating") & g["rating"].notna()]
                for model, r in rated.groupby("chosen_model")["rating"].mean().items():   # the rated answer's model
                    adj[model] = adj.get(model, 0.0) + s.rating_weight * (float(r) - 3.0) / 2.0
            table[f"{prefix}:{key}"] = {m: round(weight * v, 6) for m, v in adj.items() if abs(v) > 1e-9}
    return StaticUserPreference(table, max_boost=s.max_boost)


def save_user_preference(pref: StaticUserPreference, path: str | Path) -> None:
    Path(path).write_text(json.dumps({"max_boost": pref.max_boost, "table": pref.table}, indent=1))


def load_user_preference(path: str | Path) -> StaticUserPreference:
    data = json.loads(Path(path).read_text())
    return StaticUserPreference(data.get("table", {}), max_boost=float(data.get("max_boost", 0.2)))


__all__ = ["FEEDBACK_COLUMNS", "UserPreferenceSettings", "fit_user_preference", "save_user_preference",
           "load_user_preference"]
