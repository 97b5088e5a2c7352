"""Benchmark: Tier 1+2 decision latency in process (rules and catalog priors,
no learned scorer) for a 2,000-token conversation. Prints p50/p99/max.

    python -m autoroute.bench_rules [--n 5000] [--tokens 2000]
"""
from __future__ import annotations

import argparse
import random
import time

import numpy as np

from autoroute import signals
from autoroute.config import build_router, load_config
from autoroute.types import Message, Request

SNIPPETS = [
    "Could you look at the function below and tell me why the totals are off by one?",
    "```python\nfor i in range(len(rows) - 1):\n    total += rows[i].amount\n```",
    "Sure - the loop stops one row early because range excludes its end.",
    "Thanks. Also, what would a cleaner version look like with sum() and a generator?",
    "Here is the quarterly table: Q1 120, Q2 135, Q3 128, Q4 160 (in thousands of EUR).",
    "Let's plan the migration: staging first, then a canary, then the full rollout.",
]


def conversation(tokens: int, seed: int, chars_per_token: float = 4.0) -> Request:
    rng = random.Random(seed)
    msgs, chars, role = [], 0, "user"
    while chars < tokens * chars_per_token:
        text = " ".join(rng.choice(SNIPPETS) for _ in range(rng.randint(2, 6)))
        msgs.append(Message(role=role, content=text))
        chars += len(text)
        role = "assistant" if role == "user" else "user"
    if msgs[-1].role != "user":
        msgs.append(Message(role="user", content="And how would you fix it?"))
    return Request(messages=msgs)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--tokens", type=int, default=2000)
    args = ap.parse_args(argv)
    router = build_router(load_config())
    requests = [conversation(args.tokens, seed) for seed in range(50)]
    for r in requests:
        router.route(r)                       # warm up
    est = router.route(requests[0]).estimated_tokens
    print(f"Tier 1+2 decision latency, {args.n} decisions per case, conversations of ~{est} tokens "
          f"({len(requests[0].messages)} messages), one thread:")
    res = {}
    for case, cold in (("cold (every message scanned)", True), ("chat (history scanned on earlier turns)", False)):
        lat = np.empty(args.n)
        for i in range(args.n):
            req = requests[i % len(requests)]
            if cold:
                signals._CACHE.data.clear()
            t = time.perf_counter()
            router.route(req)
            lat[i] = (time.perf_counter() - t) * 1000
        key = "cold" if cold else "chat"
        res[key] = {"p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
                    "max_ms": float(lat.max())}
        r = res[key]
        print(f"  {case:42s} p50 {r['p50_ms']:.3f} ms   p99 {r['p99_ms']:.3f} ms   max {r['max_ms']:.3f} ms"
              f"   (target p99 < 1 ms: {'met' if r['p99_ms'] < 1.0 else 'NOT met'})")
    return res


if __name__ == "__main__":
    main()
