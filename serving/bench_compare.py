"""`make bench-compare`: in-process decision latency of two or more code versions in
one run, on the same machine, the same bundle and the same prompts.

    python -m serving.bench_compare [--bundle <bundle folder>] [--refs fd1ec37 2fdcf27 .]
        [--n 300] [--rounds 6] [--out latency.json]

The bundle defaults to the champion in the BentoML store. Each ref is a git commit (its `src/` is exported with `git archive` into a temporary
folder; `.` is this checkout). Every round runs one subprocess per ref, in a rotated
order, which loads the bundle's learned parts with that version's
`autoroute.bundle.load_scorer` (int8 encoder, one encoder pass for the task
probabilities and the preference features) under that version's own config
(catalog, rules, settings: bundles of one version do not always load in
another's config), warms up, and times `Router.route`
on `--n` prompts of up to 64 tokens (serving.benchmark.prompts), each made new (no
cache). Alternating the versions within one run spreads the machine's other load over
all of them; the paired per-round p50 differences say how much of a gap is noise.
Prints p50/p99 per version with the load average; exit 1 when a version's p50 exceeds
the first one's by more than `--budget-ms` (1 ms: issue 9's latency bound). The
thread CPU time per decision is printed beside the wall time: on a loaded machine it
moves much less with the other processes' load than the wall time does."""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from serving.benchmark import load, pct, prompts

ROOT = Path(__file__).resolve().parents[1]

WORKER = r"""
import json, sys, time
import torch
torch.set_num_threads(1)
from autoroute.bundle import load_scorer
from autoroute.config import build_router, load_config
from autoroute.types import Request
bundle, prompts_file, n, tag = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
pool = json.load(open(prompts_file))
router = build_router(load_config(), scorer=load_scorer(bundle, quantize=True))
for p in pool[:20]:
    router.route(Request.from_prompt(p + " warmup"))
lat, cpu = [], []
for i in range(n):
    text = f"{pool[i % len(pool)]} ({tag} {i})"
    t0, c0 = time.perf_counter(), time.thread_time()
    d = router.route(Request.from_prompt(text))
    lat.append((time.perf_counter() - t0) * 1000)
    cpu.append((time.thread_time() - c0) * 1000)
print(json.dumps({"lat": lat, "cpu": cpu, "tier": d.tier}))
"""


def export(ref: str, into: Path) -> Path:
    """The `src/` folder of `ref` (`.` = this checkout), its `conf/` beside it."""
    if ref == ".":
        return ROOT / "src"
    dest = into / ref
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", ref, "src", "conf", "pyproject.toml"], cwd=ROOT, capture_output=True,
                             check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest / "src"


def measure(src: Path, bundle: str, prompts_file: Path, n: int, tag: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, "-c", WORKER, bundle, str(prompts_file), str(n), tag],
                          capture_output=True, text=True, env=env, cwd=tempfile.gettempdir())
    if proc.returncode != 0:
        raise SystemExit(f"bench_compare: {tag} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", default=None, help="a bundle folder every version can load (default: the "
                    "champion in the BentoML store)")
    ap.add_argument("--refs", nargs="+", default=["fd1ec37", "2fdcf27", "."],
                    help="git commits; the first is the reference ('.' = this checkout)")
    ap.add_argument("--n", type=int, default=300, help="decisions timed per subprocess")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--budget-ms", type=float, default=1.0)
    ap.add_argument("--out", default=None, help="write the numbers as JSON here")
    args = ap.parse_args(argv)
    if args.bundle is None:
        from autoroute.bundle import bentoml_bundle_path
        try:
            args.bundle = str(bentoml_bundle_path())
        except Exception as e:   # noqa: BLE001 - said plainly, with what to do
            raise SystemExit(f"bench_compare: no champion in the BentoML store ({e}); pass --bundle <folder>")
    if not (Path(args.bundle) / "manifest.json").exists():
        raise SystemExit(f"bench_compare: {args.bundle} is not a bundle folder (no manifest.json)")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(Path(args.bundle) / "classifier" / "encoder")
    with tempfile.TemporaryDirectory() as tmp:
        pf = Path(tmp) / "prompts.json"
        pf.write_text(json.dumps(prompts(64, tok)))
        srcs = {ref: export(ref, Path(tmp)) for ref in args.refs}
        lat: dict[str, list[float]] = {r: [] for r in args.refs}
        cpu: dict[str, list[float]] = {r: [] for r in args.refs}
        rounds: dict[str, list[float]] = {r: [] for r in args.refs}
        loads = [load()]
        for k in range(args.rounds):
            order = args.refs[k % len(args.refs):] + args.refs[:k % len(args.refs)]
            for ref in order:
                got = measure(srcs[ref], str(Path(args.bundle).resolve()), pf, args.n, f"{ref} r{k}")
                lat[ref] += got["lat"]
                cpu[ref] += got["cpu"]
                rounds[ref].append(statistics.median(got["lat"]))
            loads.append(load())
            print(f"round {k + 1}/{args.rounds}: " + ", ".join(f"{r} p50 {rounds[r][-1]:.2f} ms" for r in args.refs)
                  + f"  [{loads[-1]}]", flush=True)
    base = args.refs[0]
    res = {"bundle": str(args.bundle), "n_per_round": args.n, "rounds": args.rounds, "loads": loads, "refs": {}}
    ok = True
    print(f"\nin-process Router.route, learned stack (load_scorer int8 + each version's config), {args.rounds} rounds x {args.n} decisions "
          f"per version; bundle {args.bundle}")
    for ref in args.refs:
        d = [a - b for a, b in zip(rounds[ref], rounds[base])]
        r = {"p50_ms": statistics.median(lat[ref]), "p99_ms": pct(lat[ref], 99), "mean_ms": statistics.mean(lat[ref]),
             "round_p50_ms": rounds[ref], "p50_minus_first_by_round_ms": d,
             "p50_minus_first_ms": statistics.median(lat[ref]) - statistics.median(lat[base]),
             "cpu_p50_ms": statistics.median(cpu[ref]), "cpu_p99_ms": pct(cpu[ref], 99),
             "cpu_p50_minus_first_ms": statistics.median(cpu[ref]) - statistics.median(cpu[base])}
        res["refs"][ref] = r
        within = r["p50_minus_first_ms"] <= args.budget_ms
        ok &= within
        print(f"  {ref:10s} p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms  mean {r['mean_ms']:.2f} ms  "
              f"(thread CPU p50 {r['cpu_p50_ms']:.2f} ms"
              + ("" if ref == base else f", {r['cpu_p50_minus_first_ms']:+.2f} vs {base}") + ")"
              + ("" if ref == base else f"   p50 - {base}: {r['p50_minus_first_ms']:+.2f} ms (per round "
                 f"{min(d):+.2f} .. {max(d):+.2f}; budget +{args.budget_ms} ms: {'within' if within else 'EXCEEDED'})"))
    print(f"load average: before {loads[0]}; after {loads[-1]}")
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
