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
    max_out = body.max_completion_tokens or body.max_tokens      # counts in cost, budget and context checks
    if max_out is not None:
        opts.setdefault("expected_output_tokens", max_out)
    opts.setdefault("user_id", body.user)
    return Request(messages=msgs, **opts)


@dataclass
class Attempt:
    model: str
    error: str
    status: int | None = None
    seconds: float = 0.0


class Cooldown:
    """A provider that failed `failures` times in a row (5xx, 429, timeout, unreachable)
    is skipped for `seconds`; then the next request probes it: a success closes
    the cooldown, a failure starts another."""

    def __init__(self, failures: int = 3, seconds: float = 30.0):
        self.failures, self.seconds = max(1, int(failures)), float(seconds)
        self._streak: dict[str, int] = {}
        self._until: dict[str, float] = {}

    def left(self, provider: str) -> float:
        """Seconds until `provider` may be tried again (0: now)."""
        return max(0.0, self._until.get(provider, 0.0) - time.monotonic())

    def failed(self, provider: str) -> None:
        n = self._streak[provider] = self._streak.get(provider, 0) + 1
        if n >= self.failures:
            self._until[provider] = time.monotonic() + self.seconds
            log.warning("provider %s failed %d times in a row: skipped for %.0f s", provider, n, self.seconds)

    def succeeded(self, provider: str) -> None:
        self._streak.pop(provider, None)
        self._until.pop(provider, None)

    def state(self) -> dict[str, float]:
        return {p: round(self.left(p), 1) for p in self._until if self.left(p) > 0}


@dataclass
class Upstreams:
    providers: dict[str, dict[str, Any]]
    upstream_ids: dict[str, str]
    timeout_s: float = 60.0
    max_fallbacks: int = 2
    cooldown: Cooldown = field(default_factory=Cooldown)
    client: httpx.AsyncClient | None = field(default=None, repr=False)

    def skip(self, catalog, model: str) -> Attempt | None:
        """An attempt that is not made: the model's provider is cooling down."""
        provider = catalog.cards[model].provider
        left = self.cooldown.left(provider)
        return Attempt(model, f"provider {provider} cooling down ({left:.1f} s left)") if left else None

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
            if (skipped := self.skip(catalog, model)) is not None:
                attempts.append(skipped)
                continue
            provider = catalog.cards[model].provider
            t0 = time.perf_counter()
            try:
                url, headers, upstream_id = self.target(catalog, model)
            except UpstreamError as err:
                attempts.append(Attempt(model, str(err)))
                continue
            try:
                resp = await client.post(url, headers=headers, content=orjson.dumps({**payload, "model": upstream_id}))
            except (httpx.TimeoutException, httpx.TransportError) as err:
                self.cooldown.failed(provider)
                attempts.append(Attempt(model, _why(err), None, time.perf_counter() - t0))
                continue
            if resp.status_code in RETRYABLE:
                self.cooldown.failed(provider)
                attempts.append(Attempt(model, f"upstream answered {resp.status_code}", resp.status_code,
                                        time.perf_counter() - t0))
                continue
            try:
                data = resp.json()          # httpx decodes any content-encoding
            except ValueError:
                self.cooldown.failed(provider)
                attempts.append(Attempt(model, "upstream sent invalid JSON", resp.status_code, time.perf_counter() - t0))
                continue
            self.cooldown.succeeded(provider)
            if resp.status_code >= 400:   # the client's mistake: pass it on, no fallback
                raise UpstreamError(_upstream_message(data, resp.status_code), resp.status_code, attempts)
            return model, data, attempts
        raise _all_failed(attempts)

    async def open_stream(self, catalog, payload: dict, models: list[str]
                          ) -> tuple[str, "UpstreamStream", str, list[Attempt]]:
        """Streaming: (served model, open upstream stream, its first event's data, failed
        attempts). The fallback decision is made before anything is sent to the client."""
        attempts: list[Attempt] = []
        client = self._client()
        for model in models:
            if (skipped := self.skip(catalog, model)) is not None:
                attempts.append(skipped)
                continue
            provider = catalog.cards[model].provider
            t0 = time.perf_counter()
            try:
                url, headers, upstream_id = self.target(catalog, model)
            except UpstreamError as err:
                attempts.append(Attempt(model, str(err)))
                continue
            resp = None
            try:
                req = client.build_request("POST", url, headers=headers,
                                           content=orjson.dumps({**payload, "model": upstream_id, "stream": True}))
                resp = await client.send(req, stream=True)
                if resp.status_code in RETRYABLE:
                    self.cooldown.failed(provider)
                    attempts.append(Attempt(model, f"upstream answered {resp.status_code}", resp.status_code,
                                            time.perf_counter() - t0))
                    await resp.aclose()
                    continue
                if resp.status_code >= 400:
                    self.cooldown.succeeded(provider)
                    body = await resp.aread()
                    await resp.aclose()
                    try:
                        data = orjson.loads(body)
                    except orjson.JSONDecodeError:
                        data = {}
                    raise UpstreamError(_upstream_message(data, resp.status_code), resp.status_code, attempts)
                stream = UpstreamStream(resp)
                first = await stream.next_event()
                if first is None:
                    self.cooldown.failed(provider)
                    attempts.append(Attempt(model, "upstream closed the stream without data", None,
                                            time.perf_counter() - t0))
                    await resp.aclose()
                    continue
                self.cooldown.succeeded(provider)
                return model, stream, first, attempts
            except (httpx.TimeoutException, httpx.TransportError) as err:
                self.cooldown.failed(provider)
                attempts.append(Attempt(model, _why(err), None, time.perf_counter() - t0))
            if resp is not None:
                await resp.aclose()
        raise _all_failed(attempts)


