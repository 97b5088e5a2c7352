"""What the service runs on: the serving config, the champion router composed
once (autoroute.compose builds its scorer; or the rules-only router in
degraded mode), live Tier 4 refits from the feedback log, and the
micro-batcher that lets concurrent /route calls share one encoder pass."""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
from omegaconf import DictConfig, OmegaConf

from autoroute.scoring import NoUserPreference, UserPreference

log = logging.getLogger("autoroute.serving")
OVERRIDES_ENV = "AUTOROUTE_SERVING_OVERRIDES"


class ModelLoadError(RuntimeError):
    pass


# ------------------------------------------------------------------ config
def serving_overrides() -> list[str]:
    """Overrides from AUTOROUTE_SERVING_OVERRIDES (a JSON list of strings)."""
    raw = os.environ.get(OVERRIDES_ENV, "").strip()
    if not raw:
        return []
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as err:
        raise SystemExit(f"{OVERRIDES_ENV} must be a JSON list of overrides: {err}") from err
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SystemExit(f"{OVERRIDES_ENV} must be a JSON list of strings")
    return value


def load_serving_config(overrides: Sequence[str] = ()) -> DictConfig:
    """The project config with the `serving` group (added when config.yaml lacks it)."""
    from autoroute.config import load_config

    base = load_config([])
    extra = [] if "serving" in base else ["+serving=default"]
    return load_config([*extra, *overrides])


def user_overrides(overrides: Sequence[str]) -> list[str]:
    """The overrides that concern the router (passed on to the bundle's config snapshot)."""
    return [o for o in overrides if not o.lstrip("+~").startswith("serving")]


# ------------------------------------------------------------------ tier 4
class LiveUserPreference(UserPreference):
    """Tier 4 as served: the bundle's fitted model (`base`) plus the user and
    org terms refit from the feedback log since the bundle was trained; a
    refit replaces the previous one atomically."""

    def __init__(self, base: UserPreference | None):
        self.base = base if base is not None else NoUserPreference()
        self.current: UserPreference = self.base
        self.refreshed_at = 0.0
        self.events = 0

    @property
    def profiles(self) -> int:
        table = getattr(self.current, "table", {}) or {}
        return sum(1 for k in table if k != "global")

    def swap(self, pref: UserPreference, events: int) -> None:
        self.current = pref
        self.events = events
        self.refreshed_at = time.time()

    def view(self, user_id, org_id, models, task=None):
        return self.current.view(user_id, org_id, models, task)


class Tier4Refresher:
    """Refits Tier 4 from the log every `period` seconds and soon after feedback."""

    def __init__(self, store, pref: LiveUserPreference, settings, period: float, levels: Sequence[str] = ("org", "user")):
        self.store, self.pref, self.settings, self.period = store, pref, settings, max(period, 0.05)
        self.levels = tuple(levels)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="autoroute-tier4", daemon=True)
        self.last_error: str | None = None
        self.fit_ms = 0.0

    def start(self) -> "Tier4Refresher":
        self.refresh()
        self._thread.start()
        return self

    def poke(self) -> None:
        self._wake.set()

    def refresh(self) -> None:
        from autoroute.user_preference import fit_tier4
        try:
            frame = self.store.feedback_frame()
            if len(frame) == self.pref.events and self.pref.refreshed_at:
                return
            t0 = time.perf_counter()
            model = fit_tier4(frame, self.settings, levels=self.levels, parent=self.pref.base)
            self.fit_ms = round((time.perf_counter() - t0) * 1000, 2)
            self.pref.swap(model, len(frame))
            self.last_error = None
        except Exception as err:  # keep serving with the previous fit
            self.last_error = f"{type(err).__name__}: {err}"
            log.exception("Tier 4 refresh failed")

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.period)
            self._wake.clear()
            if self._stop.is_set():
                break
            self.refresh()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()


def arm_of(user_id: str | None, org_id: str | None, share: float, salt: str) -> str:
    """A/B arm by a stable hash of the user (the org when there is no user; no
    identity -> champion): the same user always lands in the same arm."""
    who = user_id or (f"org:{org_id}" if org_id else None)
    if who is None or share <= 0:
        return "champion"
    h = int.from_bytes(hashlib.sha256(f"{salt}:{who}".encode()).digest()[:8], "big") / 2.0 ** 64
    return "challenger" if h < share else "champion"


# ----------------------------------------------------------------- loading
@dataclass
class Champion:
    router: Any
    degraded: bool
    model_tag: str | None
    problem: str | None = None
    runtime: str | None = None


def load_champion(stored_model, cfg: DictConfig, overrides: Sequence[str], tag: str = "autoroute-router:latest",
                  live_tier4: Callable[[UserPreference | None], UserPreference] | None = None) -> Champion:
    """The served router, composed once (`autoroute.compose.served_router`): the champion
    bundle (`stored_model`, the BentoML store entry for `tag`, or None when absent) with
    the scorer parts of `serving.scorer` / `serving.encoder`, and Tier 4 as
    `live_tier4(bundle table)`."""
    from hydra.utils import instantiate

    from autoroute.config import build_router

    policy = str(cfg.serving.on_model_error)
    if policy not in ("refuse", "degrade"):
        raise ModelLoadError(f"serving.on_model_error must be refuse or degrade, not {policy!r}")
    live = live_tier4 or (lambda base: base)
    problem = None
    if stored_model is None:
        problem = (f"the champion {tag!r} is not in the BentoML model store "
                   f"({os.environ.get('BENTOML_HOME', '~/bentoml')}); train and register one with "
                   "`python -m training.run`")
    else:
        try:
            from autoroute.compose import served_router
            router = served_router(stored_model.path, cfg.serving, user_overrides(overrides), str(stored_model.tag),
                                   live)
            note = getattr(router.scorer, "note", None)
            log.info("champion %s loaded: %s", stored_model.tag, note)
            return Champion(router, bool(getattr(router, "degraded", False)), str(stored_model.tag), runtime=note)
        except Exception as err:  # a broken bundle must not take the service down silently
            problem = f"the champion {stored_model.tag} could not be loaded: {type(err).__name__}: {err}"
    if policy == "refuse":
        raise ModelLoadError(problem + "; refusing to start (set serving.on_model_error=degrade "
                             "to serve rules only)")
    log.warning("%s; serving rules only (degraded)", problem)
    base = instantiate(cfg.router.user_preference) if cfg.router.get("user_preference") is not None else None
    return Champion(build_router(cfg, user_preference=live(base), degraded=True), True, None, problem)


