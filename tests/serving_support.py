"""Helpers for the serving tests: the overrides of a test server (tmp log,
fake upstream, API keys); starting and stopping `bentoml serve` is
serving/launch.py."""
from __future__ import annotations

import hashlib
from pathlib import Path

from serving.launch import ROOT, Server, descendants, free_port, start_server, wait_ready  # noqa: F401

# admin: scope admin only; gamma: the feedback tests' own org (its overrides shape org-level Tier 4)
KEYS = {"acme": "test-key-acme", "beta": "test-key-beta", "gamma": "test-key-gamma", "admin": "test-key-admin"}
ADMIN_KEY = KEYS["admin"]            # the dashboard's data needs the admin scope


def sha256(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def serving_overrides(tmp: Path, upstream_url: str | None = None, *, keys: bool = True,
                      extra: list[str] | None = None) -> list[str]:
    """Overrides for a test server: degraded unless a model is in the store, tmp log,
    providers pointed at the fake upstream, short timeouts, fast Tier 4 refits."""
    out = ["serving.on_model_error=degrade", f"serving.log.db={tmp / 'log.sqlite'}",
           "serving.tier4.refresh_s=0.2", "serving.limits.max_prompt_chars=2000", "serving.limits.max_batch=16",
           "serving.proxy.timeout_s=1.0", "serving.proxy.max_fallbacks=2"]
    if upstream_url:
        for prov in ("openai", "anthropic", "google", "deepseek", "mistralai"):
            out.append(f"serving.proxy.providers.{prov}.base_url={upstream_url}")
    if keys:
        entries = ",".join(f"{{org:{org},sha256:'{sha256(key)}'}}" for org, key in KEYS.items() if org != "admin")
        admin = sha256(KEYS["admin"])
        out.append(f"serving.auth.keys=[{entries},{{sha256:'{admin}',scopes:[admin]}}]")
    return out + list(extra or [])
