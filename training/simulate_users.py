"""Simulated users against the real service: does the loop learn?

    python -m training.simulate_users [simulate.interactions=60 ...]   (make simulate)

Three kinds of users whose hidden preferences come from outcome data the
router never trained on (conf/simulate/default.yaml):
- a quality-first coder: the model that solves most SWE-bench Verified
  issues of the repositories the data pipeline holds out of training;
- a cost-sensitive user: the cheapest model within a few points of the best
  held-out ZeroEval (GSM8K) accuracy;
- a writer who prefers one family: its best model by Arena creative writing.

They send held-out prompts of their tasks (data/processed/prompts test split),
sometimes from their Space, to a real `bentoml serve`; they override when the
routed model is not one they accept, regenerate and rate sometimes. Phases:

1. learning, Tier 4 on and Tier 4 off (same users, same prompts, same seed):
   override rate over time, cost against always using the most capable
   model, the quality they got;
2. the loop: the feedback stage and `python -m training.run` train a
   challenger on the Tier-4-on log; held-out users (new organisations) with
   held-out prompts are split A/B between champion and challenger, then a
   short shadow run; `training.compare_arms` reports the arms.

Everything is logged to one MLflow run (curves as step metrics, plots, the
per-interaction table, the A/B report) and written to `simulate.out_dir`.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from autoroute.catalog import Catalog

log = logging.getLogger("autoroute.simulate")
ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------- the users
@dataclass
class Taste:
    """A user kind's hidden preference: `prefer` first, anything in `accept` is fine."""
    kind: str
    prefer: str
    accept: set[str]
    quality: dict[str, float]          # hidden quality of each model with evidence (the kind's own scale)
    evidence: str


@dataclass
class User:
    user_id: str
    org_id: str
    taste: Taste
    tasks: list[str]
    space: str | None
    cost_quality: float
    rng: np.random.Generator = field(repr=False, default=None)


def _blended_price(catalog: Catalog, m: str) -> float:
    p = catalog.cards[m].price
    known = [c for c in catalog.offered if catalog.cards[c].price.known]
    if not p.known:   # unknown price: the priciest known one (the router's pessimistic rule)
        return max(_blended_price(catalog, c) for c in known)
    return float(p.input) + 3.0 * float(p.output)


def heldout_repositories(processed: Path) -> set[str]:
    """The SWE-bench repositories of the data pipeline's test split (the router trains on the others)."""
    o = pd.read_parquet(processed / "outcomes.parquet", columns=["source", "subject", "split"])
    return set(o.loc[(o["source"] == "swebench_verified") & (o["split"] == "test"), "subject"].dropna())


def tastes(sim: DictConfig, catalog: Catalog, processed: Path) -> dict[str, Taste]:
    ev, kinds = sim.evidence, sim.types
    out = {}
    # coder: resolve rate on the SWE-bench repositories the router never trained on
    swe = pd.read_csv(ev.swebench.file)
    repos = heldout_repositories(processed)
    if not repos:
        raise SystemExit(f"{processed}/outcomes.parquet has no SWE-bench test split: run `dvc repro`")
    swe = swe[swe["instance_id"].str.rsplit("-", n=1).str[0].str.replace("__", "/", n=1).isin(repos)]
    names = {v: k for k, v in ev.swebench.models.items()}
    q = swe[swe["model"].isin(names)].groupby("model")["resolved"].mean().rename(index=names).to_dict()
    best = max(q.values())
    out["coder"] = Taste("coder", max(q, key=q.get), {m for m, v in q.items() if v >= best - kinds.coder.tolerance},
                         q, f"SWE-bench Verified resolve rate on the held-out repositories ({', '.join(sorted(repos))}; "
                            f"{len(swe) // max(len(set(swe['model'])), 1)} issues)")
    # budget: ZeroEval GSM8K accuracy (the data pipeline holds GSM8K out of training), then the cheapest good one
    ze = pd.read_csv(ev.zeroeval.file)
    ze = ze[ze["task"] == ev.zeroeval.task]
    names = {v: k for k, v in ev.zeroeval.models.items()}
    q = ze[ze["model"].isin(names)].groupby("model")["correct"].mean().rename(index=names).to_dict()
    best = max(q.values())
    good = [m for m, v in q.items() if v >= best - kinds.budget.tolerance]
    prefer = min(good, key=lambda m: _blended_price(catalog, m))
    limit = 1.5 * _blended_price(catalog, prefer)
    out["budget"] = Taste("budget", prefer, {m for m in good if _blended_price(catalog, m) <= limit}, q,
                          f"ZeroEval {ev.zeroeval.task} accuracy (held out of training), then price")
    # writer: one family, its best by Arena creative-writing rating
    ar = pd.read_csv(ev.arena.file)
    ar = ar[ar["category"] == ev.arena.category]
    names = {v: k for k, v in ev.arena.models.items()}
    q = ar[ar["model"].isin(names)].set_index("model")["rating"].rename(index=names).to_dict()
    fam = {m: v for m, v in q.items() if catalog.cards[m].provider == kinds.writer.family}
    best = max(fam.values())
    out["writer"] = Taste("writer", max(fam, key=fam.get),
                          {m for m, v in fam.items() if v >= best - kinds.writer.tolerance}, q,
                          f"Arena {ev.arena.category} rating within the {kinds.writer.family} family")
    return out


