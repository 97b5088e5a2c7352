"""autoroute over HTTP: the champion router with its rule tiers, a durable
decision and feedback log, live Tier 4, and an OpenAI-compatible proxy.

    bentoml serve serving.service:AutoRoute --port 3000

Config: the project's `serving` group (conf/serving/default.yaml), changed
with AUTOROUTE_SERVING_OVERRIDES='["serving.on_model_error=degrade", ...]'."""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import bentoml
import orjson
from fastapi import FastAPI, Query
from fastapi import Request as HttpRequest
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse
from starlette.responses import JSONResponse as PlainJSON
from starlette.responses import Response

from autoroute.types import Area, Decision, Request, RoutingError
from serving import dashboard, metrics
from serving.admission import Admission
from serving.auth import AuthError, KeyRing
from serving.feedback import FeedbackRejected, feedback_row
from serving.guard import Guard, error_body
from serving.pages import add_pages
from serving.proxy import AUTO_MODES, Cooldown, UpstreamError, Upstreams, decision_field, decision_headers, \
    openai_chunks, to_route_request
from serving.runtime import (LiveUserPreference, MicroBatcher, ModelLoadError, Tier4Refresher, arm_of,
                             bundle_info, check_bundle, load_challenger, load_champion, load_serving_config,
                             route_many, serving_overrides, to_plain)
from serving.schemas import (EXAMPLE_BATCH, EXAMPLE_FEEDBACK, EXAMPLE_REQUEST, CatalogEntry, ChatCompletion,
                             ChatCompletionRequest, Feedback, FeedbackAck, Health, ModelsList, OpenAIError,
                             Refreshed, RouteBatch, RouteBatchResult)
from serving.store import LogStore, LogUnavailable, iso_now
from serving import redaction

log = logging.getLogger("autoroute.serving")
MODEL_TAG = "autoroute-router:latest"
STATUS = {"invalid_request": 400, "unknown_model": 400, "too_large": 413, "no_eligible_model": 422}

app = FastAPI(title="autoroute", docs_url=None, redoc_url=None, openapi_url=None)
add_pages(app)   # /ui and /dashboard (serving/pages.py)


@app.exception_handler(RequestValidationError)
async def _bad_request(request, exc: RequestValidationError):  # the guard normally answers first
    msg = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()[:6])
    return PlainJSON(orjson.loads(error_body(request.url.path, 400, msg, "invalid_request")), status_code=400)


def _error(path: str, err: Exception) -> PlainJSON:
    if isinstance(err, LogUnavailable):       # nothing was acknowledged: the client may retry
        return PlainJSON(orjson.loads(error_body(path, 503, f"the decision log cannot be written; retry later "
                                                             f"({err})", "log_unavailable")),
                         status_code=503, headers={"retry-after": "1"})
    code = getattr(err, "code", "invalid_request")
    status = STATUS.get(code, 400)
    return PlainJSON(orjson.loads(error_body(path, status, str(err), code)), status_code=status)


def _stop_server() -> None:
    """A worker that must refuse to run stops its `bentoml serve` (instead of being restarted)."""
    import os
    import signal

    from bentoml._internal.context import server_context
    if server_context.worker_index is not None:
        os.kill(os.getppid(), signal.SIGTERM)


def _in_store(ref):
    return ref if ref.stored is not None else None


@bentoml.service(name="autoroute", workers=1, traffic={"timeout": 300},
                 logging={"access": {"enabled": False}})
