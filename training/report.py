"""Metrics as flat names, the side-by-side quality table, and the plots."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from training.routing import NModelEval, TwoModelEval

ROUTER_ORDER = ("ensemble", "mf", "knn", "classifier_prior", "length", "random", "oracle")


def _short(bench: str) -> str:
    return bench.replace("routellm_", "")


def two_model_metrics(ev: TwoModelEval) -> dict[str, float]:
    out = {}
    for (proto, bench, router), r in ev.results.items():
        protos = ("heldout", "ood") if proto == "all" else (proto,)
        for p in protos:
            key = f"two_model/{p}/{_short(bench)}/{router}"
            out[f"{key}/apgr"] = r.apgr
            out[f"{key}/cpt50"] = r.cpt50
            out[f"{key}/cpt80"] = r.cpt80
    return out


def n_model_metrics(ev: NModelEval | None) -> dict[str, float]:
    return {} if ev is None else {f"routerbench/{k}": float(v) for k, v in ev.metrics.items()}


def classifier_metrics(report: dict, prefix: str = "classifier/test") -> dict[str, float]:
    out = {f"{prefix}/{k}": float(report[k]) for k in ("accuracy", "macro_f1", "ece", "n")}
    out.update({f"{prefix}/f1/{t}": v for t, v in report["per_class_f1"].items()})
    return out


def primary_metric(metrics: dict[str, float], terms: list[str]) -> float:
    """Mean of the listed metrics (missing or NaN terms count as 0)."""
    vals = [metrics.get(t, float("nan")) for t in terms]
    vals = [0.0 if (v is None or not math.isfinite(v)) else float(v) for v in vals]
    return float(np.mean(vals)) if vals else float("nan")


def quality_table(metrics: dict[str, float]) -> pd.DataFrame:
    """One row per router / baseline, columns for every benchmark metric."""
    rows = {}
    for key, val in metrics.items():
        parts = key.split("/")
        if parts[0] == "two_model" and len(parts) == 5:
            _, proto, bench, router, m = parts
            rows.setdefault(router, {})[f"{bench} {proto} {m.upper()}"] = val
        elif parts[0] == "routerbench" and len(parts) == 3:
            _, router, m = parts
            rows.setdefault(router, {})[f"RB {m}"] = val
    df = pd.DataFrame.from_dict(rows, orient="index")
    order = [r for r in ROUTER_ORDER if r in df.index] + [r for r in df.index if r not in ROUTER_ORDER]
    df = df.loc[order]
    cols = sorted(df.columns, key=lambda c: (c.startswith("RB"), c))
    return df[cols]


def format_table(metrics: dict[str, float]) -> str:
    df = quality_table(metrics)
    fmt = lambda v: f"{v:.3f}"  # noqa: E731
    two = [c for c in df.columns if c.endswith(("APGR", "CPT50", "CPT80"))]
    rb = [c for c in ("RB cost_to_match_best", "RB cost_ratio_to_match_best", "RB quality_at_best_cost",
                      "RB quality_at_half_best_cost") if c in df.columns]
    lines = []
    for bench_proto in sorted({c.rsplit(" ", 1)[0] for c in two}):
        cols = [f"{bench_proto} {k}" for k in ("APGR", "CPT50", "CPT80") if f"{bench_proto} {k}" in df.columns]
        lines.append(f"== {bench_proto} (two-model: gpt-4-1106-preview vs Mixtral-8x7B)")
        lines.append(df[cols].rename(columns=lambda c: c.rsplit(" ", 1)[1]).to_string(
            float_format=fmt, na_rep="-"))
    if rb:
        lines.append("== RouterBench test (N models, real dollar costs)")
        lines.append(df[rb].dropna(how="all").rename(columns=lambda c: c[3:]).to_string(float_format=fmt, na_rep="-"))
    if "routerbench/best_model_quality" in metrics:
        lines.append(f"RouterBench best single model: quality {metrics['routerbench/best_model_quality']:.3f} "
                     f"at ${metrics['routerbench/best_model_cost']:.2f} over "
                     f"{int(metrics['routerbench/n_prompts'])} test prompts")
    clf = {k.split("/")[-1]: v for k, v in metrics.items() if k.startswith("classifier/test/")
           and k.count("/") == 2}
    loso = {k.split("/")[-1]: v for k, v in metrics.items() if k.startswith("classifier/loso_int8/")
            and k.count("/") == 2}
    if loso:
        lines.append("classifier, leave-one-source-group-out, int8 as served: " + ", ".join(
            f"{k} {v:.3f}" for k, v in loso.items() if k != "n") + f", n {int(loso.get('n', 0))}")
    if clf:
        lines.append("classifier (held-out sources): " + ", ".join(
            f"{k} {v:.3f}" for k, v in clf.items() if k != "n") + f", n {int(clf.get('n', 0))}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- plots
def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_two_model(ev: TwoModelEval, folder: Path) -> list[Path]:
    plt = _plt()
    paths = []
    benches = sorted({b for _, b, _ in ev.results})
    protos = sorted({p for p, _, _ in ev.results if p != "all"})
    for bench in benches:
        for proto in protos:
            fig, ax = plt.subplots(figsize=(6, 4.5))
            for (p, b, router), r in sorted(ev.results.items(), key=lambda kv: ROUTER_ORDER.index(kv[0][2])
                                            if kv[0][2] in ROUTER_ORDER else 99):
                if b != bench or p not in (proto, "all"):
                    continue
                style = "--" if router in ("random", "oracle") else "-"
                ax.plot(r.share, r.quality, style, label=f"{router} (APGR {r.apgr:.3f})")
            ax.set_xlabel("share of calls to the strong model")
            ax.set_ylabel("quality (mean correctness)")
            ax.set_title(f"{_short(bench)} ({proto})")
            ax.legend(fontsize=8)
            ax.grid(alpha=0.3)
            path = folder / f"two_model_{_short(bench)}_{proto}.png"
            fig.tight_layout()
            fig.savefig(path, dpi=110)
            plt.close(fig)
            paths.append(path)
    return paths


def plot_n_model(ev: NModelEval | None, folder: Path) -> list[Path]:
    if ev is None:
        return []
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 5))
    for name, cv in ev.curves.items():
        style = "--" if name in ("random", "oracle") else "-"
        ax.plot(cv.frontier_cost, cv.frontier_quality, style, marker=".", label=name)
    ax.scatter(ev.single_cost, ev.single_quality, c="k", s=14, zorder=5, label="single models")
    for m, x, y in zip(ev.models, ev.single_cost, ev.single_quality):
        ax.annotate(m, (x, y), fontsize=6, alpha=0.7)
    ax.set_xscale("symlog", linthresh=0.01)
    ax.set_xlabel("total cost of the test prompts (USD)")
    ax.set_ylabel("quality (mean score)")
    ax.set_title("RouterBench test: cost-quality frontier")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    path = folder / "routerbench_cost_quality.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def plot_confusion(report: dict, folder: Path, name: str = "classifier_confusion.png",
                   title: str = "task classifier, held-out sources") -> list[Path]:
    plt = _plt()
    cm = np.array(report["confusion"], dtype=float)
    labels = report["labels"]
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    for i in range(len(labels)):
        for j in range(len(labels)):
            if cm[i, j]:
                ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=6,
                        color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title} (macro-F1 {report['macro_f1']:.3f})")
    path = folder / name
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


__all__ = ["two_model_metrics", "n_model_metrics", "classifier_metrics", "primary_metric", "quality_table",
           "format_table", "plot_two_model", "plot_n_model", "plot_confusion"]