def make_users(sim: DictConfig, taste: dict[str, Taste], n: int, prefix: str, seed: int) -> list[User]:
    users = []
    for kind, spec in sim.types.items():
        for i in range(n):
            users.append(User(f"{prefix}-{kind}-{i}", f"{prefix}-{kind}-team", taste[kind], list(spec.tasks),
                              spec.space, float(spec.cost_quality),
                              np.random.default_rng([seed, len(users)])))
    return users


def load_prompts(processed: Path, tasks: set[str], max_chars: int) -> dict[str, list[str]]:
    df = pd.read_parquet(processed / "prompts" / "test.parquet")
    df = df[df["task"].isin(tasks) & (df["prompt"].str.len() <= max_chars)]
    return {t: sorted(g["prompt"].tolist()) for t, g in df.groupby("task")}


# ------------------------------------------------------------- interacting
def _post(client: httpx.Client, path: str, body: dict, tries: int = 4) -> dict:
    """POST with the patience of a real client: an overloaded service (503 / 429,
    honouring Retry-After) or a timeout is retried with backoff; anything else raises."""
    for attempt in range(tries):
        try:
            r = client.post(path, json=body)
        except httpx.TimeoutException:
            if attempt == tries - 1:
                raise
            time.sleep(2.0 ** attempt)
            continue
        if r.status_code in (429, 503) and attempt < tries - 1:
            time.sleep(float(r.headers.get("retry-after") or 2.0 ** attempt))
            continue
        r.raise_for_status()
        return r.json()
    raise RuntimeError(f"{path}: no answer after {tries} tries")


def interact(url: str, users: list[User], prompts: dict[str, list[str]], steps: int, sim: DictConfig,
             catalog: Catalog, phase: str, offset: int = 0) -> list[dict]:
    """Each step, every user sends one request and reacts to the decision."""
    strongest = most_capable(catalog)
    rows = []
    with httpx.Client(base_url=url, timeout=60.0, trust_env=False) as client:
        for step in range(steps):
            for u in users:
                rng = u.rng
                task = u.tasks[int(rng.integers(len(u.tasks)))]
                pool = prompts[task]
                half = pool[1::2] if phase.startswith(("ab", "shadow")) else pool[0::2]   # held-out prompts later
                text = half[int(rng.integers(len(half)))]
                body = {"messages": [{"role": "user", "content": text}], "user_id": u.user_id, "org_id": u.org_id,
                        "cost_quality": u.cost_quality}
                if u.space and rng.random() < sim.space_p:
                    body["space"] = {"type": u.space}
                t0 = time.perf_counter()
                d = _post(client, "/route", body)
                ms = (time.perf_counter() - t0) * 1000
                routed = d["selected_model"]
                final, event = routed, None
                if routed not in u.taste.accept:
                    final, event = u.taste.prefer, "override"
                    fb = {"decision_id": d["decision_id"], "event": "override", "chosen_model": final}
                elif rng.random() < sim.regenerate_p:
                    event = "regenerate"
                    fb = {"decision_id": d["decision_id"], "event": "regenerate"}
                elif rng.random() < sim.rating_p:
                    event = "rating"
                    fb = {"decision_id": d["decision_id"], "event": "rating",
                          "rating": 5 if routed == u.taste.prefer else 4}
                if event:
                    _post(client, "/feedback", fb)
                tokens = int(d.get("estimated_tokens") or 0)
                rows.append({
                    "phase": phase, "step": offset + step, "user_id": u.user_id, "kind": u.taste.kind,
                    "task": task, "routed": routed, "final": final, "override": event == "override",
                    "regenerate": event == "regenerate", "rating": fb.get("rating") if event == "rating" else None,
                    "tier": d["tier"], "reason": d["reason"], "latency_ms": ms,
                    "cost": _cost(catalog, final, tokens), "cost_strongest": _cost(catalog, strongest, tokens),
                    "quality": u.taste.quality.get(final, np.nan),
                    "quality_routed": u.taste.quality.get(routed, np.nan),
                    "quality_preferred": u.taste.quality[u.taste.prefer]})
    return rows


