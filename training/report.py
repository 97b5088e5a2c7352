"""Metrics as flat names, the side-by-side quality table, and the plots.
"router" is the served Router (its bundle loaded as the service loads it, swept
over the knob); "head" is the same quality head's raw scores thresholded; the
rest are baselines."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

ROUTER_ORDER = ("router", "head", "knn", "classifier_prior", "length", "random", "oracle")
FAMILY_TITLES = {"lobo": "leave one benchmark out (HEADLINE)", "loso": "leave one AlpacaEval subset out",
                 "heldout": "in-domain 5-fold (secondary)"}


def two_model_metrics(results: dict) -> dict[str, float]:
    """(family, bench, router) -> TwoModelResult as flat metric names."""
    out = {}
    for (fam, bench, router), r in results.items():
        key = f"two_model/{fam}/{bench}/{router}"
        out[f"{key}/apgr"] = r.apgr
        out[f"{key}/cpt50"] = r.cpt50
        out[f"{key}/cpt80"] = r.cpt80
    return out


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
        if parts[0] == "two_model" and len(parts) == 5 and parts[4] in ("apgr", "cpt50", "cpt80"):
            _, fam, bench, router, m = parts
            rows.setdefault(router, {})[f"{bench} {fam} {m.upper()}"] = val
        elif parts[0] == "routerbench" and len(parts) == 3:
            _, router, m = parts
            rows.setdefault(router, {})[f"RB {m}"] = val
    df = pd.DataFrame.from_dict(rows, orient="index")
    if df.empty:
        return df
    order = [r for r in ROUTER_ORDER if r in df.index] + [r for r in df.index if r not in ROUTER_ORDER]
    df = df.loc[order]
    cols = sorted(df.columns, key=lambda c: (c.startswith("RB"), c))
    return df[cols]


def mix_shares(metrics: dict[str, float], fmt: str = ".0%") -> str:
    """The realistic mix's decision shares, largest first: "deepseek-v3 46%, gemini-3-pro 27%, ..."."""
    shares = sorted(((k.rsplit("/", 1)[1], v) for k, v in metrics.items() if k.startswith("mix/share/")),
                    key=lambda kv: -kv[1])
    return ", ".join(f"{m} {v:{fmt}}" for m, v in shares)


def format_table(metrics: dict[str, float]) -> str:
    df = quality_table(metrics)
    fmt = lambda v: f"{v:.3f}"  # noqa: E731
    lines = []
    two = [c for c in df.columns if c.endswith(("APGR", "CPT50", "CPT80"))]
    for fam in ("lobo", "loso", "heldout"):
        cols = [c for c in two if c.split(" ")[1] == fam and c.endswith("APGR")]
        if not cols:
            continue
        lines.append(f"== two-model APGR, {FAMILY_TITLES[fam]} (strong GPT-4 Turbo 1106 vs weak Mixtral-8x7B)")
        sub = df[cols].rename(columns=lambda c: c.split(" ")[0]).dropna(how="all")
        lines.append(sub.to_string(float_format=fmt, na_rep="-"))
    rb = [c for c in ("RB cost_ratio_to_match_best", "RB cost_to_match_best", "RB quality_at_best_cost",
                      "RB quality_at_half_best_cost") if c in df.columns]
    if rb:
        lines.append("== RouterBench test (N models, real dollar costs)")
        lines.append(df[rb].dropna(how="all").rename(columns=lambda c: c[3:]).to_string(float_format=fmt, na_rep="-"))
    if "routerbench/best_model_quality" in metrics:
        lines.append(f"RouterBench best single model: quality {metrics['routerbench/best_model_quality']:.3f} "
                     f"at ${metrics['routerbench/best_model_cost']:.2f} over "
                     f"{int(metrics['routerbench/n_prompts'])} test prompts")
    prod = sorted({k.split("/")[1] for k in metrics if k.startswith("product/")})
    for src in prod:
        p = f"product/{src}"
        if f"{p}/router/cost_ratio_to_match_best" in metrics:
            mix = ", ".join(f"{k.rsplit('/', 1)[1]} {v:.0%}" for k, v in metrics.items()
                            if k.startswith(f"{p}/router/mix/") and v > 0)
            lines.append(f"== product models, {src} (held out): cost to match the best offered model "
                         f"{metrics[f'{p}/router/cost_ratio_to_match_best']:.3f} of its cost; quality at its cost "
                         f"{metrics[f'{p}/router/quality_at_best_cost']:.3f} (best {metrics[f'{p}/best_model_quality']:.3f}); "
                         f"mix at the default knob: {mix}")
    if "mix/mean_expected_quality" in metrics:
        share = mix_shares(metrics)
        lines.append(f"== realistic mix (arena-hard + AlpacaEval instructions, {int(metrics['mix/n'])} prompts) "
                     f"at knob {metrics['mix/knob']:.2f}: {share}")
        lines.append(f"mean expected quality {metrics['mix/mean_expected_quality']:.3f} vs always-Opus "
                     f"{metrics['mix/reference_expected_quality']:.3f} ({metrics['mix/quality_vs_reference']:.1%}); "
                     f"estimated cost ${metrics['mix/cost']:.2f} vs ${metrics['mix/reference_cost']:.2f} "
                     f"({metrics['mix/cost_vs_reference']:.1%})")
    val = {k[4:]: v for k, v in metrics.items() if k.startswith("val/") and k.count("/") >= 2
           and k.endswith(("apgr", "macro_f1", "quality_at_half_best_cost"))}
    if val:
        lines.append("validation (what selection reads): " + ", ".join(f"{k} {v:.3f}" for k, v in sorted(val.items())))
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


