"""Tier 4: per-user and per-organisation preferences learned from the
feedback log (overrides, regenerations, ratings).

The model is a Bradley-Terry / logistic model over (chosen vs routed, task).
Each model ``m`` has a preference logit for a user ``u`` of an organisation
``o`` on a task ``t``::

    beta(u, o, t, m) = sum over levels l in (global, org:o, user:u) of  a[l, m] + b[l, t, m]

``a`` is the level's task-agnostic term, ``b`` its task-specific one. The
observations:

- an override, or a regeneration with another model: ``chosen`` beat
  ``routed``: ``P = sigmoid(beta_chosen - beta_routed)``, label 1;
- a regeneration with the same model: the answer was not good enough:
  ``sigmoid(beta_routed)``, label 0;
- a rating ``r`` in 1..5 of the answer of ``chosen``: ``sigmoid(beta_chosen)``,
  soft label ``(r - 1) / 4``.

Each observation is weighted by its kind and by a time decay
(``0.5 ** (age / half_life)``). The fit is MAP with Gaussian priors: every
term is shrunk to 0 with a precision per level, so a user's terms are
deviations from their organisation's, which are deviations from everyone's
(hierarchical shrinkage user -> org -> global); a user with two events barely
moves, one with many consistent overrides moves far.

A fitted `Tier4Model` can sit on a *parent* (the champion's table): its
terms are then deviations from the parent's prediction, fit only on events
after the parent's ``fitted_until``. The service fits the user and org levels
live on top of the champion's; the global level (what everybody prefers) is
learned by training and reaches traffic through a challenger, A/B and a human
promotion.

Use: the additive utility term ``clip(scale * beta, +-max_boost)`` for the
selection rule, and `Tier4View.overrides` (a preference at least
``rule_margin`` logits above a rule's default replaces that default).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from autoroute.scoring import NoUserPreference, StaticUserPreference, Tier4View, UserPreference

LEVELS = ("global", "org", "user")
ANY = "*"
EVENT_COLUMNS = ("event", "routed_model", "chosen_model", "user_id", "org_id")


@dataclass
class Tier4Settings:
    """How Tier 4 learns and how much it may change (config `router.tier4`)."""
    half_life_days: float = 30.0    # an event's weight halves every half_life_days
    override_weight: float = 1.0
    regenerate_weight: float = 0.5
    rating_weight: float = 0.5
    prior_global: float = 1.0       # prior precision of the population's terms (agreeing users move it)
    prior_org: float = 2.0          # ... of an organisation's deviation from the population
    prior_user: float = 1.0         # ... of a user's deviation from their organisation
    task_prior_factor: float = 1.0  # task-specific terms: the level's precision times this
    scale: float = 0.1              # utility units per logit in the selection rule
    max_boost: float = 0.3          # |utility term| is at most this
    rule_margin: float = 1.9        # logits over a rule's default to replace it: ~3 consistent overrides (4 without an org)
    max_iter: int = 200

    def __post_init__(self):
        for name in ("half_life_days", "prior_global", "prior_org", "prior_user", "task_prior_factor"):
            if getattr(self, name) <= 0:
                raise ValueError(f"router.tier4.{name} must be > 0")
        for name in ("override_weight", "regenerate_weight", "rating_weight", "scale", "max_boost", "rule_margin"):
            if getattr(self, name) < 0:
                raise ValueError(f"router.tier4.{name} must be >= 0")


def _keys(user_id, org_id) -> dict[str, str]:
    out = {"global": "global"}
    if isinstance(org_id, str) and org_id:
        out["org"] = f"org:{org_id}"
    if isinstance(user_id, str) and user_id:
        out["user"] = f"user:{user_id}"
    return out


class Tier4Model(UserPreference):
    """Fitted Tier 4 terms ``{key: {task | "*": {model: logit}}}`` (key ``global``,
    ``org:<id>`` or ``user:<id>``), optionally on top of a parent's prediction."""

    def __init__(self, table: dict, settings: Tier4Settings | None = None, parent: UserPreference | None = None,
                 weight: dict[str, float] | None = None, fitted_until: float | None = None):
        self.table = table
        self.settings = settings or Tier4Settings()
        self.parent = parent
        self.weight = dict(weight or {})          # effective (decayed) events per key
        self.fitted_until = fitted_until          # epoch seconds of the newest event used

    def levels(self, user_id, org_id, models: Sequence[str], task: str | None) -> dict[str, np.ndarray]:
        """Per level, the logit of each model (the parent's included)."""
        out = self.parent.levels(user_id, org_id, models, task) if isinstance(self.parent, Tier4Model) else {}
        for level, key in _keys(user_id, org_id).items():
            terms = self.table.get(key)
            if not terms:
                continue
            vec = out.setdefault(level, np.zeros(len(models)))
            for t in (ANY, task):
                row = terms.get(t) if t else None
                if row:
                    vec += np.array([row.get(m, 0.0) for m in models])
        return out

    def view(self, user_id, org_id, models, task=None) -> Tier4View:
        s = self.settings
        per = self.levels(user_id, org_id, models, task)
        logits = sum(per.values()) if per else np.zeros(len(models))
        logits = np.asarray(logits, dtype=float)
        adjust = np.clip(s.scale * logits, -s.max_boost, s.max_boost)
        if isinstance(self.parent, StaticUserPreference):
            adjust = np.clip(adjust + self.parent.adjust(user_id, org_id, models, task), -s.max_boost, s.max_boost)
        source = []   # the most specific level carrying at least a quarter of the preference, in its direction
        for j in range(len(models)):
            total = float(logits[j])
            pick = ""
            if abs(total) > 1e-9:
                for lv in ("user", "org", "global"):
                    part = float(per[lv][j]) if lv in per else 0.0
                    if part * total > 0 and abs(part) >= 0.25 * abs(total):
                        pick = lv
                        break
            source.append(pick)
        return Tier4View(adjust=adjust, logits=logits, source=source, rule_margin=s.rule_margin)

    def to_json(self) -> dict:
        return {"kind": "tier4", "settings": asdict(self.settings), "table": self.table, "weight": self.weight,
                "fitted_until": self.fitted_until}

    @classmethod
    def from_json(cls, data: dict) -> "Tier4Model":
        return cls(data.get("table", {}), Tier4Settings(**data.get("settings", {})), None,
                   data.get("weight", {}), data.get("fitted_until"))


