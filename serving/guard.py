"""The ASGI middleware in front of every endpoint: API keys, rate limits and
admission (serving/admission.py), size limits, UTF-8 and JSON checks, request validation with messages that say what is wrong (and never
echo the prompt), API keys, the JSON health probes, and the error responses
documented in the OpenAPI page. Bad input never reaches the endpoints, so
none of it can turn into a 500."""
from __future__ import annotations

import json
import logging
from typing import Any, Callable

import orjson
from pydantic import BaseModel, ValidationError

from autoroute.signals import redact
from serving.admission import Refused
from serving.auth import AuthError, bind_org
from serving.schemas import ChatCompletionRequest, Feedback, Request, RouteBatch

log = logging.getLogger("autoroute.serving")

#: POST endpoints whose bodies the guard checks: path -> request model
VALIDATED: dict[str, type[BaseModel] | None] = {
    "/route": Request,
    "/route_batch": RouteBatch,
    "/feedback": Feedback,
    "/v1/chat/completions": ChatCompletionRequest,
    "/admin/refresh": None,
}
ERROR_STATUSES = {"400": "Bad request: malformed JSON, invalid fields or unknown models",
                  "401": "Missing or invalid API key", "403": "The API key's org does not match the request",
                  "404": "Unknown decision id or model", "413": "Body, prompt or batch over the configured limits",
                  "422": "Valid request that no eligible model can serve",
                  "429": "Over the org's rate limit (see Retry-After)",
                  "503": "Overloaded or the decision log cannot be written; nothing was recorded (see Retry-After)"}


def running_service() -> Any:
    """The worker's service instance (BentoML's own accessor), or None while it starts."""
    import bentoml
    from bentoml.exceptions import BentoMLException

    try:
        return bentoml.get_current_service()
    except BentoMLException:
        return None


def describe(err: ValidationError, limit: int = 6) -> str:
    """'messages.0.content: Field required; ...' without the offending input."""
    parts = []
    for e in err.errors(include_input=False, include_url=False)[:limit]:
        loc = ".".join(str(p) for p in e.get("loc", ()) if p not in ("function-after[_complete()]",))
        msg = e.get("msg", "invalid")
        parts.append(f"{loc or 'request body'}: {msg}")
    more = err.error_count() - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def error_body(path: str, status: int, message: str, code: str) -> bytes:
    """The error JSON (OpenAI's shape under /v1/); sensitive spans in `message` are redacted."""
    message = redact(message)
    if path.startswith("/v1/"):
        kind = "authentication_error" if status == 401 else "permission_error" if status == 403 else \
            "invalid_request_error" if status < 500 else "api_error"
        return orjson.dumps({"error": {"message": message, "type": kind, "code": code, "param": None}})
    return orjson.dumps({"error": message, "code": code})


async def send_json(send: Callable, status: int, body: bytes, headers: list | None = None) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())] + (headers or [])})
    await send({"type": "http.response.body", "body": body})


def echo_request_id(send: Callable, rid: bytes) -> Callable:
    """`send` that adds the client's `x-request-id` to the response headers (request tracing;
    the benchmark's load generator times each answer by it)."""
    async def wrapped(message):
        if message["type"] == "http.response.start":
            message = dict(message, headers=[*message.get("headers", ()), (b"x-request-id", rid)])
        await send(message)
    return wrapped


class BadInput(Exception):
    def __init__(self, message: str, status: int = 400, code: str = "invalid_request"):
        super().__init__(message)
        self.status, self.code = status, code


def parse_body(raw: bytes) -> Any:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise BadInput(f"the request body is not valid UTF-8 (byte {err.start}: {err.reason})",
                       code="invalid_unicode") from None
    if not raw.strip():
        raise BadInput("the request body is empty; send a JSON object")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as err:
        msg = str(err)
        if "surrogate" in msg:
            raise BadInput(f"the request body holds invalid Unicode (a lone surrogate escape): {msg}",
                           code="invalid_unicode") from None
        raise BadInput(f"malformed JSON: {msg}", code="malformed_json") from None


