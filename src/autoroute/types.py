"""Request and decision objects: the one vocabulary shared by the CLI, the
router, training and the HTTP service."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

TASKS: tuple[str, ...] = (
    "coding", "code_review", "debugging", "analysis", "creative_writing", "simple_qa",
    "research", "math", "translation", "summarization", "planning",
)
TaskType = Literal[
    "coding", "code_review", "debugging", "analysis", "creative_writing", "simple_qa",
    "research", "math", "translation", "summarization", "planning",
]
TASK_LABELS: dict[str, str] = {
    "coding": "coding", "code_review": "code review", "debugging": "debugging", "analysis": "analysis",
    "creative_writing": "creative writing", "simple_qa": "quick questions", "research": "research",
    "math": "math", "translation": "translation", "summarization": "summarization", "planning": "planning",
}
SpaceType = Literal["coding", "writing", "research", "general"]


class RoutingError(ValueError):
    """A request the router cannot decide, with a message that says why.

    `code` names the kind of problem (e.g. ``invalid_request``,
    ``no_eligible_model``, ``unknown_model``) so callers can map it to an
    HTTP status or a CLI exit code."""

    def __init__(self, message: str, code: str = "invalid_request"):
        super().__init__(message)
        self.code = code


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class Message(_Strict):
    role: Literal["system", "user", "assistant", "tool"] = "user"
    content: str


class Attachment(_Strict):
    """A document or image attached to the conversation."""
    name: str = "attachment"
    kind: Literal["document", "image"] = "document"
    text: str | None = None
    tokens: int | None = Field(default=None, ge=0, description="known token count of the attachment")


class Space(_Strict):
    type: SpaceType = "general"
    preferred_models: list[str] = Field(default_factory=list)
    avoided_models: list[str] = Field(default_factory=list)


class Area(_Strict):
    model_lock: str | None = None
    task_type: TaskType | None = None


class Policy(_Strict):
    approved_models: list[str] | None = Field(
        default=None, description="only these models may be used (ids, aliases or wildcards)")
    sensitive_data: Literal["detect", "off"] = Field(
        default="detect", description="detect: sensitive data in the prompt restricts the pool to approved models")


class Needs(_Strict):
    vision: bool = False
    tools: bool = False


class Request(_Strict):
    messages: list[Message] = Field(min_length=1)
    attachments: list[Attachment] = Field(default_factory=list)
    space: Space | None = None
    area: Area | None = None
    mode: Literal["chat", "planning", "assist"] = "chat"
    policy: Policy | None = None
    user_id: str | None = None
    org_id: str | None = None
    candidates: list[str] | None = Field(
        default=None, description="restrict the pool: ids, aliases or wildcards such as 'anthropic/*'")
    needs: Needs = Field(default_factory=Needs)
    cost_quality: float = Field(
        default=0.5, ge=0.0, le=1.0, description="0 = cheapest acceptable, 1 = best quality regardless of cost")
    budget: float | None = Field(default=None, ge=0.0, description="max estimated USD for this call")
    expected_output_tokens: int | None = Field(default=None, ge=1)
    variant: Literal["auto", "floor", "nitro"] = Field(
        default="auto", description="auto: quality for cost under the knob; floor: the cheapest model within "
                                    "the configured band of the best predicted quality; nitro: the fastest one")

    @field_validator("messages")
    @classmethod
    def _has_user_text(cls, messages: list[Message]) -> list[Message]:
        if not any(m.role == "user" and m.content.strip() for m in messages):
            raise ValueError("messages must contain at least one non-empty user message")
        return messages

    @model_validator(mode="after")
    def _no_blank_candidates(self) -> "Request":
        if self.candidates is not None and (not self.candidates or any(not c.strip() for c in self.candidates)):
            raise ValueError("candidates, when given, must be a non-empty list of model ids")
        return self

    @property
    def last_user_text(self) -> str:
        for m in reversed(self.messages):
            if m.role == "user" and m.content.strip():
                return m.content
        return ""

    @classmethod
    def from_prompt(cls, prompt: str, **kwargs) -> "Request":
        return cls(messages=[Message(role="user", content=prompt)], **kwargs)


class Alternative(BaseModel):
    model: str
    display_name: str
    score: float
    quality: float
    estimated_cost: float | None


class Decision(BaseModel):
    decision_id: str
    selected_model: str
    display_name: str
    tier: int = Field(description="1 context rules, 2 fast signals, 3 learned (classifier + preference), 4 user preference")
    tier_name: str
    task: str
    confidence: float
    reason: str
    signals: list[str]
    alternatives: list[Alternative]
    scores: dict[str, float] = Field(description="predicted quality (probability of a good answer) for every "
                                                 "candidate in the pool")
    score_sources: dict[str, str] = Field(
        default_factory=dict, description="where each score comes from: learned (the preference model on this "
                                          "prompt), measured_prior, proxy_prior, family_prior or catalog")
    best_model: str | None = Field(default=None, description="the candidate with the best predicted quality")
    quality_vs_best: float | None = Field(default=None, description="selected model's predicted quality / the best's")
    cost_vs_best: float | None = Field(default=None, description="selected model's estimated cost / the best's "
                                                                 "(null when a price is unknown)")
    estimated_cost: float | None
    estimated_tokens: int
    degraded: bool = False
    latency_ms: float = 0.0
