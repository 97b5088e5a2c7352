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
        # A/B arms (champion | challenger) and the challenger in shadow
        "arm_decisions": prometheus_client.Counter(
            name="autoroute_arm_decisions_total", documentation="decisions served per A/B arm", labelnames=["arm"]),
        "arm_cost": prometheus_client.Counter(
            name="autoroute_arm_estimated_cost_dollars_total",
            documentation="estimated cost of the served decisions per A/B arm", labelnames=["arm"]),
        "arm_latency": prometheus_client.Histogram(
            name="autoroute_arm_decision_latency_seconds", documentation="decision latency per A/B arm",
            labelnames=["arm"], buckets=LATENCY_BUCKETS),
        "arm_feedback": prometheus_client.Counter(
            name="autoroute_arm_feedback_total", documentation="feedback events per A/B arm",
            labelnames=["arm", "event"]),
        "arm_rating": prometheus_client.Counter(
            name="autoroute_arm_rating_sum", documentation="sum of the 1-5 ratings per A/B arm", labelnames=["arm"]),
        "shadow": prometheus_client.Counter(
            name="autoroute_shadow_decisions_total",
            documentation="challenger decisions made in shadow; agree: the same model as served",
            labelnames=["agree"]),
        "shadow_cost": prometheus_client.Counter(
            name="autoroute_shadow_estimated_cost_dollars_total",
            documentation="estimated cost of the shadow decisions had they been served"),
        "shadow_latency": prometheus_client.Histogram(
            name="autoroute_shadow_decision_latency_seconds", documentation="shadow decision latency",
            buckets=LATENCY_BUCKETS),
        "degraded": prometheus_client.Gauge(
            name="autoroute_degraded", documentation="1 when serving rules only", multiprocess_mode="max"),
    }


def decision(d, seconds: float, arm: str = "champion") -> None:
    m = _m()
    m["decisions"].labels(model=d.selected_model, tier=str(d.tier), task=d.task,
                          degraded=str(d.degraded).lower()).inc()
    m["latency"].observe(seconds)
    m["arm_decisions"].labels(arm=arm).inc()
    m["arm_latency"].labels(arm=arm).observe(seconds)
    if d.estimated_cost is not None:
        m["arm_cost"].labels(arm=arm).inc(d.estimated_cost)


def shadow(sh, served, seconds: float) -> None:
    m = _m()
    m["shadow"].labels(agree=str(sh.selected_model == served.selected_model).lower()).inc()
    m["shadow_latency"].observe(seconds)
    if sh.estimated_cost is not None:
        m["shadow_cost"].inc(sh.estimated_cost)


def feedback(event: str, routed: str, chosen: str | None, arm: str = "champion", rating: float | None = None) -> None:
    m = _m()
    m["feedback"].labels(event=event).inc()
    m["arm_feedback"].labels(arm=arm, event=event).inc()
    if rating is not None:
        m["arm_rating"].labels(arm=arm).inc(rating)
    if event == "override":
        m["overrides"].labels(routed_model=routed, chosen_model=chosen or "").inc()


def fallback(model: str, reason: str) -> None:
    kind = "cooldown" if "cooling down" in reason else "timeout" if "timed out" in reason else "5xx" if "answered 5" in reason else \
        "429" if "429" in reason else "stream" if "stream" in reason else "unreachable"
    _m()["fallbacks"].labels(model=model, reason=kind).inc()


def set_degraded(flag: bool) -> None:
    _m()["degraded"].set(1 if flag else 0)