@bentoml.asgi_app(app)
class AutoRoute:
    """Picks the LLM for each request: rule tiers, learned task classifier and
    preference model, and per-user preference learned from overrides."""

    # the champion in the BentoML model store; when it is absent the service
    # still starts and decides by serving.on_model_error (refuse | degrade)
    champion = _in_store(bentoml.models.BentoModel(MODEL_TAG))

    def __init__(self) -> None:
        overrides = serving_overrides()
        self.cfg = load_serving_config(overrides)
        scfg = self.cfg.serving
        self.limits = scfg.limits
        self.keys = KeyRing.from_config(to_plain(scfg.auth))
        ref = type(self).champion
        stored = ref.stored if ref is not None else None   # local store only, no remote lookup
        self.tier4_on = bool(scfg.tier4.enabled)
        self.refreshers: list[Tier4Refresher] = []
        try:
            champ = load_champion(stored, self.cfg, overrides, MODEL_TAG, live_tier4=self.live_tier4)
        except ModelLoadError as err:
            log.error("autoroute cannot start: %s", err)
            _stop_server()
            raise SystemExit(f"autoroute cannot start: {err}") from None
        self.router, self.degraded, self.problem = champ.router, champ.degraded, champ.problem
        self.model_info = bundle_info(stored) if not champ.degraded else {}
        self.runtime = champ.runtime
        self.catalog = self.router.catalog
        self.log_prompts = bool(scfg.log_prompts)
        self.pref = self.router.user_preference
        lc = scfg.log
        self.store = LogStore(lc.db, float(lc.decision_flush_ms), bool(lc.store_prompts), durability=str(lc.durability),
                              prompt_retention_days=lc.prompt_retention_days, max_mb=lc.max_mb)
        logging.getLogger("autoroute").setLevel(logging.INFO)
        redaction.install()
        self.start_tier4(self.pref)
        ch = scfg.challenger
        self.challenger, self.challenger_problem = None, None
        self.ab_mode, self.ab_share, self.ab_salt = str(ch.mode), float(ch.ab_share), str(ch.salt)
        if self.ab_mode not in ("shadow", "ab") or not 0.0 <= self.ab_share <= 1.0:
            raise SystemExit("serving.challenger: mode must be shadow or ab and ab_share in [0, 1]")
        if ch.model:
            self.challenger, self.challenger_problem = load_challenger(str(ch.model), self.cfg, overrides,
                                                                       self.live_tier4)
            if self.challenger is None:
                log.error("serving without the challenger: %s", self.challenger_problem)
            else:
                self.start_tier4(self.challenger.user_preference)
        b = scfg.batching
        self.batcher = MicroBatcher(lambda reqs: route_many(self.router, reqs), int(b.max_batch),
                                    float(b.window_ms), int(b.get("concurrency", 1))) \
            if b.enabled and self.router.scorer is not None else None
        p = to_plain(scfg.proxy)
        self.upstreams = Upstreams(p["providers"], p.get("upstream_ids") or {}, float(p["timeout_s"]),
                                   int(p["max_fallbacks"]), Cooldown(**p["cooldown"]))
        self.admission = Admission(to_plain(scfg.traffic), to_plain(scfg.rate_limits))
        metrics.set_degraded(self.degraded)
        log.info("autoroute ready: %s%s", self.model_info.get("tag", "rules only"),
                 " (DEGRADED: " + str(self.problem) + ")" if self.degraded else "")

    def live_tier4(self, base):
        """Tier 4 as served: the bundle's model plus live user/org refits (none when disabled)."""
        from autoroute.scoring import NoUserPreference
        return LiveUserPreference(base if self.tier4_on else NoUserPreference())

    def start_tier4(self, pref: LiveUserPreference) -> None:
        if self.tier4_on:
            from hydra.utils import instantiate
            t4 = self.cfg.serving.tier4
            self.refreshers.append(Tier4Refresher(self.store, pref, instantiate(self.cfg.router.tier4),
                                                  float(t4.refresh_s), list(t4.levels)).start())

    @bentoml.on_deployment
    def check_champion() -> None:
        """Once, before any worker starts: with on_model_error=refuse a missing
        or unreadable champion stops `bentoml serve` here, with the reason."""
        overrides = serving_overrides()
        cfg = load_serving_config(overrides)
        if str(cfg.serving.on_model_error) != "refuse":
            return
        ref = _in_store(bentoml.models.BentoModel(MODEL_TAG))
        problem = check_bundle(ref.stored if ref is not None else None, MODEL_TAG)
        if problem:
            log.error("autoroute cannot start: %s", problem)
            raise SystemExit(f"autoroute cannot start: {problem}")

    @bentoml.on_shutdown
    async def shutdown(self) -> None:
        for r in self.refreshers:
            r.stop()
        await self.upstreams.aclose()
        self.store.close()

    # ------------------------------------------------------------ routing
    async def decide(self, requests: list[Request], record: bool = True) -> list[Decision | Exception]:
        """The one decide path: route (micro-batched when alone), then log every decision
        and, with durability commit_before_answer, wait for its commit. `record=False`
        leaves the logging to the caller (the proxy logs the model it served)."""
        if not self.store.healthy:
            return [LogUnavailable(self.store.error or "the decision log is not available")] * len(requests)
        t0 = time.perf_counter()
        arms = [self.arm_for(r) for r in requests]
        results: list = [None] * len(requests)
        for arm in ("champion", "challenger"):
            idx = [i for i, a in enumerate(arms) if a == arm]
            if idx:
                for i, d in zip(idx, await self.route_with(arm, [requests[i] for i in idx])):
                    results[i] = d
        seconds = time.perf_counter() - t0          # what each of these requests waited
        if not record:
            return results
        out = [await self.record(d, req, seconds, arm) if isinstance(d, Decision) else d
               for req, d, arm in zip(requests, results, arms)]
        self.shadow_later(list(zip(requests, out)))
        return out

    def arm_for(self, req: Request) -> str:
        """The arm that serves `req`: the challenger only in an A/B split (a stable hash of the user)."""
        if self.challenger is None or self.ab_mode != "ab":
            return "champion"
        return arm_of(req.user_id, req.org_id, self.ab_share, self.ab_salt)

    async def route_with(self, arm: str, requests: list[Request]) -> list:
        router = self.router if arm == "champion" else self.challenger
        if arm == "champion" and self.batcher is not None and len(requests) == 1:
            try:
                return [await self.batcher.submit(requests[0])]
            except RoutingError as err:
                return [err]
        if router.scorer is not None:
            return await asyncio.to_thread(route_many, router, requests)
        try:
            return route_many(router, requests)
        except RoutingError as err:
            return [err]

    def shadow_later(self, pairs: list) -> None:
        """In shadow mode, let the challenger decide the served requests after the response."""
        served = [(r, d) for r, d in pairs if isinstance(d, Decision)]
        if self.challenger is not None and self.ab_mode == "shadow" and served:
            asyncio.get_running_loop().create_task(self.shadow(served))

    async def shadow(self, served: list) -> None:
        """Shadow: the challenger decides the same requests; logged and counted, not served."""
        try:
            t0 = time.perf_counter()
            reqs = [r for r, _ in served]
            results = await asyncio.to_thread(route_many, self.challenger, reqs)
            seconds = (time.perf_counter() - t0) / len(reqs)
            for (_, d), sh in zip(served, results):
                if isinstance(sh, Decision):
                    self.store.log_shadow(d.decision_id, sh)
                    metrics.shadow(sh, d, seconds)
        except Exception:  # the shadow must never affect serving
            log.exception("shadow decisions failed")

    async def record(self, d: Decision, req: Request, seconds: float,
                     arm: str = "champion") -> Decision | LogUnavailable:
        """Log one decision (prompt redacted); with commit_before_answer, once committed."""
        text = req.last_user_text
        lock = req.area.model_lock if req.area is not None else None
        committed = self.store.log_decision(d, req.user_id, req.org_id, text,
                                            requested=self.catalog.resolve(lock) if lock else "auto", arm=arm)
        metrics.decision(d, seconds, arm)
        if self.log_prompts:
            log.info("decision %s -> %s for prompt %r", d.decision_id, d.selected_model, text[:500])
        if self.store.durability == "commit_before_answer":
            try:
                await asyncio.wrap_future(committed)
            except LogUnavailable as err:
                return err
        return d

    @bentoml.api(route="/route")
    async def route(self, request: Request = EXAMPLE_REQUEST, /) -> Decision:
        """One request -> one decision: model, reason, tier, task, confidence,
        ranked alternatives with scores, estimated cost and a decision id."""
        (out,) = await self.decide([request])
        return _error("/route", out) if isinstance(out, Exception) else out

    @bentoml.api(route="/route_batch")
    async def route_batch(self, batch: RouteBatch = EXAMPLE_BATCH, /) -> RouteBatchResult:
        """Many requests -> their decisions, in order (one learned pass over all prompts)."""
        if len(batch.requests) > int(self.limits.max_batch):
            return _error("/route_batch", RoutingError(
                f"requests: {len(batch.requests)} requests; the limit is {int(self.limits.max_batch)}", "too_large"))
        results = await self.decide(list(batch.requests))
        for i, out in enumerate(results):
            if isinstance(out, LogUnavailable):
                return _error("/route_batch", out)
            if isinstance(out, Exception):
                return _error("/route_batch", type(out)(f"requests.{i}: {out}", getattr(out, "code", "invalid_request"))
                              if isinstance(out, RoutingError) else out)
        return RouteBatchResult(decisions=results)

    # ----------------------------------------------------------- feedback
    @bentoml.api(route="/feedback")
    async def feedback(self, feedback: Feedback = EXAMPLE_FEEDBACK, /) -> FeedbackAck:
        """What the user did with a decision: override (switched to another
        model), regenerate, or a 1-5 rating. Answered only once it is on disk."""
        row = self.store.decision(feedback.decision_id)
        if row is None:        # not flushed yet, here or (with several workers) in another worker
            await asyncio.to_thread(self.store.flush)
            row = self.store.decision(feedback.decision_id)
            if row is None:
                await asyncio.sleep(3 * self.store.flush_s)
                row = self.store.decision(feedback.decision_id)
        try:
            event = await asyncio.to_thread(feedback_row, feedback, row, self.catalog, self.store, iso_now())
        except FeedbackRejected as err:
            return PlainJSON(orjson.loads(error_body("/feedback", err.status, str(err), err.code)),
                             status_code=err.status)
        except LogUnavailable as err:
            return _error("/feedback", err)
        routed, chosen = event["routed_model"], event["chosen_model"]
        try:
            await asyncio.to_thread(self.store.add_feedback, [event])
        except LogUnavailable as err:
            return _error("/feedback", err)
        for r in self.refreshers:
            r.poke()
        metrics.feedback(feedback.event, routed, chosen, row.get("arm") or "champion", event["rating"])
        return FeedbackAck(stored=True, decision_id=feedback.decision_id, event=feedback.event, routed_model=routed,
                           chosen_model=chosen, user_id=event["user_id"], org_id=event["org_id"])

    @bentoml.api(route="/admin/refresh")
    async def admin_refresh(self) -> Refreshed:
        """Refit Tier 4 from the feedback log now (it also refits on its own)."""
        for r in self.refreshers:
            await asyncio.to_thread(r.refresh)
        return Refreshed(users_and_orgs=self.pref.profiles, feedback_events=self.pref.events,
                         refreshed_at=self.pref.refreshed_at)

    @app.get("/admin/dashboard", tags=["Service APIs"])
    async def dashboard_data(self, request: HttpRequest, days: float = Query(7.0, ge=0.01, le=3660),
                             org: str | None = Query(None, min_length=1, max_length=200)):
        """What /dashboard draws, from the log of the last `days` days, of all orgs or one
        (needs a key with the admin scope when keys are set)."""
        try:
            self.keys.check("/admin/dashboard", request.headers.raw)
        except AuthError as err:
            code = "unauthorized" if err.status == 401 else "forbidden"
            return PlainJSON(orjson.loads(error_body("/admin/dashboard", err.status, str(err), code)),
                             status_code=err.status)
        data = await asyncio.to_thread(dashboard.build, self.store.path, self.catalog, days, None, org)
        return Response(orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")

    # -------------------------------------------------------------- probes
    def health(self) -> Health:
        log_ok = self.store.healthy
        return Health(status="ok" if log_ok else "unavailable", ready=log_ok, degraded=self.degraded,
                      model=self.model_info.get("tag"), runtime=self.runtime,
                      problem=self.problem if log_ok else self.store.error, log=log_ok,
                      tier4={"enabled": self.tier4_on, "entries": self.pref.profiles,
                             "feedback_events": self.pref.events, "refreshed_at": self.pref.refreshed_at,
                             "fit_ms": self.refreshers[0].fit_ms if self.refreshers else None,
                             "error": next((r.last_error for r in self.refreshers if r.last_error), None)},
                      challenger={"model": str(self.cfg.serving.challenger.model or "") or None,
                                  "loaded": self.challenger is not None, "mode": self.ab_mode,
                                  "ab_share": self.ab_share, "problem": self.challenger_problem},
                      batching=self.batcher.stats() if self.batcher is not None else {})

    # ------------------------------------------------------ model picker
    @app.get("/models", response_model=ModelsList, tags=["Service APIs"])
    def models(self) -> ModelsList:
        """The catalog as the model picker shows it: "Auto (recommended)" first."""
        def entry(mid: str) -> CatalogEntry:
            c = self.catalog.cards[mid]
            return CatalogEntry(id=mid, display_name=c.display_name, provider=c.provider, aliases=list(c.aliases),
                                price_input=c.price.input, price_output=c.price.output,
                                context_window=c.context_window or None, speed=c.speed or None, vision=c.vision,
                                tools=c.tools)
        auto = CatalogEntry(id="auto", display_name="Auto (recommended)", provider="autoroute", recommended=True,
                            description="picks the best model for each message for its cost; you can override it")
        modes = [CatalogEntry(id="auto:floor", display_name="Auto: cheapest acceptable", provider="autoroute",
                              description="the cheapest model whose predicted quality is acceptable"),
                 CatalogEntry(id="auto:nitro", display_name="Auto: fastest", provider="autoroute",
                              description="the fastest model close to the best predicted quality")]
        return ModelsList(models=[auto] + [entry(m) for m in self.catalog.offered], auto_modes=modes,
                          degraded=self.degraded)

    @app.get("/v1/models", tags=["OpenAI compatible"])
    def openai_models(self) -> dict[str, Any]:
        """OpenAI's model list: the auto modes and the offered models."""
        ids = sorted(AUTO_MODES) + self.catalog.offered
        return {"object": "list", "data": [{"id": i, "object": "model", "created": 0,
                                            "owned_by": "autoroute" if i.startswith("auto") else
                                            self.catalog.cards[i].provider} for i in ids]}

    # ---------------------------------------------------- OpenAI proxy
    @app.post("/v1/chat/completions", response_model=ChatCompletion, tags=["OpenAI compatible"],
              responses={200: {"content": {"text/event-stream": {"schema": {
                  "type": "object", "description": "with stream=true: server-sent events whose data are OpenAI "
                                                   "chunks; the first carries the decision in `autoroute`",
                  "properties": {"data": {"type": "string"}, "event": {"type": "string"}}}}}},
                         400: {"model": OpenAIError}, 404: {"model": OpenAIError}, 502: {"model": OpenAIError},
                         504: {"model": OpenAIError}})
    async def chat_completions(self, body: ChatCompletionRequest):
        """OpenAI-compatible chat completions (streaming too). `model` may be
        auto, auto:floor, auto:nitro or a model id; the decision comes back in
        x-autoroute-* headers and in the `autoroute` field."""
        path = "/v1/chat/completions"
        name = body.model.strip().lower()
        try:
            if name in AUTO_MODES:
                req = to_route_request(body, name.partition(":")[2] or "auto")
            else:
                model_id = self.catalog.try_resolve(body.model)
                if model_id is None:
                    return PlainJSON(orjson.loads(error_body(path, 404, f"the model {body.model!r} does not exist; "
                                     "use auto, auto:floor, auto:nitro or a catalog id (GET /v1/models)",
                                                             "model_not_found")), status_code=404)
                req = to_route_request(body)
                area = req.area.model_copy(update={"model_lock": model_id}) if req.area else Area(model_lock=model_id)
                req = req.model_copy(update={"area": area, "candidates": None})
        except (RoutingError, ValueError) as err:
            return PlainJSON(orjson.loads(error_body(path, 400, str(err), "invalid_request")), status_code=400)
        (decision,) = await self.decide([req], record=False)
        if isinstance(decision, Exception):
            return _error(path, decision)
        payload = body.model_dump(exclude_unset=True, exclude={"route"})
        chain = self.upstreams.chain(decision, allow_fallback=name in AUTO_MODES)
        try:
            if body.stream:
                served, upstream, first, attempts = await self.upstreams.open_stream(self.catalog, payload, chain)
            else:
                served, data, attempts = await self.upstreams.complete(self.catalog, payload, chain)
        except UpstreamError as err:
            for a in err.attempts:
                metrics.fallback(a.model, a.error)
            await self.record(decision, req, decision.latency_ms / 1000, self.arm_for(req))
            status = err.status if err.status >= 400 else 502
            return PlainJSON(orjson.loads(error_body(path, status, str(err), "upstream_error")), status_code=status,
                             headers=decision_headers(decision, decision.selected_model, err.attempts))
        for a in attempts:
            metrics.fallback(a.model, a.error)
        served_decision = decision if served == decision.selected_model else decision.model_copy(update={
            "selected_model": served, "display_name": self.catalog.cards[served].display_name,
            "reason": decision.reason + f"; served by {self.catalog.cards[served].display_name} after "
                                        f"{decision.selected_model} failed ({attempts[0].error})"})
        logged = await self.record(served_decision, req, decision.latency_ms / 1000, self.arm_for(req))
        self.shadow_later([(req, logged)])
        if isinstance(logged, LogUnavailable):
            if body.stream:
                await upstream.aclose()
            return _error(path, logged)
        headers = decision_headers(decision, served, attempts)
        field = decision_field(decision, served, attempts)
        if not body.stream:
            if isinstance(data, dict):
                data["autoroute"] = field
            return PlainJSON(data, headers=headers)

        want_usage = bool(body.stream_options and body.stream_options.include_usage)
        chunks = openai_chunks(upstream, first, field, model=self.upstreams.upstream_ids.get(served, served),
                               include_usage=want_usage, prompt_tokens=decision.estimated_tokens)

        async def events():
            try:
                async for chunk in chunks:
                    yield chunk
            except Exception as err:  # after the first byte there is no falling back: say what happened
                metrics.fallback(served, "stream broken")
                yield b"data: " + error_body(path, 502, f"the upstream stream broke: {err}",
                                             "upstream_error") + b"\n\n"

        return StreamingResponse(events(), media_type="text/event-stream", headers=headers)


AutoRoute.add_asgi_middleware(Guard)
