"""The model catalog: one card per model (ids, aliases, prices, limits, the
evidence its quality prior comes from, the measured priors) and the one alias
table every part of the project resolves model names through.

A spelling whose meaning depends on the source (``deepseek-chat`` was DeepSeek
V2.5 in 2024 results and is V3 today) is written source-qualified,
``<source>:<spelling>`` (e.g. ``zeroeval:deepseek-chat``), and
`resolve_in(source, name)` tries that form first."""
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


PRIOR_SOURCES = ("measured", "proxy", "family")


@dataclass(frozen=True)
class Prior:
    """Prior quality for one task: P(win) against the reference model, with its interval.

    source: measured (Arena ratings of this model), proxy (of an earlier or
    related version), family (pooled over the family's measured models)."""
    p: float
    lo: float
    hi: float
    source: str
    evidence: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.source not in PRIOR_SOURCES:
            raise ValueError(f"prior source {self.source!r} is not one of {PRIOR_SOURCES}")
        if not 0.0 <= self.lo <= self.p <= self.hi <= 1.0:
            raise ValueError(f"prior needs 0 <= lo <= p <= hi <= 1, got {self.lo}, {self.p}, {self.hi}")


@dataclass(frozen=True)
class Evidence:
    """What a product card's quality prior rests on: `same` = catalog ids whose data
    rows ARE this model, `proxies` = earlier (or related) versions, nearest first,
    `family` = models pooled for a family prior when nothing else exists."""
    same: tuple[str, ...] = ()
    proxies: tuple[str, ...] = ()
    family: tuple[str, ...] = ()


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
    evidence: Evidence = field(default_factory=Evidence)
    priors: Mapping[str, Prior] = field(default_factory=dict)   # task -> prior (conf/catalog/priors.yaml)

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
        """Build from the `catalog` config node: ``{models: {id: {...card...}}, priors: {...}}``
        (`priors` is the derived file conf/catalog/priors.yaml; optional)."""
        models = cfg.get("models") if hasattr(cfg, "get") else None
        if not models:
            raise ValueError("catalog config has no `models`")
        priors = dict((cfg.get("priors") or {}).get("models") or {})
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
                    evidence=Evidence(**{k: tuple(str(m) for m in v or ())
                                         for k, v in dict(spec.pop("evidence", None) or {}).items()}),
                    priors={str(t): Prior(p=float(v["p"]), lo=float(v["lo"]), hi=float(v["hi"]),
                                          source=str(v["source"]), evidence=tuple(v.get("evidence") or ()))
                            for t, v in dict(priors.pop(str(model_id), None) or {}).items()},
                ))
            except (TypeError, KeyError) as err:
                raise ValueError(f"catalog: model {model_id!r}: {err}") from err
            if "capabilities" in spec:
                raise ValueError(f"catalog: model {model_id!r}: hand-typed `capabilities` are gone; quality priors "
                                 "are measured (conf/catalog/priors.yaml, DVC stage `priors`)")
            if spec:
                raise ValueError(f"catalog: model {model_id!r} has unknown fields {sorted(spec)}")
        if priors:
            raise ValueError(f"catalog: priors for models not in the catalog: {sorted(priors)}")
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

    def resolve_in(self, source: str, name: str) -> str | None:
        """Id of `name` as spelled by `source`: the qualified alias ``source:name`` first."""
        return self._by_name.get(_norm(f"{source}:{name}")) or self._by_name.get(_norm(name))

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
