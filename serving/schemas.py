"""Request and response models of the HTTP API. Routing reuses the library's
`Request` and `Decision`; the defaults here double as OpenAPI examples."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator

from autoroute.types import Area, Decision, Message, Needs, Policy, Request, Space

EXAMPLE_REQUEST = Request(
    messages=[Message(role="user", content="Fix this bug: ```python\ndef add(a, b):\n    return a - b\n```")],
    user_id="user-123", org_id="acme", cost_quality=0.5)


class RouteBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    requests: list[Request] = Field(min_length=1, description="up to serving.limits.max_batch requests")


class RouteBatchResult(BaseModel):
    decisions: list[Decision]


class Feedback(BaseModel):
    """What the user did with a decision."""
    model_config = ConfigDict(extra="forbid")
    decision_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$",
                             description="the decision_id returned by /route or /v1/chat/completions")
    event: Literal["override", "regenerate", "rating"] = Field(
        description="override: the user switched to another model; regenerate: asked again; rating: 1-5 stars")
    chosen_model: str | None = Field(default=None, min_length=1, max_length=200,
                                     description="override: the model the user switched to (id or alias); "
                                                 "regenerate: the model of the new answer; rating: the model "
                                                 "whose answer was rated (default: the one shown last)")
    rating: int | None = Field(default=None, ge=1, le=5, description="rating: 1 (bad) to 5 (great)")
    user_id: str | None = Field(default=None, max_length=200, description="defaults to the decision's user")
    org_id: str | None = Field(default=None, max_length=200, description="defaults to the decision's org")

    @model_validator(mode="after")
    def _complete(self) -> "Feedback":
        if self.event == "override" and not self.chosen_model:
            raise ValueError("an override needs chosen_model (the model the user switched to)")
        if self.event == "rating" and self.rating is None:
            raise ValueError("a rating event needs rating (1-5)")
        if self.event != "rating" and self.rating is not None:
            raise ValueError(f"rating is only for event=rating, not {self.event}")
        return self


EXAMPLE_FEEDBACK = Feedback(decision_id="0123456789abcdef0123456789abcdef", event="override",
                            chosen_model="claude-opus-4.5")


EXAMPLE_BATCH = RouteBatch(requests=[EXAMPLE_REQUEST, Request.from_prompt("hello!", user_id="user-123")])


class FeedbackAck(BaseModel):
    stored: bool = Field(description="true: committed to the log (durable) before this response")
    decision_id: str
    event: str
    routed_model: str
    chosen_model: str | None
    user_id: str | None
    org_id: str | None


class CatalogEntry(BaseModel):
    id: str
    display_name: str
    provider: str
    description: str = ""
    recommended: bool = False
    aliases: list[str] = Field(default_factory=list)
    price_input: float | None = Field(default=None, description="USD per 1M input tokens; null = unknown")
    price_output: float | None = Field(default=None, description="USD per 1M output tokens; null = unknown")
    context_window: int | None = None
    speed: float | None = Field(default=None, description="output tokens per second (catalog estimate)")
    vision: bool = False
    tools: bool = False


class ModelsList(BaseModel):
    models: list[CatalogEntry] = Field(description="what the model picker shows; Auto first")
    auto_modes: list[CatalogEntry]
    default: str = "auto"
    degraded: bool = False


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    ready: bool
    degraded: bool
    model: str | None
    runtime: str | None = Field(default=None, description="how the learned tiers run (ONNX Runtime or PyTorch)")
    problem: str | None = None
    log: bool
    tier4: dict[str, Any] = Field(default_factory=dict)
    challenger: dict[str, Any] = Field(default_factory=dict)
    batching: dict[str, float] = Field(default_factory=dict)


class Refreshed(BaseModel):
    users_and_orgs: int
    feedback_events: int
    refreshed_at: float


class ErrorBody(BaseModel):
    error: str
    code: str | None = None


# ------------------------------------------------------- OpenAI compatible
class RouteOptions(BaseModel):
    """autoroute's extension of the chat request (send it with the OpenAI
    client's `extra_body={"route": {...}}`)."""
    model_config = ConfigDict(extra="forbid")
    space: Space | None = None
    area: Area | None = None
    mode: Literal["chat", "planning", "assist"] = "chat"
    policy: Policy | None = None
    user_id: str | None = None
    org_id: str | None = None
    candidates: list[str] | None = None
    needs: Needs | None = None
    cost_quality: float | None = Field(default=None, ge=0.0, le=1.0)
    budget: float | None = Field(default=None, ge=0.0)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: StrictBool = False


class ChatCompletionRequest(BaseModel):
    """OpenAI's chat completion request; unknown fields pass through to the upstream."""
    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [
        {"model": "auto", "messages": [{"role": "user", "content": "Write a haiku about routers"}]}]})
    model: str = Field(default="auto", min_length=1, max_length=200,
                       description="auto, auto:floor (cheapest acceptable), auto:nitro (fastest) or a model id")
    messages: list[ChatMessage] = Field(min_length=1)
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1, description="counts in the cost and context checks")
    max_completion_tokens: int | None = Field(default=None, ge=1, description="as max_tokens (preferred)")
    user: str | None = Field(default=None, max_length=200)
    route: RouteOptions | None = None


class ChatCompletion(BaseModel):
    """The upstream's completion plus the routing decision in `autoroute`."""
    model_config = ConfigDict(extra="allow")
    id: str
    object: str = "chat.completion"
    model: str
    choices: list[dict[str, Any]]
    autoroute: dict[str, Any]


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    code: str | None = None
    param: str | None = None


class OpenAIError(BaseModel):
    error: OpenAIErrorDetail


def request_examples() -> dict[str, Any]:
    """Request-body examples for the OpenAPI page: the endpoints' defaults."""
    return {"/route": EXAMPLE_REQUEST.model_dump(mode="json", exclude_defaults=True),
            "/route_batch": EXAMPLE_BATCH.model_dump(mode="json", exclude_defaults=True),
            "/feedback": EXAMPLE_FEEDBACK.model_dump(mode="json", exclude_none=True),
            "/v1/chat/completions": ChatCompletionRequest.model_config["json_schema_extra"]["examples"][0]}
