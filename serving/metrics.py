"""Prometheus metrics, exported on the service's /metrics next to BentoML's
own: decisions by model, tier and task; decision latency; feedback and
overrides; upstream fallbacks."""
from __future__ import annotations

from functools import lru_cache

import prometheus_client

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)


@lru_cache(maxsize=1)
def _m():
    return {
        "decisions": prometheus_client.Counter(
            name="autoroute_decisions_total", documentation="routing decisions",
            labelnames=["model", "tier", "task", "degraded"]),
        "latency": prometheus_client.Histogram(
            name="autoroute_decision_latency_seconds", documentation="decision latency in the service",
            buckets=LATENCY_BUCKETS),
        "feedback": prometheus_client.Counter(
            name="autoroute_feedback_total", documentation="feedback events", labelnames=["event"]),
        "overrides": prometheus_client.Counter(
            name="autoroute_overrides_total", documentation="overrides: the user switched models",
            labelnames=["routed_model", "chosen_model"]),
        "fallbacks": prometheus_client.Counter(
            name="autoroute_fallbacks_total", documentation="upstream failures that moved to the next model",
            labelnames=["model", "reason"]),
        "degraded": prometheus_client.Gauge(
            name="autoroute_degraded", documentation="1 when serving rules only", multiprocess_mode="max"),
    }


def decision(d, seconds: float) -> None:
    m = _m()
    m["decisions"].labels(model=d.selected_model, tier=str(d.tier), task=d.task,
                          degraded=str(d.degraded).lower()).inc()
    m["latency"].observe(seconds)


def feedback(event: str, routed: str, chosen: str | None) -> None:
    m = _m()
    m["feedback"].labels(event=event).inc()
    if event == "override":
        m["overrides"].labels(routed_model=routed, chosen_model=chosen or "").inc()


def fallback(model: str, reason: str) -> None:
    kind = "cooldown" if "cooling down" in reason else "timeout" if "timed out" in reason else "5xx" if "answered 5" in reason else \
        "429" if "429" in reason else "stream" if "stream" in reason else "unreachable"
    _m()["fallbacks"].labels(model=model, reason=kind).inc()


def set_degraded(flag: bool) -> None:
    _m()["degraded"].set(1 if flag else 0)