def most_capable(catalog: Catalog) -> str:
    """The offered model with the best measured prior quality over all tasks."""
    from autoroute.scoring import prior_quality
    q, _ = prior_quality(catalog, catalog.offered, None)
    return catalog.offered[int(np.argmax(q))]


def _cost(catalog: Catalog, model: str, tokens_in: int, tokens_out: int = 500) -> float:
    c = catalog.cards[model].estimate_cost(tokens_in, tokens_out)
    if c is None:  # unknown price: the priciest known model's (as the router counts it)
        c = max(catalog.cards[m].estimate_cost(tokens_in, tokens_out) or 0.0 for m in catalog.offered)
    return float(c)


# ----------------------------------------------------------------- summaries
def curve(rows: pd.DataFrame, window: int) -> pd.DataFrame:
    """Override rate per window of `window` interactions of every user."""
    w = rows.assign(window=rows["step"] // window)
    return w.groupby("window").agg(step=("step", "max"), override_rate=("override", "mean"),
                                   n=("override", "size")).reset_index(drop=True)


def summary(rows: pd.DataFrame, window: int) -> dict:
    c = curve(rows, window)
    by_kind = rows.groupby("kind").agg(override_rate=("override", "mean"), cost=("cost", "sum"),
                                       cost_strongest=("cost_strongest", "sum"))
    q = rows.dropna(subset=["quality"])
    qr = rows.dropna(subset=["quality_routed"])
    return {"interactions": int(len(rows)), "override_rate": float(rows["override"].mean()),
            "override_rate_first": float(c["override_rate"].iloc[0]),
            "override_rate_last": float(c["override_rate"].iloc[-1]),
            "first_window_under_target": None,
            "cost_vs_strongest": float(rows["cost"].sum() / rows["cost_strongest"].sum()),
            "quality_vs_preferred": float((q["quality"] / q["quality_preferred"]).mean()),
            "routed_quality_vs_preferred": float((qr["quality_routed"] / qr["quality_preferred"]).mean()),
            "routed_with_evidence": float(len(qr) / len(rows)),
            "by_kind": {k: {kk: float(vv) for kk, vv in v.items()} for k, v in by_kind.to_dict("index").items()},
            "curve": c.to_dict("list")}


def _plots(curves: dict[str, pd.DataFrame], target: float, out: Path, summaries: dict) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, c in curves.items():
        ax.plot(c["step"] + 1, c["override_rate"], marker="o", label=name)
    ax.axhline(target, color="grey", ls="--", label=f"target {target:.0%}")
    ax.set(xlabel="interactions per user", ylabel="override rate", title="Simulated users: override rate",
           ylim=(0, 1))
    ax.legend()
    paths.append(out / "override_rate.png")
    fig.savefig(paths[-1], dpi=120, bbox_inches="tight")
    plt.close(fig)
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.5))
    names = list(summaries)
    axes[0].bar(names, [summaries[n]["cost_vs_strongest"] for n in names])
    axes[0].set(title="cost vs always the most capable model", ylim=(0, 1.2))
    axes[1].bar(names, [summaries[n]["quality_vs_preferred"] for n in names])
    axes[1].set(title="quality vs the user's preferred model", ylim=(0, 1.1))
    for a in axes:
        a.tick_params(axis="x", rotation=20)
    paths.append(out / "cost_quality.png")
    fig.savefig(paths[-1], dpi=120, bbox_inches="tight")
    plt.close(fig)
    return paths


