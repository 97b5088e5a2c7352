"""The OpenAI-compatible proxy: turn a chat request into a routing request,
pick the model (auto, auto:floor, auto:nitro or a concrete id), forward it to
the model's provider, and fall back to the next alternative when the upstream
fails (5xx, 429, timeout, connection error) before the first byte."""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

import httpx
import orjson

from autoroute.types import Decision, Message, Request, RoutingError
from serving.schemas import ChatCompletionRequest

log = logging.getLogger("autoroute.serving.proxy")
AUTO_MODES = {"auto", "auto:floor", "auto:nitro"}
RETRYABLE = {429, 500, 502, 503, 504}


class UpstreamError(Exception):
    def __init__(self, message: str, status: int = 502, attempts: list | None = None):
        super().__init__(message)
        self.status, self.attempts = status, attempts or []


def _text(content: Any) -> tuple[str, bool]:
    """(text, has_image) of an OpenAI message content."""
    if content is None:
        return "", False
    if isinstance(content, str):
        return content, False
    texts, image = [], False
    for part in content:
        kind = part.get("type")
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind in ("image_url", "input_image", "image"):
            image = True
    return "\n".join(texts), image


def to_route_request(body: ChatCompletionRequest, variant: str = "auto") -> Request:
    """The routing request for a chat request (RoutingError when it has no user text);
    `variant` is the selection variant of auto, auto:floor, auto:nitro."""
    msgs, vision = [], False
    for m in body.messages:
        text, image = _text(m.content)
        vision |= image
        role = {"developer": "system", "function": "tool"}.get(m.role, m.role)
        msgs.append(Message(role=role, content=text))
    if not any(m.role == "user" and m.content.strip() for m in msgs):
        raise RoutingError("messages must contain at least one non-empty user message")
    opts = body.route.model_dump(exclude_none=True) if body.route else {}
    needs = dict(opts.pop("needs", None) or {})
    if vision:
        needs["vision"] = True
    if getattr(body, "tools", None):
        needs["tools"] = True
    if needs:
        opts["needs"] = needs
    if variant != "auto":
        opts["variant"] = variant
    opts.setdefault("user_id", body.user)
    return Request(messages=msgs, **opts)


@dataclass
class Attempt:
    model: str
    error: str
    status: int | None = None
    seconds: float = 0.0


@dataclass
class Upstreams:
    providers: dict[str, dict[str, Any]]
    upstream_ids: dict[str, str]
    timeout_s: float = 60.0
    max_fallbacks: int = 2
    client: httpx.AsyncClient | None = field(default=None, repr=False)

    def _client(self) -> httpx.AsyncClient:
        if self.client is None:
            self.client = httpx.AsyncClient(timeout=httpx.Timeout(self.timeout_s), trust_env=False,
                                            limits=httpx.Limits(max_connections=200, max_keepalive_connections=50))
        return self.client

    async def aclose(self) -> None:
        if self.client is not None:
            await self.client.aclose()
            self.client = None

    def target(self, catalog, model: str) -> tuple[str, dict[str, str], str]:
        card = catalog.cards[model]
        prov = self.providers.get(card.provider)
        if not prov or not prov.get("base_url"):
            raise UpstreamError(f"no provider endpoint configured for {card.provider!r} (serving.proxy.providers)")
        headers = {"content-type": "application/json"}
        key_env = prov.get("api_key_env")
        key = os.environ.get(key_env) if key_env else None
        if key:
            headers["authorization"] = f"Bearer {key}"
        return str(prov["base_url"]).rstrip("/") + "/chat/completions", headers, \
            self.upstream_ids.get(model, model)

    def chain(self, decision: Decision, allow_fallback: bool) -> list[str]:
        models = [decision.selected_model]
        if allow_fallback:
            models += [a.model for a in decision.alternatives][: self.max_fallbacks]
        return models

    async def complete(self, catalog, payload: dict, models: list[str]) -> tuple[str, dict, list[Attempt]]:
        """Non-streaming: (served model, upstream JSON, failed attempts)."""
        attempts: list[Attempt] = []
        client = self._client()
        for model in models:
            t0 = time.perf_counter()
            try:
                url, headers, upstream_id = self.target(catalog, model)
                resp = await client.post(url, headers=headers, content=orjson.dumps({**payload, "model": upstream_id}))
            except (httpx.TimeoutException, httpx.TransportError, UpstreamError) as err:
                attempts.append(Attempt(model, _why(err), None, time.perf_counter() - t0))
                continue
            if resp.status_code in RETRYABLE:
                attempts.append(Attempt(model, f"upstream answered {resp.status_code}", resp.status_code,
                                        time.perf_counter() - t0))
                continue
            try:
                data = resp.json()
            except ValueError:
                attempts.append(Attempt(model, "upstream sent invalid JSON", resp.status_code, time.perf_counter() - t0))
                continue
            if resp.status_code >= 400:   # the client's mistake: pass it on, no fallback
                raise UpstreamError(_upstream_message(data, resp.status_code), resp.status_code, attempts)
            return model, data, attempts
        raise _all_failed(attempts)

    async def open_stream(self, catalog, payload: dict, models: list[str]
                          ) -> tuple[str, httpx.Response, bytes, list[Attempt]]:
        """Streaming: (served model, open upstream response, first chunk, failed attempts).
        The fallback decision is made before anything is sent to the client."""
        attempts: list[Attempt] = []
        client = self._client()
        for model in models:
            t0 = time.perf_counter()
            resp = None
            try:
                url, headers, upstream_id = self.target(catalog, model)
                req = client.build_request("POST", url, headers=headers,
                                           content=orjson.dumps({**payload, "model": upstream_id, "stream": True}))
                resp = await client.send(req, stream=True)
                if resp.status_code in RETRYABLE:
                    attempts.append(Attempt(model, f"upstream answered {resp.status_code}", resp.status_code,
                                            time.perf_counter() - t0))
                    await resp.aclose()
                    continue
                if resp.status_code >= 400:
                    body = await resp.aread()
                    await resp.aclose()
                    try:
                        data = orjson.loads(body)
                    except orjson.JSONDecodeError:
                        data = {}
                    raise UpstreamError(_upstream_message(data, resp.status_code), resp.status_code, attempts)
                it = resp.aiter_raw()
                first = b""
                while not first:
                    first = await it.__anext__()
                return model, _Resumed(resp, it), first, attempts
            except StopAsyncIteration:
                attempts.append(Attempt(model, "upstream closed the stream without data", None,
                                        time.perf_counter() - t0))
            except (httpx.TimeoutException, httpx.TransportError) as err:
                attempts.append(Attempt(model, _why(err), None, time.perf_counter() - t0))
            if resp is not None:
                await resp.aclose()
        raise _all_failed(attempts)