class UpstreamStream:
    """An open upstream server-sent-event stream, decoded (content-encoding and
    UTF-8), read one event's data at a time."""

    def __init__(self, resp: httpx.Response):
        self.resp = resp
        self._lines = resp.aiter_lines()

    async def next_event(self) -> str | None:
        """The next event's data ('[DONE]' included); None when the stream ends."""
        data: list[str] = []
        async for line in self._lines:
            if not line:
                if data:
                    return "\n".join(data)
            elif line.startswith("data:"):
                data.append(line[6:] if line.startswith("data: ") else line[5:])
        return "\n".join(data) if data else None

    async def aclose(self) -> None:
        await self.resp.aclose()


def _sse(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


async def openai_chunks(stream: UpstreamStream, first: str, field: dict[str, Any], *, model: str,
                        include_usage: bool, prompt_tokens: int) -> AsyncIterator[bytes]:
    """The upstream's stream as OpenAI's clients expect it: a first chunk with
    `choices[0].delta.role` (and the decision in `autoroute`), one id, model and
    `created` on every chunk, a `usage` chunk before `[DONE]` when the request
    asked for one (estimated, and marked so, when the upstream sent none), and
    an error event when the upstream stream ends early."""
    ident, created = f"chatcmpl-{field['decision_id']}", int(time.time())
    try:
        model = orjson.loads(first).get("model") or model      # the upstream's own name, as without streaming
    except (orjson.JSONDecodeError, AttributeError):
        pass
    usage_seen, done, chars = False, False, 0
    yield _sse({"id": ident, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                             "finish_reason": None}], "autoroute": field})
    data: str | None = first
    try:
        while data is not None:
            if data.strip() == "[DONE]":
                done = True
                break
            try:
                chunk = orjson.loads(data)
            except orjson.JSONDecodeError:
                chunk = None
            if isinstance(chunk, dict) and "error" in chunk:
                yield _sse(chunk)
                done = True
                break
            if isinstance(chunk, dict):
                chunk.update(id=ident, object="chat.completion.chunk", created=created, model=model)
                usage_seen |= bool(chunk.get("usage"))
                for choice in chunk.get("choices") or []:
                    delta = choice.get("delta") or {}
                    chars += len(delta.get("content") or "") if isinstance(delta.get("content"), str) else 0
                yield _sse(chunk)
            data = await stream.next_event()
    finally:
        await stream.aclose()
    if not done:
        raise UpstreamError("the upstream stream ended before [DONE]")
    if include_usage and not usage_seen:
        completion = max(1, round(chars / 4)) if chars else 0
        yield _sse({"id": ident, "object": "chat.completion.chunk", "created": created, "model": model,
                    "choices": [], "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
                                             "total_tokens": prompt_tokens + completion},
                    "autoroute_usage": "estimated: the upstream sent no usage"})
    yield b"data: [DONE]\n\n"


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
