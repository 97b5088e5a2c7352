"""`make bench-serving` and `make soak`: how fast the service decides, on this machine.

1. In process: decision latency of the service's router (the champion from
   the BentoML store, else rules only - said loudly) for prompts of up to 64
   tokens, one request at a time, with no score cache (every prompt is new).
2. Over HTTP: a real `bentoml serve` on loopback driven by `wrk` (a C load
   generator, light on the CPU; `apt-get install wrk`) with serving/bench/route.lua:
   every prompt distinct, each connection paced (`--pace-ms` between requests):
   - sustained: `--rate` offered for `--duration` s (>= 300/s, p99 < 50 ms, no errors);
   - overload: 3x that rate: the excess must get 503/429 fast (p99 < 50 ms for
     the refusals) while the admitted keep p99 < 100 ms (each answer is timed
     by its echoed x-request-id, so the two get their own percentiles);
   - capacity: closed loop, against the service and against a bare BentoML
     endpoint returning a constant (serving/bench_constant.py): their ratio.
3. `soak`: the sustainable rate for 10 minutes: no errors, RSS growth < 10 %,
   every answered decision in the log.

    python -m serving.benchmark [--rate 300] [--duration 60]
    python -m serving.benchmark soak [--rate 100] [--duration 600]

Every number is printed with the machine's load average: on a shared machine
they measure the machine as much as the service. Exit 1 when a target is missed."""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def prompts(max_tokens: int = 64, tokenizer=None) -> list[str]:
    """The authored prompts (data/authored), cut to `max_tokens` tokens."""
    out = []
    for f in sorted((ROOT / "data" / "authored").glob("*.jsonl")):
        for line in f.read_text().splitlines():
            if line.strip():
                out.append(json.loads(line)["prompt"])
    out += ["hello", "thanks!", "Translate 'good morning' to French", "Summarize the plot of Hamlet",
            "What is 17 * 23?", "Write a haiku about routers"]
    cut = []
    for p in out:
        if tokenizer is not None:
            ids = tokenizer(p, add_special_tokens=False)["input_ids"][:max_tokens - 2]
            p = tokenizer.decode(ids)
        else:
            p = " ".join(p.split()[: int(max_tokens * 0.7)])
        if p.strip():
            cut.append(p)
    return cut


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))] if xs else float("nan")


# ----------------------------------------------------------------- in process
def in_process(n: int) -> dict:
    from autoroute.types import Request
    from serving.runtime import load_champion, load_serving_config, serving_overrides
    import bentoml

    overrides = [*serving_overrides(), "serving.on_model_error=degrade"]
    cfg = load_serving_config(overrides)
    try:
        stored = bentoml.models.BentoModel("autoroute-router:latest").stored
    except Exception:
        stored = None
    champ = load_champion(stored, cfg, overrides)
    router = champ.router
    scorer = router.scorer
    tok = scorer.bundle.classifier.tokenizer if scorer is not None else None
    pool = prompts(64, tok)
    rng = random.Random(0)
    for p in pool[:20]:                                  # warm-up (allocator, thread pools)
        router.route(Request.from_prompt(p + " warmup"))
    lat, cpu = [], []
    for i in range(n):
        text = f"{rng.choice(pool)} ({i})"               # never seen before: no cache anywhere
        t0, c0 = time.perf_counter(), time.thread_time()
        router.route(Request.from_prompt(text))
        lat.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.thread_time() - c0) * 1000)
    toks = [len(tok(p)["input_ids"]) for p in pool] if tok is not None else []
    return {"stack": ("learned, " + str(champ.runtime)) if scorer is not None
            else "rules only (no champion in the store: DEGRADED)",
            "model": str(stored.tag) if stored is not None and scorer is not None else None,
            "n": n, "p50_ms": statistics.median(lat), "cpu_p50_ms": statistics.median(cpu), "p99_ms": pct(lat, 99), "mean_ms": statistics.mean(lat),
            "max_tokens": max(toks) if toks else None, "prompts": len(pool)}


# ---------------------------------------------------------------------- HTTP
LUA = Path(__file__).with_name("bench") / "route.lua"


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (5 min {five:.1f}) on {os.cpu_count()} CPUs"