# ------------------------------------------------------------------- phases
def serve(tmp: Path, home: Path, extra: list[str], refresh_s: float):
    from serving.launch import start_server
    tmp.mkdir(parents=True, exist_ok=True)
    for old in tmp.glob("log.sqlite*"):   # every phase starts from an empty log
        old.unlink()
    overrides = ["serving.on_model_error=refuse", f"serving.log.db={tmp / 'log.sqlite'}",
                 f"serving.tier4.refresh_s={refresh_s}", *extra]
    return start_server(tmp, overrides, bentoml_home=home, timeout=300.0)


def run_module(args: list[str], env: dict | None = None, timeout: int = 3600) -> str:
    proc = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        raise RuntimeError(f"`python -m {' '.join(args)}` failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return proc.stdout


def train_challenger(cfg: DictConfig, out: Path, log_db: Path) -> str:
    """The DVC `feedback` stage's command on the simulation's log, then the challenger run."""
    sim = cfg.simulate
    processed = out / "processed"
    processed.mkdir(parents=True, exist_ok=True)
    real = Path(cfg.paths.processed)
    for name in ("prompts", "comparisons.parquet", "outcomes.parquet", "manifest.json"):
        link = processed / name
        if not link.exists():
            link.symlink_to(real / name)
    stage = run_module(["autoroute.data.feedback_log", f"paths.feedback_db={log_db}", f"paths.processed={processed}"])
    print(stage.strip())
    run_module(["training.run", *sim.challenger_overrides, f"training.data.dir={processed}",
                f"training.data.feedback_db={log_db}", f"paths.bentoml_home={sim.bentoml_home}",
                f"paths.mlflow_db={cfg.paths.mlflow_db}", f"paths.mlflow_artifacts={cfg.paths.mlflow_artifacts}",
                f"training.embedding_cache={cfg.training.embedding_cache}", f"hydra.run.dir={out / 'challenger_run'}"],
               env={"BENTOML_HOME": str(sim.bentoml_home)})
    return stage


def run(cfg: DictConfig) -> dict:
    import mlflow

    from training.compare_arms import report

    sim = cfg.simulate
    out = Path(sim.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    home = Path(sim.bentoml_home)
    if not (home / "models" / "autoroute-router" / "latest").is_file():
        raise SystemExit(f"no champion autoroute-router in {home}: train one first (`python -m training.run`); "
                         "a sliced run such as experiment=tiny is never exported as the champion: for a quick "
                         "one export its bundle by hand (`python -c \"from autoroute.bundle import "
                         "export_to_bentoml; export_to_bentoml('<run dir>/bundle')\"`)")
    catalog = Catalog.from_config(cfg.catalog)
    taste = tastes(sim, catalog, Path(cfg.paths.processed))
    for t in taste.values():
        print(f"{t.kind}: prefers {t.prefer}, accepts {sorted(t.accept)} ({t.evidence}: "
              + ", ".join(f"{m} {v:.3g}" for m, v in sorted(t.quality.items(), key=lambda kv: -kv[1])) + ")")
    tasks = {t for spec in sim.types.values() for t in spec.tasks}
    prompts = load_prompts(Path(cfg.paths.processed), tasks, int(sim.max_prompt_chars))
    results: dict[str, pd.DataFrame] = {}
    logs: dict[str, Path] = {}
    for name, on in (("tier4_on", True), ("tier4_off", False)):
        users = make_users(sim, taste, int(sim.users_per_type), "u", int(sim.seed))
        server = serve(out / name, home, [f"serving.tier4.enabled={str(on).lower()}"], float(sim.tier4_refresh_s))
        try:
            t0 = time.time()
            results[name] = pd.DataFrame(interact(server.url, users, prompts, int(sim.interactions), sim, catalog, name))
            print(f"{name}: {len(results[name])} interactions in {time.time() - t0:.0f}s")
        finally:
            server.stop()
        logs[name] = server.db
    sums = {n: summary(r, int(sim.window)) for n, r in results.items()}
    target = float(sim.target_override_rate)
    for n, s in sums.items():
        under = [st + 1 for st, rate in zip(s["curve"]["step"], s["curve"]["override_rate"]) if rate < target]
        s["first_window_under_target"] = under[0] if under else None
        print(f"\n{n}: override rate per window of {sim.window} interactions/user "
              f"(first {s['override_rate_first']:.1%} -> last {s['override_rate_last']:.1%}; under "
              f"{target:.0%} from interaction {s['first_window_under_target']} of {sim.interactions})")
        print("  " + "  ".join(f"{st + 1}:{rate:.0%}" for st, rate in zip(s["curve"]["step"], s["curve"]["override_rate"])))
        print(f"  cost vs always the most capable model: {s['cost_vs_strongest']:.1%}; quality (user's own scale) of "
              f"what they ended with vs their preferred model: {s['quality_vs_preferred']:.1%}, of what was routed: "
              f"{s['routed_quality_vs_preferred']:.1%}")
    ab = None
    if sim.challenger:
        train_challenger(cfg, out, logs["tier4_on"])
        held = make_users(sim, taste, int(sim.heldout_users_per_type), "new", int(sim.seed) + 1)
        server = serve(out / "ab", home, ["serving.challenger.model=autoroute-challenger:latest",
                                          "serving.challenger.mode=ab", f"serving.challenger.ab_share={sim.ab_share}"],
                       float(sim.tier4_refresh_s))
        try:
            health = httpx.get(server.url + "/healthz", trust_env=False).json()
            if not health.get("challenger", {}).get("loaded"):
                raise RuntimeError(f"the challenger did not load: {health.get('challenger')}")
            results["ab"] = pd.DataFrame(interact(server.url, held, prompts, int(sim.heldout_interactions), sim,
                                                  catalog, "ab"))
        finally:
            server.stop()
        shadow_users = make_users(sim, taste, 1, "shadow", int(sim.seed) + 2)
        server = serve(out / "shadow", home, ["serving.challenger.model=autoroute-challenger:latest",
                                              "serving.challenger.mode=shadow"], float(sim.tier4_refresh_s))
        try:
            results["shadow"] = pd.DataFrame(interact(server.url, shadow_users, prompts, int(sim.shadow_interactions),
                                                      sim, catalog, "shadow"))
            time.sleep(1.0)    # the shadow decisions are written after the responses
        finally:
            server.stop()
        ab = report(out / "ab" / "log.sqlite", print_table=True)
        ab["shadow"] = report(out / "shadow" / "log.sqlite", print_table=True)["shadow"]
    frame = pd.concat(results.values(), ignore_index=True)
    frame.to_csv(out / "interactions.csv", index=False)
    curves = {n: pd.DataFrame(s["curve"]) for n, s in sums.items()}
    plots = _plots(curves, target, out, sums)
    result = {"tastes": {k: {"prefer": t.prefer, "accept": sorted(t.accept), "evidence": t.evidence,
                             "quality": t.quality} for k, t in taste.items()},
              "budget": {"users": len(make_users(sim, taste, int(sim.users_per_type), "u", 0)),
                         "interactions_per_user": int(sim.interactions)},
              "phases": sums, "ab": ab}
    mlflow.set_tracking_uri(str(cfg.tracking.tracking_uri))
    mlflow.set_experiment(str(sim.mlflow_experiment))
    with mlflow.start_run(run_name="simulated-users") as mrun:
        result["mlflow_run_id"] = mrun.info.run_id
        (out / "summary.json").write_text(json.dumps(result, indent=1, default=float))
        mlflow.log_params({"users_per_type": sim.users_per_type, "interactions": sim.interactions,
                           "window": sim.window, "seed": sim.seed, "challenger": sim.challenger})
        for n, s in sums.items():
            for st, rate in zip(s["curve"]["step"], s["curve"]["override_rate"]):
                mlflow.log_metric(f"{n}/override_rate", rate, step=int(st) + 1)
            mlflow.log_metrics({f"{n}/{k}": v for k, v in s.items() if isinstance(v, (int, float)) and v is not None})
        if ab:
            mlflow.log_metrics({f"ab/{arm}/{k}": v for arm, m in ab["arms"].items() for k, v in m.items()
                                if isinstance(v, (int, float)) and v is not None})
        for p in plots:
            mlflow.log_artifact(str(p), "plots")
        mlflow.log_artifact(str(out / "interactions.csv"))
        mlflow.log_artifact(str(out / "summary.json"))
    print(f"\nlogged to MLflow run {result['mlflow_run_id']} (experiment {sim.mlflow_experiment}); files in {out}")
    return result


def main(argv: list[str] | None = None) -> dict:
    from autoroute.config import load_config

    logging.basicConfig(level=logging.WARNING)
    cfg = load_config(["+simulate=default", *(sys.argv[1:] if argv is None else argv)])
    OmegaConf.resolve(cfg)
    return run(cfg)


if __name__ == "__main__":
    main()
