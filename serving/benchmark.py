"""`make bench-serving`: how fast the service decides, on this machine.

1. In process: decision latency of the service's router (the champion from
   the BentoML store, else rules only - said loudly) for prompts of up to 64
   tokens, one request at a time, with no score cache (every prompt is new).
2. Over HTTP: a real `bentoml serve` on loopback, driven open-loop at a fixed
   rate for `--duration` seconds by a load generator in its own process;
   every prompt is distinct (no cache hits) unless --repeat is given.

    python -m serving.benchmark [--rate 320] [--duration 60] [--repeat 0.0]

Prints decisions/s sustained, p50/p99 latency, errors; exits 1 when a target
(>= 300/s, p99 < 50 ms, no errors, in-process p50 < 5 ms) is missed."""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
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
def _load(url: str, rate: float, duration: float, warmup: float, repeat: float, pool: list[str], out) -> None:
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    import aiohttp

    async def main():
        lat, errors, statuses = [], 0, {}
        rng = random.Random(1)
        conn = aiohttp.TCPConnector(limit=512, force_close=False)
        async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=30)) as s:
            async def one(i, record):
                nonlocal errors
                text = rng.choice(pool) if rng.random() < repeat else f"{rng.choice(pool)} (#{i})"
                body = json.dumps({"messages": [{"role": "user", "content": text}], "user_id": f"u{i % 500}"})
                t0 = time.perf_counter()
                try:
                    async with s.post(url + "/route", data=body,
                                      headers={"content-type": "application/json"}) as r:
                        await r.read()
                        status = r.status
                except Exception:
                    status = -1
                dt = (time.perf_counter() - t0) * 1000
                if record:
                    statuses[status] = statuses.get(status, 0) + 1
                    if status == 200:
                        lat.append(dt)
                    else:
                        errors += 1

            tasks = []
            start = time.perf_counter()
            total = warmup + duration
            i = 0
            while True:
                now = time.perf_counter() - start
                if now >= total:
                    break
                due = i / rate
                if due > now:
                    await asyncio.sleep(due - now)
                tasks.append(asyncio.create_task(one(i, (i / rate) >= warmup)))
                i += 1
            sent_measured = sum(1 for k in range(i) if k / rate >= warmup)
            await asyncio.gather(*tasks)
            wall = time.perf_counter() - start - warmup
        out.put({"sent": sent_measured, "ok": len(lat), "errors": errors, "statuses": statuses,
                 "seconds": duration, "wall_s": wall, "rate_target": rate,
                 "decisions_per_s": len(lat) / duration, "p50_ms": pct(lat, 50), "p90_ms": pct(lat, 90),
                 "p99_ms": pct(lat, 99), "max_ms": max(lat) if lat else float("nan")})

    asyncio.run(main())


def over_http(rate: float, duration: float, warmup: float, repeat: float) -> dict:
    sys.path.insert(0, str(ROOT / "tests"))
    import httpx
    from serving_support import start_server

    with tempfile.TemporaryDirectory(prefix="autoroute-bench-") as tmp:
        tmp = Path(tmp)
        overrides = ["serving.on_model_error=degrade", f"serving.log.db={tmp / 'log.sqlite'}"]
        home = Path(os.environ.get("BENTOML_HOME") or Path.home() / ".autoroute" / "bentoml")
        server = start_server(tmp, overrides, bentoml_home=home)
        try:
            health = httpx.get(server.url + "/readyz", trust_env=False).json()
            pool = prompts(64)
            q = mp.get_context("spawn").Queue()
            proc = mp.get_context("spawn").Process(target=_load, args=(server.url, rate, duration, warmup, repeat,
                                                                      pool, q))
            proc.start()
            res = q.get(timeout=duration + warmup + 120)
            proc.join(timeout=30)
            metrics = httpx.get(server.url + "/metrics", trust_env=False).text
            res["server_decisions"] = sum(float(ln.rsplit(" ", 1)[1]) for ln in metrics.splitlines()
                                          if ln.startswith("autoroute_decisions_total{"))
            res["degraded"] = health["degraded"]
            res["model"] = health["model"]
            import sqlite3
            time.sleep(0.5)
            res["logged_decisions"] = sqlite3.connect(tmp / "log.sqlite").execute(
                "SELECT COUNT(*) FROM decisions").fetchone()[0]
        finally:
            server.stop()
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="autoroute serving benchmark")
    p.add_argument("--rate", type=float, default=320.0, help="requests per second offered (open loop)")
    p.add_argument("--duration", type=float, default=60.0)
    p.add_argument("--warmup", type=float, default=5.0)
    p.add_argument("--repeat", type=float, default=0.0, help="share of requests that reuse a prompt (cache hits)")
    p.add_argument("--in-process", type=int, default=500, help="decisions timed in process")
    p.add_argument("--skip-http", action="store_true")
    args = p.parse_args(argv)
    ok = True
    ip = in_process(args.in_process)
    print(f"in process [{ip['stack']}{', ' + ip['model'] if ip['model'] else ''}]: {ip['n']} decisions, "
          f"prompts <= {ip['max_tokens'] or 64} tokens, no cache: p50 {ip['p50_ms']:.2f} ms, "
          f"p99 {ip['p99_ms']:.2f} ms, mean {ip['mean_ms']:.2f} ms (CPU time p50 {ip['cpu_p50_ms']:.2f} ms; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)", flush=True)
    ok &= ip["p50_ms"] < 5.0
    if not args.skip_http:
        r = over_http(args.rate, args.duration, args.warmup, args.repeat)
        print(f"over HTTP [{'DEGRADED rules only' if r['degraded'] else r['model']}]: offered {args.rate:.0f}/s for "
              f"{args.duration:.0f} s (after {args.warmup:.0f} s warm-up), repeat share {args.repeat:.2f}: "
              f"{r['decisions_per_s']:.1f} decisions/s, p50 {r['p50_ms']:.1f} ms, p90 {r['p90_ms']:.1f} ms, "
              f"p99 {r['p99_ms']:.1f} ms, max {r['max_ms']:.1f} ms, errors {r['errors']} "
              f"(statuses {r['statuses']}); logged {r['logged_decisions']} decisions", flush=True)
        ok &= r["decisions_per_s"] >= 300 and r["p99_ms"] < 50 and r["errors"] == 0
    print("targets met" if ok else "TARGETS MISSED", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