def wrk(url: str, prompts_file: Path, seconds: float, connections: int, pace_ms: float, path: str = "/route"
        ) -> dict:
    """One wrk run; the AUTOROUTE line of the Lua script, with latencies in ms."""
    env = dict(os.environ, AUTOROUTE_PROMPTS=str(prompts_file), AUTOROUTE_DELAY_MS=str(int(pace_ms)),
               AUTOROUTE_PATH=path)
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{int(seconds)}s", "--timeout", "5s", "-s", str(LUA), url]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=seconds + 60)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("AUTOROUTE ")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no result: {out.stdout[-2000:]}{out.stderr[-2000:]}")
    r = json.loads(line[len("AUTOROUTE "):])
    secs = r["duration_us"] / 1e6
    ok = r["statuses"].get("200", 0)
    refused = sum(v for k, v in r["statuses"].items() if k in ("429", "503"))
    def ms(part: dict) -> dict:
        return {k.replace("_us", "_ms"): v / 1000 if k.endswith("_us") else v for k, v in part.items()}

    return {"per_s": ok / secs, "offered_per_s": r["requests"] / secs, "ok": ok, "refused": refused,
            "other": r["requests"] - ok - refused, "socket_errors": sum(r["errors"][k] for k in
                                                                        ("connect", "read", "write", "timeout")),
            "statuses": r["statuses"], "p50_ms": r["p50_us"] / 1000, "p90_ms": r["p90_us"] / 1000,
            "p99_ms": r["p99_us"] / 1000, "max_ms": r["max_us"] / 1000, "connections": connections,
            "pace_ms": pace_ms, "load": load(), "admitted": ms(r["admitted"]), "refused_latency": ms(r["refused"])}


def split(name: str, part: dict) -> str:
    return (f"{name} {part['n']}: p50 {part['p50_ms']:.1f} ms, p99 {part['p99_ms']:.1f} ms, max {part['max_ms']:.1f} ms"
            if part.get("n") else f"{name} 0")


def show(name: str, r: dict) -> None:
    print(f"{name}: {r['connections']} connections paced {r['pace_ms']:.0f} ms: {r['per_s']:.1f} decisions/s "
          f"(offered {r['offered_per_s']:.1f}/s), p50 {r['p50_ms']:.1f} ms, p90 {r['p90_ms']:.1f} ms, "
          f"p99 {r['p99_ms']:.1f} ms, max {r['max_ms']:.1f} ms; {split('admitted', r['admitted'])}; "
          f"{split('refused (429/503)', r['refused_latency'])}; other errors {r['other']}, socket errors "
          f"{r['socket_errors']} (statuses {r['statuses']}); {r['load']}", flush=True)


def write_prompts(folder: Path) -> Path:
    path = folder / "prompts.jsonl"
    path.write_text("\n".join(json.dumps(p) for p in prompts(64)) + "\n")
    return path


def serve(tmp: Path, extra: list[str] | None = None):
    sys.path.insert(0, str(ROOT / "tests"))
    from serving_support import start_server

    overrides = ["serving.on_model_error=degrade", f"serving.log.db={tmp / 'log.sqlite'}", *(extra or [])]
    home = Path(os.environ.get("BENTOML_HOME") or Path.home() / ".autoroute" / "bentoml")
    return start_server(tmp, overrides, bentoml_home=home, timeout=600)


def logged(db: Path) -> int:
    import sqlite3
    return sqlite3.connect(db).execute("SELECT COUNT(*) FROM decisions").fetchone()[0]