class _Resumed:
    """An upstream stream whose first chunk was already read."""

    def __init__(self, resp: httpx.Response, it: AsyncIterator[bytes]):
        self.resp, self.it = resp, it

    async def rest(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self.it:
                yield chunk
        finally:
            await self.resp.aclose()

    async def aclose(self) -> None:
        await self.resp.aclose()


def _why(err: Exception) -> str:
    if isinstance(err, httpx.TimeoutException):
        return f"upstream timed out ({type(err).__name__})"
    if isinstance(err, UpstreamError):
        return str(err)
    return f"upstream unreachable ({type(err).__name__})"


def _upstream_message(data: Any, status: int) -> str:
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict) and err.get("message"):
        return f"upstream {status}: {err['message']}"
    return f"upstream answered {status}"


def _all_failed(attempts: list[Attempt]) -> UpstreamError:
    tried = "; ".join(f"{a.model}: {a.error}" for a in attempts) or "no model to try"
    timeouts = attempts and all("timed out" in a.error for a in attempts)
    return UpstreamError(f"every upstream attempt failed ({tried})", 504 if timeouts else 502, attempts)


def decision_headers(decision: Decision, served: str, attempts: list[Attempt]) -> dict[str, str]:
    def ascii_(s: str) -> str:
        return s.encode("ascii", "replace").decode("ascii")[:500]
    h = {"x-autoroute-decision-id": decision.decision_id, "x-autoroute-model": served,
         "x-autoroute-selected-model": decision.selected_model, "x-autoroute-tier": str(decision.tier),
         "x-autoroute-task": decision.task, "x-autoroute-confidence": f"{decision.confidence:.4f}",
         "x-autoroute-reason": ascii_(decision.reason), "x-autoroute-degraded": str(decision.degraded).lower()}
    if attempts:
        h["x-autoroute-fallback"] = ascii_("; ".join(f"{a.model}: {a.error}" for a in attempts) + f" -> {served}")
    return h


def decision_field(decision: Decision, served: str, attempts: list[Attempt]) -> dict[str, Any]:
    out = decision.model_dump(mode="json")
    out["served_model"] = served
    out["fallbacks"] = [{"model": a.model, "error": a.error, "status": a.status, "seconds": round(a.seconds, 3)}
                        for a in attempts]
    if attempts:
        out["fallback_note"] = (f"{decision.selected_model} failed ({attempts[0].error}); "
                                f"served by {served} instead")
    return out
