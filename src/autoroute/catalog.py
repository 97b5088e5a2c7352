"""The model catalog: one card per model (ids, aliases, prices, limits,
capabilities) and the one alias table every part of the project resolves
model names through."""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from autoroute.types import RoutingError


@dataclass(frozen=True)
class Price:
    """USD per 1M tokens; None means nobody has published the price."""
    input: float | None = None
    output: float | None = None
    cached_input: float | None = None

    @property
    def known(self) -> bool:
        return self.input is not None and self.output is not None


@dataclass(frozen=True)
class ModelCard:
    id: str
    display_name: str
    provider: str
    offered: bool = False
    aliases: tuple[str, ...] = ()
    price: Price = field(default_factory=Price)
    context_window: int = 0
    speed: float = 0.0
    vision: bool = False
    tools: bool = False
    capabilities: Mapping[str, float] = field(default_factory=dict)

    def estimate_cost(self, input_tokens: int, output_tokens: int) -> float | None:
        if not self.price.known:
            return None
        return (input_tokens * self.price.input + output_tokens * self.price.output) / 1e6

    def names(self) -> tuple[str, ...]:
        return (self.id, f"{self.provider}/{self.id}", *self.aliases)


def _norm(name: str) -> str:
    return name.strip().lower()


class Catalog:
    """Model cards by id, with alias resolution and wildcard matching."""

    def __init__(self, cards: Iterable[ModelCard]):
        self.cards: dict[str, ModelCard] = {}
        self._by_name: dict[str, str] = {}
        for card in cards:
            if card.id in self.cards:
                raise ValueError(f"catalog: model id {card.id!r} defined twice")
            self.cards[card.id] = card
            for name in card.names():
                key = _norm(name)
                other = self._by_name.get(key)
                if other is not None and other != card.id:
                    raise ValueError(f"catalog: name {name!r} is used by both {other!r} and {card.id!r}")
                self._by_name[key] = card.id

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "Catalog":
        """Build from the `catalog` config node: ``{models: {id: {...card...}}}``."""
        models = cfg.get("models") if hasattr(cfg, "get") else None
        if not models:
            raise ValueError("catalog config has no `models`")
        cards = []
        for model_id, spec in models.items():
            spec = dict(spec)
            try:
                price = Price(**dict(spec.pop("price", None) or {}))
                cards.append(ModelCard(
                    id=str(model_id),
                    display_name=str(spec.pop("display_name", model_id)),
                    provider=str(spec.pop("provider", "other")),
                    offered=bool(spec.pop("offered", False)),
                    aliases=tuple(str(a) for a in (spec.pop("aliases", None) or ())),
                    price=price,
                    context_window=int(spec.pop("context_window", 0) or 0),
                    speed=float(spec.pop("speed", 0) or 0),
                    vision=bool(spec.pop("vision", False)),
                    tools=bool(spec.pop("tools", False)),
                    capabilities={str(k): float(v) for k, v in dict(spec.pop("capabilities", None) or {}).items()},
                ))
            except TypeError as err:
                raise ValueError(f"catalog: model {model_id!r}: {err}") from err
            if spec:
                raise ValueError(f"catalog: model {model_id!r} has unknown fields {sorted(spec)}")
        return cls(cards)

    def __contains__(self, name: str) -> bool:
        return _norm(name) in self._by_name

    def __getitem__(self, model_id: str) -> ModelCard:
        return self.cards[self.resolve(model_id)]

    def __len__(self) -> int:
        return len(self.cards)

    @property
    def offered(self) -> list[str]:
        return [m for m, c in self.cards.items() if c.offered]

    def get(self, name: str) -> ModelCard | None:
        model_id = self._by_name.get(_norm(name))
        return self.cards[model_id] if model_id else None

    def resolve(self, name: str) -> str:
        """Catalog id for an id or alias; RoutingError(code='unknown_model') otherwise."""
        model_id = self._by_name.get(_norm(name))
        if model_id is None:
            raise RoutingError(f"unknown model {name!r}: not an id or alias in the catalog", code="unknown_model")
        return model_id

    def try_resolve(self, name: str) -> str | None:
        return self._by_name.get(_norm(name))

    def match(self, patterns: Iterable[str], *, strict: bool = True, offered_wildcards: bool = False) -> list[str]:
        """Ids matched by ids, aliases or wildcards (``anthropic/*``, ``gpt-4o*``), in catalog order.

        With ``strict``, a pattern that matches nothing is an error. With
        ``offered_wildcards``, wildcards expand over the offered models only
        (when the catalog offers any): ``anthropic/*`` in a pool means the
        product's Claude models, not every benchmark model; ids and aliases
        still reach any model."""
        chosen: set[str] = set()
        scope = set(self.offered) if offered_wildcards and self.offered else set(self.cards)
        for pattern in patterns:
            pat = _norm(pattern)
            if not any(ch in pat for ch in "*?["):
                model_id = self._by_name.get(pat)
                if model_id is None:
                    if strict:
                        raise RoutingError(f"unknown model {pattern!r}: not an id or alias in the catalog",
                                           code="unknown_model")
                    continue
                chosen.add(model_id)
                continue
            hits = {self._by_name[n] for n in self._by_name
                    if fnmatch.fnmatchcase(n, pat) and self._by_name[n] in scope}
            if not hits and strict:
                raise RoutingError(f"model pattern {pattern!r} matches no model in the catalog", code="unknown_model")
            chosen |= hits
        return [m for m in self.cards if m in chosen]