def over_http(rate: float, duration: float, warmup: float, pace_ms: float, capacity_s: float) -> tuple[bool, dict]:
    import httpx
    sys.path.insert(0, str(ROOT / "tests"))
    from serving_support import free_port, wait_ready, Server

    ok = True
    with tempfile.TemporaryDirectory(prefix="autoroute-bench-") as tmp:
        tmp = Path(tmp)
        pf = write_prompts(tmp)
        server = serve(tmp)
        try:
            health = httpx.get(server.url + "/readyz", trust_env=False).json()
            print(f"service: {'DEGRADED rules only' if health['degraded'] else health['model']} "
                  f"({health.get('runtime')})", flush=True)
            conns = max(1, math.ceil(rate * pace_ms / 1000))
            wrk(server.url, pf, warmup, conns, pace_ms)
            sustained = wrk(server.url, pf, duration, conns, pace_ms)
            show(f"sustained (offered {rate:.0f}/s)", sustained)
            ok &= sustained["per_s"] >= 300 and sustained["p99_ms"] < 50 and sustained["ok"] == sum(
                sustained["statuses"].values()) and sustained["socket_errors"] == 0
            over = wrk(server.url, pf, duration, 3 * conns, pace_ms)
            show(f"overload (offered {3 * rate:.0f}/s)", over)
            adm, ref = over["admitted"], over["refused_latency"]
            ok &= (over["socket_errors"] == 0 and over["other"] == 0 and adm.get("n", 0) > 0
                   and adm["p99_ms"] < 100 and (not ref.get("n") or ref["p99_ms"] < 50))
            cap = wrk(server.url, pf, capacity_s, 32, 0)
            show("capacity (closed loop)", cap)
            time.sleep(1.0)
            n_logged = logged(tmp / "log.sqlite")
            answered = sum(r["ok"] for r in (sustained, over, cap))
            print(f"log: {n_logged} decisions logged for >= {answered} answered (warm-up included)", flush=True)
        finally:
            server.stop()
        port = free_port()
        env = dict(os.environ, BENTOML_DO_NOT_TRACK="true")
        with open(tmp / "constant.log", "wb") as out:
            proc = subprocess.Popen([str(Path(sys.executable).with_name("bentoml")), "serve",
                                     "serving.bench_constant:Constant", "--host", "127.0.0.1", "--port", str(port)],
                                    cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        bare = Server(f"http://127.0.0.1:{port}", proc, tmp / "constant.log", tmp / "none")
        try:
            wait_ready(bare, 120)
            wrk(bare.url, pf, warmup, 32, 0)
            const = wrk(bare.url, pf, capacity_s, 32, 0)
            show("bare BentoML constant endpoint (closed loop)", const)
        finally:
            bare.stop()
        print(f"ratio: the service answers {cap['per_s'] / const['per_s']:.2f}x the bare endpoint's rate "
              f"({cap['per_s']:.0f}/s vs {const['per_s']:.0f}/s)", flush=True)
    return ok, {"sustained": sustained, "overload": over, "capacity": cap, "constant": const}


def soak(rate: float, duration: float, pace_ms: float) -> bool:
    sys.path.insert(0, str(ROOT / "tests"))
    from serving_support import descendants

    with tempfile.TemporaryDirectory(prefix="autoroute-soak-") as tmp:
        tmp = Path(tmp)
        pf = write_prompts(tmp)
        server = serve(tmp)
        try:
            conns = max(1, math.ceil(rate * pace_ms / 1000))
            wrk(server.url, pf, 10, conns, pace_ms)                   # warm-up, then the first RSS sample

            def rss() -> float:
                total = 0
                for pid in [server.proc.pid, *descendants(server.proc.pid)]:
                    try:
                        with open(f"/proc/{pid}/status") as f:
                            total += next(int(ln.split()[1]) for ln in f if ln.startswith("VmRSS:"))
                    except (OSError, StopIteration):
                        pass
                return total / 1024
            samples = [rss()]
            before = logged(tmp / "log.sqlite")
            import threading                                          # wrk in a thread: sample RSS meanwhile
            result: dict = {}
            t = threading.Thread(target=lambda: result.update(wrk(server.url, pf, duration, conns, pace_ms)))
            t.start()
            while t.is_alive():
                t.join(timeout=10)
                samples.append(rss())
            time.sleep(1.0)
            n_logged = logged(tmp / "log.sqlite") - before
        finally:
            server.stop()
    show(f"soak (offered {rate:.0f}/s for {duration:.0f} s)", result)
    growth = samples[-1] / samples[0] - 1
    print(f"RSS (server and workers): {samples[0]:.0f} MB -> {samples[-1]:.0f} MB ({100 * growth:+.1f} %), "
          f"max {max(samples):.0f} MB; {n_logged} decisions logged for {result['ok']} answered", flush=True)
    return (result["ok"] == sum(result["statuses"].values()) and result["socket_errors"] == 0
            and growth < 0.10 and n_logged >= result["ok"])


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "soak":
        p = argparse.ArgumentParser(description="autoroute soak test")
        p.add_argument("--rate", type=float, default=100.0)
        p.add_argument("--duration", type=float, default=600.0)
        p.add_argument("--pace-ms", type=float, default=100.0)
        a = p.parse_args(argv[1:])
        ok = soak(a.rate, a.duration, a.pace_ms)
        print("soak passed" if ok else "SOAK FAILED", flush=True)
        return 0 if ok else 1
    p = argparse.ArgumentParser(description="autoroute serving benchmark")
    p.add_argument("--rate", type=float, default=300.0, help="requests per second offered (paced connections)")
    p.add_argument("--duration", type=float, default=60.0)
    p.add_argument("--warmup", type=float, default=5.0)
    p.add_argument("--pace-ms", type=float, default=100.0, help="pause between requests on each connection")
    p.add_argument("--capacity-s", type=float, default=20.0, help="closed-loop runs (service and bare endpoint)")
    p.add_argument("--in-process", type=int, default=500, help="decisions timed in process")
    p.add_argument("--skip-http", action="store_true")
    args = p.parse_args(argv)
    ok = True
    ip = in_process(args.in_process)
    print(f"in process [{ip['stack']}{', ' + ip['model'] if ip['model'] else ''}]: {ip['n']} decisions, "
          f"prompts <= {ip['max_tokens'] or 64} tokens, no cache: p50 {ip['p50_ms']:.2f} ms, "
          f"p99 {ip['p99_ms']:.2f} ms, mean {ip['mean_ms']:.2f} ms (CPU time p50 {ip['cpu_p50_ms']:.2f} ms; "
          f"{load()})", flush=True)
    ok &= ip["p50_ms"] < 5.0
    if not args.skip_http:
        if subprocess.run(["which", "wrk"], capture_output=True).returncode != 0:
            raise SystemExit("wrk is not installed: apt-get install -y wrk")
        http_ok, _ = over_http(args.rate, args.duration, args.warmup, args.pace_ms, args.capacity_s)
        ok &= http_ok
    print("targets met" if ok else "TARGETS MISSED", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