def check_limits(path: str, obj: Any, limits) -> None:
    """Message count and size limits on a parsed body (413)."""
    max_chars = int(limits.max_prompt_chars)
    max_msgs = int(limits.max_messages)

    def one(req: dict, where: str) -> None:
        msgs = req.get("messages") or []
        if len(msgs) > max_msgs:
            raise BadInput(f"{where}messages: {len(msgs)} messages; the limit is {max_msgs}", 413, "too_large")
        for i, m in enumerate(msgs):
            c = m.get("content") if isinstance(m, dict) else None
            n = len(c) if isinstance(c, str) else sum(len(p.get("text") or "") for p in c if isinstance(p, dict)) \
                if isinstance(c, list) else 0
            if n > max_chars:
                raise BadInput(f"{where}messages.{i}.content: {n} characters; the limit is {max_chars}",
                               413, "too_large")
        for i, a in enumerate(req.get("attachments") or []):
            t = a.get("text") if isinstance(a, dict) else None
            if isinstance(t, str) and len(t) > max_chars * 4:
                raise BadInput(f"{where}attachments.{i}.text: {len(t)} characters; the limit is {max_chars * 4}",
                               413, "too_large")

    if not isinstance(obj, dict):
        return
    if path == "/route_batch":
        reqs = obj.get("requests") or []
        if isinstance(reqs, list) and len(reqs) > int(limits.max_batch):
            raise BadInput(f"requests: {len(reqs)} requests; the limit is {int(limits.max_batch)}", 413, "too_large")
        for k, r in enumerate(reqs if isinstance(reqs, list) else []):
            if isinstance(r, dict):
                one(r, f"requests.{k}.")
    elif path in ("/route", "/v1/chat/completions"):
        one(obj, "")


def bind(path: str, obj: Any, org: str) -> None:
    if path == "/route_batch":
        for k, r in enumerate(obj.get("requests") or []):
            bind_org(r, org, f"requests.{k}")
    elif path == "/v1/chat/completions":
        route = obj.get("route")
        if route is None:
            route = obj["route"] = {}
        bind_org(route, org, "route")
    else:
        bind_org(obj, org, "request")


class Guard:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path, method = scope["path"], scope["method"]
        rid = next((v for k, v in scope.get("headers") or () if k == b"x-request-id"), None)
        if rid is not None:                         # echoed on the answer, whoever gives it
            send = echo_request_id(send, rid[:128])
        svc = running_service()
        if method == "GET" and path in ("/healthz", "/readyz", "/livez"):
            if svc is None:
                return await send_json(send, 503, b'{"status":"unavailable","ready":false,"degraded":false,'
                                                  b'"model":null,"log":false,"problem":"starting"}')
            health = svc.health()
            ok = health.ready or path != "/readyz"
            return await send_json(send, 200 if ok else 503, health.model_dump_json().encode())
        if method == "GET" and path == "/docs.json":
            return await self._docs(scope, receive, send)
        if method != "POST" or path not in VALIDATED or svc is None:
            return await self.app(scope, receive, send)
        try:                                        # who, how often, and is there room (headers only)
            org = svc.keys.check(path, scope.get("headers") or [])
            if not path.startswith("/admin"):
                svc.admission.rates.check(org)
            gate = await svc.admission.gate(path).__aenter__()
        except AuthError as err:
            code = "unauthorized" if err.status == 401 else "forbidden"
            return await send_json(send, err.status, error_body(path, err.status, str(err), code))
        except Refused as err:
            code = "rate_limited" if err.status == 429 else "overloaded"
            return await send_json(send, err.status, error_body(path, err.status, str(err), code), [err.header])
        try:
            return await self._admitted(svc, org, scope, receive, send)
        finally:
            await gate.__aexit__(None, None, None)

    async def _admitted(self, svc, org, scope, receive, send):
        """Read, check and bind the body, then pass it on to the endpoint."""
        path = scope["path"]
        try:
            raw = await self._read(receive, int(svc.limits.max_body_bytes))
            model = VALIDATED[path]
            if model is None:                       # admin: nothing or an empty object
                if raw.strip() and not isinstance(parse_body(raw), dict):
                    raise BadInput("request body: send a JSON object ({}) or nothing")
                raw = b"{}"
            else:
                obj = parse_body(raw)
                check_limits(path, obj, svc.limits)
                if org is not None and isinstance(obj, dict):
                    bind(path, obj, org)
                    raw = orjson.dumps(obj)
                try:
                    model.model_validate(obj)
                except ValidationError as err:
                    raise BadInput(describe(err)) from None
        except BadInput as err:
            return await send_json(send, err.status, error_body(path, err.status, str(err), err.code))
        except AuthError as err:
            return await send_json(send, err.status, error_body(path, err.status, str(err), "forbidden"))
        headers = [(k, v) for k, v in scope.get("headers") or [] if k not in (b"content-length", b"content-type")]
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]
        scope = dict(scope, headers=headers)
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": raw, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    @staticmethod
    async def _read(receive, limit: int) -> bytes:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise BadInput("the client disconnected before sending the body")
            body = message.get("body", b"")
            size += len(body)
            if size > limit:
                raise BadInput(f"the request body is over {limit} bytes", 413, "too_large")
            chunks.append(body)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _docs(self, scope, receive, send):
        """The OpenAPI document with the error responses the guard can give."""
        start: dict = {}
        parts: list[bytes] = []

        async def capture(message):
            if message["type"] == "http.response.start":
                start.update(message)
            else:
                parts.append(message.get("body", b""))

        await self.app(scope, receive, capture)
        try:
            spec = json.loads(b"".join(parts))
            patch_spec(spec)
            body = json.dumps(spec).encode()
        except Exception:  # serve bentoml's document unchanged
            log.exception("could not extend the OpenAPI document")
            body = b"".join(parts)
        await send_json(send, start.get("status", 200), body)


