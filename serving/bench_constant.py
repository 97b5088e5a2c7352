"""The reference for `make bench-serving`: a bare BentoML service whose /route
returns a constant decision-sized JSON (same HTTP stack, no routing).

    bentoml serve serving.bench_constant:Constant --port 3001"""
from __future__ import annotations

import bentoml
from pydantic import BaseModel


class Message(BaseModel):
    role: str
    content: str


class Answer(BaseModel):
    selected_model: str = "claude-haiku-4.5"
    tier: int = 2
    reason: str = "a constant answer"


@bentoml.service(name="constant", workers=1, logging={"access": {"enabled": False}})
class Constant:
    @bentoml.api(route="/route")
    async def route(self, messages: list[Message]) -> Answer:
        return Answer()
