"""A synthetic decision and feedback history for the dashboard tests.

Decisions come from the rules-only router on a handful of prompts, spread
over `hours` and backdated; users are split between arms by a stable hash;
users override (then get an answer from the model they picked, a second
decision), regenerate and rate, with an override rate that falls over time
and is lower in the challenger arm. Rows are written with the log's own DDL
(`serving.store.LogStore` creates the tables). Returns the true counts."""
from __future__ import annotations

import hashlib
import random
import sqlite3
import time
from pathlib import Path

from autoroute.config import build_router, load_config
from autoroute.types import Area, Request
from serving.store import FEEDBACK_COLUMNS, LogStore, iso_now

PROMPTS = [
    "hello!", "What is the capital of Australia?",
    "Fix this bug: ```python\ndef add(a, b):\n    return a - b\n```",
    "Write a short poem about autumn rain in Kyoto",
    "Translate to French: the meeting moved to Thursday",
    "Summarize this: the quarterly report shows revenue up 12% while costs fell 3%, driven by ...",
    "Plan a three-week migration of our billing database to Postgres with zero downtime",
    "Review this code: ```js\nfunction f(a){ return a.map(x => x*2) }\n```",
    "Solve for x: 3x + 7 = 22, and explain each step",
    "Analyze the trade-offs between microservices and a modular monolith for a 12-person team",
]


def _arm(user: str, arms: tuple[str, ...]) -> str:
    return arms[int(hashlib.sha256(user.encode()).hexdigest(), 16) % len(arms)]


def write_history(db: Path, hours: float = 48.0, n: int = 300, seed: int = 0,
                  arms: tuple[str, ...] = ("champion", "challenger-a"), now: float | None = None) -> dict:
    LogStore(db).close()                                  # the service's tables and columns
    router = build_router(load_config([]), degraded=True)
    rng = random.Random(seed)
    now = time.time() if now is None else now
    start = now - hours * 3600
    decisions, feedback = [], []
    truth = {"auto": 0, "overrides": 0, "regenerations": 0, "ratings": [], "per_arm": {a: 0 for a in arms},
             "per_arm_overrides": {a: 0 for a in arms}}

    def decision(d, user, prompt, t, requested, arm):
        decisions.append((d.decision_id, iso_now(t), user, "acme", prompt, d.selected_model, d.task, d.tier,
                          d.model_dump_json(), requested, arm))

    def event(d, prompt, chosen, kind, rating, user, t):
        row = {"decision_id": d.decision_id, "prompt": prompt, "routed_model": d.selected_model,
               "chosen_model": chosen, "event": kind, "rating": rating, "user_id": user, "org_id": "acme",
               "ts": iso_now(t)}
        feedback.append(tuple(row[c] for c in FEEDBACK_COLUMNS))

    for i in range(n):
        t = start + (i + rng.random()) * hours * 3600 / n
        user = f"user-{rng.randrange(30)}"
        arm = _arm(user, arms)
        prompt = rng.choice(PROMPTS)
        d = router.route(Request.from_prompt(prompt, user_id=user, org_id="acme"))
        decision(d, user, prompt, t, "auto", arm)
        truth["auto"] += 1
        truth["per_arm"][arm] += 1
        shown = d.selected_model
        p_override = 0.05 + 0.35 * (1 - i / n) * (0.6 if arm != "champion" else 1.0)
        if d.alternatives and rng.random() < p_override:
            shown = rng.choice(d.alternatives[:2]).model
            picked = router.route(Request.from_prompt(prompt, user_id=user, org_id="acme",
                                                      area=Area(model_lock=shown)))
            decision(picked, user, prompt, t + 4, shown, arm)
            event(d, prompt, shown, "override", None, user, t + 5)
            truth["overrides"] += 1
            truth["per_arm_overrides"][arm] += 1
        elif rng.random() < 0.06:
            event(d, prompt, shown, "regenerate", None, user, t + 5)
            truth["regenerations"] += 1
        if rng.random() < 0.3:
            stars = rng.choice([3, 4, 5, 5]) if shown != d.selected_model else rng.choice([2, 3, 4, 5])
            event(d, prompt, shown, "rating", float(stars), user, t + 9)
            truth["ratings"].append(stars)
    con = sqlite3.connect(db)
    with con:
        con.executemany("INSERT INTO decisions (decision_id, ts, user_id, org_id, prompt, selected_model, task, tier, "
                        "payload, requested, arm) VALUES (?,?,?,?,?,?,?,?,?,?,?)", decisions)
        con.executemany(f"INSERT INTO feedback ({', '.join(FEEDBACK_COLUMNS)}) VALUES "
                        f"({', '.join('?' * len(FEEDBACK_COLUMNS))})", feedback)
    con.close()
    return truth