def load_challenger(tag: str, cfg: DictConfig, overrides: Sequence[str],
                    live_tier4: Callable[[UserPreference | None], UserPreference] | None = None):
    """The challenger's router from the BentoML store, composed like the champion's:
    (router, None), or (None, the problem) - the service then runs without it."""
    import bentoml
    try:
        stored = bentoml.models.get(tag)
    except Exception as err:  # noqa: BLE001 - absent or unreadable: serve without it, say why
        return None, f"the challenger {tag!r} is not in the BentoML model store: {type(err).__name__}: {err}"
    try:
        champ = load_champion(stored, cfg, overrides, tag, live_tier4)
    except ModelLoadError as err:
        return None, f"the challenger {tag}: {err}"
    if champ.degraded:
        return None, f"the challenger {tag}: {champ.problem}"
    return champ.router, None


def check_bundle(stored_model, tag: str = "autoroute-router:latest") -> str | None:
    """A cheap pre-flight check (no model weights loaded): the problem, or None."""
    if stored_model is None:
        return (f"the champion {tag!r} is not in the BentoML model store "
                f"({os.environ.get('BENTOML_HOME', '~/bentoml')}); train and register one with "
                "`python -m training.run`; refusing to start (set serving.on_model_error=degrade to serve "
                "rules only)")
    try:
        from autoroute.bundle import read_manifest
        read_manifest(stored_model.path)
    except Exception as err:
        return f"the champion {stored_model.tag} is not a readable bundle: {err}; refusing to start"
    return None


# ---------------------------------------------------------------- batching
class MicroBatcher:
    """Collects concurrent calls for up to `window_ms` (or `max_batch` items) and
    runs them as one batch in a worker thread; at most `concurrency` batches in
    flight (the encoder releases the GIL: a second batch encodes on another
    core), the next one filling while they run."""

    def __init__(self, fn: Callable[[list], list], max_batch: int = 64, window_ms: float = 2.0,
                 concurrency: int = 1):
        self.fn = fn
        self.max_batch = max(1, int(max_batch))
        self.window = max(0.0, float(window_ms)) / 1000.0
        self.concurrency = max(1, int(concurrency))
        self._pending: list[tuple[Any, asyncio.Future]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._running = 0
        self.batches = self.items = 0
        self.cpu_s = 0.0

    def _timed(self, items):
        c0 = time.thread_time()
        try:
            return self.fn(items)
        finally:
            self.cpu_s += time.thread_time() - c0     # (GIL-serialized: no lost update)

    def stats(self) -> dict[str, float]:
        return {"batches": self.batches, "items": self.items,
                "mean_batch": round(self.items / self.batches, 2) if self.batches else 0.0,
                "cpu_ms_per_item": round(1000 * self.cpu_s / self.items, 3) if self.items else 0.0}

    async def submit(self, item):
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._pending.append((item, fut))
        if len(self._pending) >= self.max_batch:
            self._kick(loop)
        elif self._timer is None and self._running < self.concurrency:
            self._timer = loop.call_later(self.window, self._kick, loop)
        return await fut

    def _kick(self, loop) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._running >= self.concurrency or not self._pending:
            return
        batch, self._pending = self._pending[:self.max_batch], self._pending[self.max_batch:]
        self._running += 1
        loop.create_task(self._run(batch, loop))

    async def _run(self, batch, loop) -> None:
        try:
            results = await asyncio.to_thread(self._timed, [it for it, _ in batch])
            self.batches += 1
            self.items += len(batch)
            for (_, fut), res in zip(batch, results):
                if not fut.done():
                    if isinstance(res, BaseException):
                        fut.set_exception(res)
                    else:
                        fut.set_result(res)
        except BaseException as err:
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(err)
        finally:
            self._running -= 1
            if self._pending:
                self._kick(loop)


def route_many(router, requests: list) -> list:
    """route_batch with per-request isolation: one bad request fails alone."""
    from autoroute.types import RoutingError
    try:
        return router.route_batch(requests)
    except RoutingError:
        if len(requests) == 1:
            raise
    out = []
    for r in requests:
        try:
            out.append(router.route(r))
        except Exception as err:
            out.append(err)
    return out


def bundle_info(stored_model) -> dict[str, Any]:
    if stored_model is None:
        return {}
    info = {"tag": str(stored_model.tag)}
    try:
        info["created"] = stored_model.info.creation_time.isoformat()
        info["metadata"] = dict(stored_model.info.metadata or {})
    except Exception:
        pass
    return info


def to_plain(node) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


__all__ = ["LiveUserPreference", "Tier4Refresher", "MicroBatcher", "load_champion", "load_challenger", "arm_of",
           "load_serving_config", "serving_overrides", "route_many", "ModelLoadError", "Champion",
           "check_bundle"]