def plot_two_model(results: dict, folder: Path) -> list[Path]:
    plt = _plt()
    paths = []
    for fam, bench in sorted({(f, b) for f, b, _ in results}):
        fig, ax = plt.subplots(figsize=(6, 4.5))
        items = sorted(((r, res) for (f, b, r), res in results.items() if (f, b) == (fam, bench)),
                       key=lambda kv: ROUTER_ORDER.index(kv[0]) if kv[0] in ROUTER_ORDER else 99)
        for router, r in items:
            style = "--" if router in ("random", "oracle") else "-"
            ax.plot(r.share, r.quality, style, marker="." if router == "router" else None,
                    label=f"{router} (APGR {r.apgr:.3f})")
        ax.set_xlabel("share of calls to the strong model")
        ax.set_ylabel("quality")
        ax.set_title(f"{bench} ({FAMILY_TITLES.get(fam, fam)})", fontsize=9)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        path = folder / f"two_model_{bench}_{fam}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def plot_n_model(ev, folder: Path, name: str = "routerbench", title: str = "RouterBench test") -> list[Path]:
    if ev is None:
        return []
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 5))
    ax.plot(ev.curve.frontier_cost, ev.curve.frontier_quality, "-", marker="o", label="router (served)")
    for n, cv in getattr(ev, "baselines", {}).items():
        style = "--" if n in ("random", "oracle") else ":"
        ax.plot(cv.frontier_cost, cv.frontier_quality, style, marker=".", label=n)
    ax.scatter(ev.single_cost, ev.single_quality, c="k", s=14, zorder=5, label="single models")
    for m, x, y in zip(ev.models, ev.single_cost, ev.single_quality):
        ax.annotate(m, (x, y), fontsize=6, alpha=0.7)
    ax.set_xscale("symlog", linthresh=0.01)
    ax.set_xlabel("total cost of the test prompts (USD)")
    ax.set_ylabel("quality (mean score)")
    ax.set_title(f"{title}: cost-quality frontier over the knob")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    path = folder / f"{name}_cost_quality.png"
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


__all__ = ["mix_shares", "two_model_metrics", "n_model_metrics", "classifier_metrics", "primary_metric", "quality_table",
           "format_table", "plot_two_model", "plot_n_model", "plot_confusion"]