# ----------------------------------------------------------------------- fitting
def _seconds(ts: pd.Series) -> np.ndarray:
    """Event times as epoch seconds (ISO strings from the log, or numbers)."""
    if pd.api.types.is_numeric_dtype(ts):
        return ts.astype(float).to_numpy()
    parsed = pd.to_datetime(ts, utc=True, errors="coerce", format="ISO8601")
    out = (parsed - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy(dtype=float)
    return np.where(np.isnan(out), np.nanmax(out) if np.isfinite(out).any() else 0.0, out)


@dataclass
class _Obs:
    keys: dict[str, str]
    task: str | None
    plus: str
    minus: str | None
    y: float
    w: float
    user_id: str | None = None
    org_id: str | None = None


def observations(events: pd.DataFrame, settings: Tier4Settings, now: float | None = None) -> list[_Obs]:
    """Feedback rows -> weighted observations (see the module docstring)."""
    s = settings
    if events is None or len(events) == 0:
        return []
    missing = [c for c in EVENT_COLUMNS if c not in events]
    if missing:
        raise ValueError(f"feedback log is missing columns {missing}")
    t = _seconds(events["ts"]) if "ts" in events else np.zeros(len(events))
    now = float(np.max(t)) if now is None else now
    decay = 0.5 ** (np.maximum(now - t, 0.0) / (s.half_life_days * 86400.0))
    tasks = events["task"] if "task" in events else pd.Series([None] * len(events), index=events.index)
    ratings = events["rating"] if "rating" in events else pd.Series([None] * len(events), index=events.index)
    out = []
    for i, (ev, routed, chosen, user, org, task, rating) in enumerate(zip(
            events["event"], events["routed_model"], events["chosen_model"], events["user_id"], events["org_id"],
            tasks, ratings)):
        user = user if isinstance(user, str) and user else None
        org = org if isinstance(org, str) and org else None
        task = task if isinstance(task, str) and task and task != "general" else None
        chosen = chosen if isinstance(chosen, str) and chosen else routed
        keys = _keys(user, org)
        if ev == "override" or (ev == "regenerate" and chosen != routed):
            if chosen == routed:
                continue
            w = s.override_weight if ev == "override" else s.regenerate_weight
            out.append(_Obs(keys, task, chosen, routed, 1.0, w * decay[i], user, org))
        elif ev == "regenerate":
            out.append(_Obs(keys, task, routed, None, 0.0, s.regenerate_weight * decay[i], user, org))
        elif ev == "rating" and rating is not None and not (isinstance(rating, float) and math.isnan(rating)):
            y = min(max((float(rating) - 1.0) / 4.0, 0.0), 1.0)
            out.append(_Obs(keys, task, chosen, None, y, s.rating_weight * decay[i], user, org))
    return out


def fit_tier4(events: pd.DataFrame, settings: Tier4Settings | None = None, levels: Iterable[str] = LEVELS,
              parent: UserPreference | None = None, now: float | None = None) -> Tier4Model:
    """Fit Tier 4 on feedback rows (columns of the log's `feedback` table, plus
    `task` when known). With a `parent` (a `Tier4Model`), only events after its
    ``fitted_until`` count and the fit is of deviations from its prediction."""
    from scipy import sparse
    from scipy.optimize import minimize

    s = settings or Tier4Settings()
    levels = tuple(levels)
    bad = [lv for lv in levels if lv not in LEVELS]
    if bad:
        raise ValueError(f"Tier 4 levels {bad}: use {', '.join(LEVELS)}")
    frame = events if events is not None else pd.DataFrame(columns=list(EVENT_COLUMNS) + ["ts"])
    since = getattr(parent, "fitted_until", None)
    if len(frame) == 0:
        return Tier4Model({}, s, parent, {}, since)
    if since is not None and "ts" in frame:
        frame = frame[_seconds(frame["ts"]) > since]
    obs = observations(frame, s, now)
    newest = float(np.max(_seconds(frame["ts"]))) if len(frame) and "ts" in frame else since
    if not obs:
        return Tier4Model({}, s, parent, {}, newest)
    cols: dict[tuple[str, str, str], int] = {}
    precision: list[float] = []
    prior = {"global": s.prior_global, "org": s.prior_org, "user": s.prior_user}

    def col(level: str, key: str, task: str, model: str) -> int:
        k = (key, task, model)
        if k not in cols:
            cols[k] = len(cols)
            precision.append(prior[level] * (1.0 if task == ANY else s.task_prior_factor))
        return cols[k]

    rows, cidx, vals = [], [], []
    y = np.empty(len(obs))
    w = np.empty(len(obs))
    offset = np.zeros(len(obs))
    weight: dict[str, float] = {}
    for i, o in enumerate(obs):
        y[i], w[i] = o.y, o.w
        for level, key in o.keys.items():
            if level not in levels:
                continue
            weight[key] = weight.get(key, 0.0) + o.w
            for task in (ANY, o.task) if o.task else (ANY,):
                for model, sign in ((o.plus, 1.0), (o.minus, -1.0)):
                    if model is not None:
                        rows.append(i)
                        cidx.append(col(level, key, task, model))
                        vals.append(sign)
        if parent is not None:
            models = [o.plus] + ([o.minus] if o.minus else [])
            base = parent.view(o.user_id, o.org_id, models, o.task).logits
            offset[i] = base[0] - (base[1] if o.minus else 0.0)
    X = sparse.csr_matrix((vals, (rows, cidx)), shape=(len(obs), len(cols)))
    rho = np.array(precision)

    def loss(theta):
        z = X @ theta + offset
        p = 1.0 / (1.0 + np.exp(-z))
        nll = np.sum(w * (np.logaddexp(0.0, z) - y * z)) + 0.5 * np.sum(rho * theta ** 2)
        grad = X.T @ (w * (p - y)) + rho * theta
        return nll, grad

    res = minimize(loss, np.zeros(len(cols)), jac=True, method="L-BFGS-B",
                   options={"maxiter": s.max_iter, "ftol": 1e-7, "gtol": 1e-4})
    table: dict[str, dict[str, dict[str, float]]] = {}
    for (key, task, model), j in cols.items():
        v = float(res.x[j])
        if abs(v) > 1e-4:
            table.setdefault(key, {}).setdefault(task, {})[model] = round(v, 5)
    return Tier4Model(table, s, parent, {k: round(v, 4) for k, v in weight.items()}, newest)


# ----------------------------------------------------------------------- storage
def save_user_preference(pref: UserPreference, path: str | Path) -> None:
    if isinstance(pref, Tier4Model):
        data = pref.to_json()
    elif isinstance(pref, StaticUserPreference):
        data = {"kind": "static", "max_boost": pref.max_boost, "table": pref.table}
    else:
        data = {"kind": "none"}
    Path(path).write_text(json.dumps(data, indent=1))


def load_user_preference(path: str | Path) -> UserPreference:
    data = json.loads(Path(path).read_text())
    kind = data.get("kind", "static")
    if kind == "tier4":
        return Tier4Model.from_json(data)
    if kind == "none":
        return NoUserPreference()
    return StaticUserPreference(data.get("table", {}), max_boost=float(data.get("max_boost", 0.2)))



__all__ = ["Tier4Settings", "Tier4Model", "fit_tier4", "observations", "save_user_preference",
           "load_user_preference", "LEVELS"]