def patch_spec(spec: dict) -> None:
    comps = spec.setdefault("components", {}).setdefault("schemas", {})
    comps["ErrorBody"] = {"type": "object", "title": "ErrorBody", "required": ["error"],
                          "properties": {"error": {"title": "Error", "description": "what is wrong",
                                                   "oneOf": [{"type": "string"}, {"type": "object"}]},
                                         "code": {"type": "string", "nullable": True},
                                         "detail": {}}}
    from serving.schemas import Health
    comps["Health"] = Health.model_json_schema(ref_template="#/components/schemas/{model}")
    from serving.schemas import request_examples
    for path, example in request_examples().items():
        op = spec.get("paths", {}).get(path, {}).get("post")
        media = ((op or {}).get("requestBody") or {}).get("content", {}).get("application/json")
        if media is not None:
            media["example"] = example
    # BentoML flattens `X | None` to X in its schemas; the responses of the
    # typed endpoints are re-derived from their pydantic models
    from serving.schemas import Decision, FeedbackAck, Refreshed, RouteBatchResult
    for path, model in (("/route", Decision), ("/route_batch", RouteBatchResult), ("/feedback", FeedbackAck),
                        ("/admin/refresh", Refreshed)):
        op = spec.get("paths", {}).get(path, {}).get("post")
        if op is None:
            continue
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}", mode="serialization")
        comps.update(schema.pop("$defs", {}))
        comps[model.__name__] = schema
        op["responses"]["200"] = {"description": "Successful Response", "content": {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}
    err_ref = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}}
    for path, item in spec.get("paths", {}).items():
        for method, op in item.items():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            if path in VALIDATED or path.startswith("/admin"):
                for status, desc in ERROR_STATUSES.items():
                    op["responses"][status] = {"description": desc, **err_ref}
                op["responses"]["400"] = {"description": ERROR_STATUSES["400"], **err_ref}
            if path in ("/healthz", "/readyz", "/livez"):
                ok = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Health"}}}}
                op["responses"]["200"] = {"description": "the service's state", **ok}
                if path == "/readyz":
                    op["responses"]["503"] = {"description": "not ready", **ok}
            if path == "/v1/chat/completions":
                op["responses"]["502"] = {"description": "every upstream attempt failed", **err_ref}
                op["responses"]["504"] = {"description": "every upstream attempt timed out", **err_ref}
    spec["components"]["schemas"] = openapi30(comps)
    spec["paths"] = openapi30(spec.get("paths", {}))


def openapi30(node):
    """JSON-schema `anyOf: [X, {type: null}]` (pydantic, FastAPI) as OpenAPI 3.0 `nullable`."""
    if isinstance(node, list):
        return [openapi30(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = {k: openapi30(v) for k, v in node.items()}
    for key in ("anyOf", "oneOf"):
        alts = node.get(key)
        if isinstance(alts, list) and any(a == {"type": "null"} for a in alts):
            rest = [a for a in alts if a != {"type": "null"}]
            node.pop(key)
            if len(rest) == 1 and "$ref" not in rest[0]:
                node.update({**rest[0], **{k: v for k, v in node.items() if k not in rest[0]}})
            elif len(rest) == 1:
                node["allOf"] = rest
            elif rest:
                node[key] = rest
            node["nullable"] = True
    if node.get("type") == "null":
        node.pop("type")
        node["nullable"] = True
    return node
