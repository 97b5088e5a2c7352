"""The router pipeline: hard constraints, Tier 1 context rules, Tier 2 fast
signals, Tier 3 learned task + quality scores, Tier 4 user preference, then
selection by quality for cost under the request's knob."""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from autoroute.catalog import Catalog
from autoroute.scoring import LearnedScorer, NoUserPreference, Scores, Tier4View, UserPreference, prior_quality
from autoroute.selection import SelectionConfig, choose, explain, relative
from autoroute.signals import Signals, extract
from autoroute.types import TASK_LABELS, TASKS, Alternative, Decision, Request, RoutingError

TIER_NAMES = {1: "context rules", 2: "fast signals", 3: "learned", 4: "user preference"}
SOURCE_LABELS = {"measured_prior": "measured prior (Arena ratings)", "proxy_prior": "prior from an earlier version",
                 "family_prior": "family prior (no evidence for this model yet)",
                 "default": "default prior (no evidence for this model)"}


@dataclass
class RouterSettings:
    """Selection settings (config group `router`)."""
    classifier_min_confidence: float = 0.5
    cost_weight: float = 0.15             # lambda at cost_quality = 0.5 (0 -> infinite, 1 -> 0)
    unknown_price: str = "pessimistic"    # pessimistic: cost of the priciest known model | exclude
    max_alternatives: int = 5
    max_prompt_chars: int = 2_000_000
    user_preference_weight: float = 1.0
    floor_band: float = 0.05              # auto:floor = cheapest within this share of the best predicted quality
    nitro_band: float = 0.08              # auto:nitro = fastest within this share of the best predicted quality

    @property
    def selection(self) -> SelectionConfig:
        return SelectionConfig(cost_weight=self.cost_weight, unknown_price=self.unknown_price,
                               floor_band=self.floor_band, nitro_band=self.nitro_band)

    def __post_init__(self):
        if self.unknown_price not in ("pessimistic", "exclude"):
            raise ValueError(f"router.settings.unknown_price must be 'pessimistic' or 'exclude', "
                             f"not {self.unknown_price!r}")
        if not 0.0 <= self.classifier_min_confidence <= 1.0:
            raise ValueError("router.settings.classifier_min_confidence must be in [0, 1]")
        self.selection  # validates the selection settings


@dataclass
class _Plan:
    """What the tiers decided before selection."""
    tier: int = 3
    task: str | None = None
    confidence: float = 0.0
    prefer: list[str] = field(default_factory=list)
    why: str = ""


class Router:
    def __init__(self, catalog: Catalog, rules: Mapping[str, Any], scorer: LearnedScorer | None = None,
                 user_preference: UserPreference | None = None, settings: RouterSettings | None = None,
                 degraded: bool = False):
        self.catalog = catalog
        self.rules = rules
        self.scorer = scorer
        self.user_preference = user_preference or NoUserPreference()
        self.settings = settings or RouterSettings()
        self.degraded = degraded
        self._check_rules()
        sens = rules.get("sensitive", {}) or {}
        self._sensitive_kinds = set(sens.get("kinds", []) or []) or None
        approved = sens.get("approved_models")
        self._sensitive_approved = set(catalog.match(approved, strict=False)) if approved else None

    # ----------------------------------------------------------------- config
    def _check_rules(self) -> None:
        """Fail at start-up, not per request, on malformed rules or unknown tasks."""
        def check_models(names, where):
            # A rule may name models of another catalog (e.g. with catalog=[benchmark]);
            # it just never matches then. A name no catalog could hold is a typo.
            for n in names or []:
                if not isinstance(n, str) or not n.strip():
                    raise ValueError(f"rules: {where} has an empty model name")

        def check_task(task, where):
            if task is not None and task not in TASKS:
                raise ValueError(f"rules: {where} names task {task!r}; tasks are {', '.join(TASKS)}")

        for name, spec in (self.rules.get("spaces") or {}).items():
            check_models(spec.get("prefer"), f"spaces.{name}")
            check_task(spec.get("task"), f"spaces.{name}")
        for name, spec in (self.rules.get("modes") or {}).items():
            check_models(spec.get("prefer"), f"modes.{name}")
            check_task(spec.get("task"), f"modes.{name}")
        for task, models in (self.rules.get("area_tasks") or {}).items():
            check_task(task, "area_tasks")
            check_models(models, f"area_tasks.{task}")
        for i, rule in enumerate(self.rules.get("signal_rules") or []):
            check_models(rule.get("prefer"), f"signal_rules[{i}] ({rule.get('name')})")
            check_task(rule.get("task"), f"signal_rules[{i}] ({rule.get('name')})")

    # ------------------------------------------------------------------ route
    def route(self, request: Request) -> Decision:
        return self.route_batch([request])[0]

    def route_batch(self, requests: Sequence[Request], errors: str = "raise") -> list[Decision | RoutingError]:
        """Decide a batch; the learned scorer runs once over the prompts that need it.

        errors: ``raise`` (the first request that cannot be routed raises its
        RoutingError) or ``return`` (its RoutingError takes its place in the output;
        the other requests are still decided in the same pass)."""
        return self.sweep(requests, None, errors)[0]

    def sweep(self, requests: Sequence[Request], knobs: Sequence[float] | None,
              errors: str = "raise") -> list[list[Decision | RoutingError]]:
        """``route_batch`` at each knob value (every request's ``cost_quality`` set to it), with
        the tiers and the learned scorer run once for all of them: one list of decisions per
        knob, identical to ``route_batch`` of the requests at that knob (the evaluation's
        knob sweep; ``knobs=None``: the requests' own knobs)."""
        if errors not in ("raise", "return"):
            raise ValueError(f"route_batch errors={errors!r}: use 'raise' or 'return'")
        t0 = time.perf_counter()
        staged: list = []
        for r in requests:
            try:
                staged.append(self._prepare(r))
            except RoutingError as err:
                if errors == "raise":
                    raise
                staged.append(err)
        need = [i for i, st in enumerate(staged) if not isinstance(st, RoutingError) and self._needs_scores(st)]
        scores: Scores | None = None
        if self.scorer is not None and need:
            # only the models some request of the batch may be routed to (the heads' cost grows with them)
            pools = set().union(*(staged[i][3] for i in need))
            models = [m for m in self.scorer.models if m in pools]
            scores = self.scorer.score([requests[i].last_user_text for i in need], models)
        row_of = {i: k for k, i in enumerate(need)}
        out = []
        for knob in ([None] if knobs is None else knobs):
            batch: list[Decision | RoutingError] = []
            for i, st in enumerate(staged):
                if isinstance(st, RoutingError):
                    batch.append(st)
                    continue
                req, sig, plan, pool = st
                if knob is not None:
                    req = req.model_copy(update={"cost_quality": float(knob)})
                batch.append(self._select(req, sig, plan, pool, scores, row_of.get(i), t0))
            out.append(batch)
        return out

    def _needs_scores(self, staged) -> bool:
        """The learned scorer runs when no rule decided, or when a rule's
        preferred models are all outside the pool and quality must choose."""
        if self.scorer is None:
            return False
        _, _, plan, pool = staged
        if plan.tier >= 3:
            return True
        return not any(self.catalog.try_resolve(m) in pool for m in plan.prefer)

    def _prepare(self, request: Request):
        r = self.rules
        for m in request.messages:
            if len(m.content) > self.settings.max_prompt_chars:
                raise RoutingError(f"a message has {len(m.content)} characters; the limit is "
                                   f"{self.settings.max_prompt_chars}", code="too_large")
        sig = extract(request, chars_per_token=float(r.get("chars_per_token", 4.0)),
                      long_conversation_turns=int(r.get("long_conversation_turns", 20)),
                      short_question_max_words=int(r.get("short_question_max_words", 20)),
                      sensitive_kinds=self._sensitive_kinds)
        pool, lock = self._pool(request, sig)
        plan = self._tiers(request, sig, lock)
        return request, sig, plan, pool

    def _pool(self, request: Request, sig: Signals) -> tuple[list[str], str | None]:
        """Apply the hard constraints; returns (eligible ids, resolved lock)."""
        cat = self.catalog
        dropped: list[str] = []
        lock = None
        if request.area and request.area.model_lock:
            lock = cat.resolve(request.area.model_lock)
            pool = [lock]
        elif request.candidates is not None:
            pool = cat.match(request.candidates, offered_wildcards=True)
        else:
            pool = cat.offered
        if request.policy and request.policy.approved_models is not None:
            approved = set(cat.match(request.policy.approved_models, strict=False))
            dropped += [f"{m}: not approved by policy" for m in pool if m not in approved]
            pool = [m for m in pool if m in approved]
        if sig.sensitive:
            if request.policy and request.policy.approved_models is not None:
                allowed = set(cat.match(request.policy.approved_models, strict=False))
            else:
                allowed = self._sensitive_approved
            if allowed is None:
                raise RoutingError(
                    f"sensitive data detected ({', '.join(sig.sensitive)}) and no approved models are configured "
                    "for it; set policy.approved_models or rules.sensitive.approved_models", code="no_eligible_model")
            dropped += [f"{m}: not approved for sensitive data ({', '.join(sig.sensitive)})"
                        for m in pool if m not in allowed]
            pool = [m for m in pool if m in allowed]
        kept = []
        for m in pool:
            card = cat.cards[m]
            need = sig.estimated_tokens + (request.expected_output_tokens or 0)   # prompt + requested output
            if card.context_window and need > card.context_window:
                dropped.append(f"{m}: context window {card.context_window} < ~{need} tokens")
            elif (request.needs.vision or "images" in sig.fired) and not card.vision:
                dropped.append(f"{m}: no vision support")
            elif request.needs.tools and not card.tools:
                dropped.append(f"{m}: no tool support")
            else:
                kept.append(m)
        pool = kept
        if self.settings.unknown_price == "exclude" and not lock:
            dropped += [f"{m}: price unknown" for m in pool if not cat.cards[m].price.known]
            pool = [m for m in pool if cat.cards[m].price.known]
        if request.budget is not None:
            out_tokens = self.output_tokens(request, None)
            kept = []
            for m in pool:
                cost = cat.cards[m].estimate_cost(sig.estimated_tokens, out_tokens)
                if cost is None:
                    dropped.append(f"{m}: price unknown, cannot check the budget")
                elif cost > request.budget:
                    dropped.append(f"{m}: estimated ${cost:.4f} over the budget ${request.budget:.4f}")
                else:
                    kept.append(m)
            pool = kept
        if not pool:
            what = f"the locked model {lock!r}" if lock else "no model in the pool"
            raise RoutingError(f"no eligible model: {what} satisfies the constraints ("
                               + "; ".join(dropped[:12]) + ")", code="no_eligible_model")
        if request.space and request.space.avoided_models and not lock:
            avoid = set(cat.match(request.space.avoided_models))
            rest = [m for m in pool if m not in avoid]
            pool = rest or pool
        return pool, lock

    def _tiers(self, request: Request, sig: Signals, lock: str | None) -> _Plan:
        r = self.rules
        if lock:
            return _Plan(1, request.area.task_type if request.area else None, 1.0, [lock],
                         "locked by the Area")
        if request.area and request.area.task_type:
            task = request.area.task_type
            prefer = list((r.get("area_tasks") or {}).get(task) or [])
            return _Plan(1, task, 1.0, self._space_preferred(request) + prefer, f"the Area's task is {task}")
        mode = (r.get("modes") or {}).get(request.mode)
        if mode:
            return _Plan(1, mode.get("task"), 1.0, self._space_preferred(request) + list(mode.get("prefer") or []),
                         f"{request.mode} mode")
        if request.space and request.space.type != "general":
            spec = (r.get("spaces") or {}).get(request.space.type) or {}
            return _Plan(1, spec.get("task"), 1.0, self._space_preferred(request) + list(spec.get("prefer") or []),
                         f"a {request.space.type} Space")
        min_conf = float(r.get("tier2_min_confidence", 0.75))
        for rule in r.get("signal_rules") or []:
            if float(rule.get("confidence", 0)) >= min_conf and all(s in sig.fired for s in rule["when"]):
                return _Plan(2, rule.get("task"), float(rule["confidence"]),
                             self._space_preferred(request) + list(rule.get("prefer") or []),
                             rule.get("reason") or rule["name"])
        return _Plan(3, None, 0.0, self._space_preferred(request), "")

    def _space_preferred(self, request: Request) -> list[str]:
        if request.space and request.space.preferred_models:
            return self.catalog.match(request.space.preferred_models)
        return []

    def output_tokens(self, request: Request, task: str | None) -> int:
        """Expected output tokens of a request (its own number, else the rules' table by task)."""
        if request.expected_output_tokens:
            return request.expected_output_tokens
        table = self.rules.get("expected_output_tokens") or {}
        return int(table.get(task, table.get("default", 500)) if task else table.get("default", 500))

    # ---------------------------------------------------------------- select
    def _select(self, request: Request, sig: Signals, plan: _Plan, pool: list[str], scores: Scores | None,
                row: int | None, t0: float) -> Decision:
        cat, s = self.catalog, self.settings
        tier, task, confidence, why = plan.tier, plan.task, plan.confidence, plan.why
        learned_probs = None
        if scores is not None and row is not None and scores.task_probs is not None:
            learned_probs = scores.task_probs[row]
        prefer = list(plan.prefer) if tier <= 2 else []
        if tier >= 3:
            if learned_probs is not None:
                k = int(np.argmax(learned_probs))
                task, confidence = TASKS[k], float(learned_probs[k])
                if confidence < s.classifier_min_confidence and scores.quality is not None:
                    # no task label is trusted: the preference model's per-prompt quality decides
                    why = (f"classifier unsure ({confidence:.2f} for {TASK_LABELS[task]}), so the best "
                           f"predicted quality for this prompt")
                    prefer, task = list(plan.prefer), None
                elif confidence < s.classifier_min_confidence:
                    space = request.space.type if request.space else "general"
                    fallback = (self.rules.get("spaces") or {}).get(space) or {}
                    why = (f"classifier unsure ({confidence:.2f} for {TASK_LABELS[task]}), "
                           f"so the {space} Space default")
                    prefer = list(plan.prefer) + list(fallback.get("prefer") or [])
                    task = fallback.get("task")
                else:
                    why = f"classified as {TASK_LABELS[task]}"
            else:
                task, confidence = self._hinted_task(sig)
                why = (f"signals suggest {TASK_LABELS[task]}" if task else "no task signal")
        quality, sources = prior_quality(cat, pool, task)
        if scores is not None and row is not None and scores.quality is not None:
            idx = {m: j for j, m in enumerate(scores.models)}
            for i, m in enumerate(pool):
                if m in idx:
                    quality[i] = float(scores.quality[row, idx[m]])
                    sources[i] = scores.source(idx[m])
        out_tokens = self.output_tokens(request, task)
        costs = [cat.cards[m].estimate_cost(sig.estimated_tokens, out_tokens) for m in pool]
        t4 = self.user_preference.view(request.user_id, request.org_id, pool, task)
        adjust = t4.adjust * s.user_preference_weight
        variant = request.variant
        speeds = [cat.cards[m].speed or 0.0 for m in pool]
        pick = choose(quality, costs, request.cost_quality, s.selection, variant, speeds, adjust)
        plain = choose(quality, costs, request.cost_quality, s.selection, variant, speeds) if np.any(adjust) else pick
        final, order = pick.utility, pick.order
        chosen = None
        if prefer and variant == "auto":
            for m in prefer:
                mid = cat.try_resolve(m)
                if mid in pool:
                    chosen = pool.index(mid)
                    break
        default = chosen
        if chosen is not None and s.user_preference_weight > 0:
            # a rule's preference is a default, not a lock: strong Tier 4 evidence replaces it
            swap = t4.overrides(chosen)
            if swap is not None:
                chosen = swap
                tier, why = 4, (self._tier4_why(t4, pool, swap, default, task)
                                 + f"; the rule default ({why}) is {cat.cards[pool[default]].display_name}")
        if chosen is None:
            chosen = pick.index
            # the bounded utility term moves close calls; strong evidence (the same margin that replaces a
            # rule's default) replaces the selection's pick, whatever the quality gap the scores put between them
            # (measured against the unadjusted pick: the choice the user has been overriding)
            swap = t4.overrides(plain.index) if variant == "auto" and s.user_preference_weight > 0 else None
            if swap is not None:
                tier, why = 4, self._tier4_why(t4, pool, swap, plain.index, task) + (f" ({why})" if why else "")
                chosen = swap
            elif tier >= 3 and np.any(adjust) and plain.index != chosen:
                tier, why = 4, self._tier4_why(t4, pool, chosen, plain.index, task) + f" ({why})"
        if variant != "auto":
            band = s.floor_band if variant == "floor" else s.nitro_band
            what = "cheapest" if variant == "floor" else "fastest"
            why = (why + "; " if why else "") + f"the {what} model within {band:.0%} of the best predicted quality " \
                                                  f"(auto:{variant})"
        model = pool[chosen]
        card = cat.cards[model]
        reason = (f"{card.display_name}, auto-selected for {TASK_LABELS.get(task, task)}" if task
                  else f"{card.display_name}, auto-selected")
        if why:
            reason += f" ({why})"
        first = cat.try_resolve(prefer[0]) if prefer and variant == "auto" else None
        if first is not None and first != model and first not in pool:
            reason += f"; {cat.cards[first].display_name} is not available for this request"
        best_i, q_vs_best, cost_vs_best = relative(quality, costs, chosen)
        best = pool[best_i]
        summary = explain(q_vs_best, cost_vs_best, cat.cards[best].display_name)
        if summary:
            reason += f"; {summary}"
        if costs[chosen] is None:
            reason += "; its price is unknown, so no cost estimate"
        if sources[chosen] != "learned":
            reason += f"; its quality estimate is a {SOURCE_LABELS.get(sources[chosen], sources[chosen])}"
        ranked = [chosen] + [j for j in order if j != chosen]
        # built from values of the declared types: constructed without a validation pass (per decision)
        alts = [Alternative.model_construct(model=pool[j], display_name=cat.cards[pool[j]].display_name,
                                            score=round(float(final[j]), 6), quality=round(float(quality[j]), 6),
                                            estimated_cost=costs[j])
                for j in ranked[1:1 + s.max_alternatives]]
        return Decision.model_construct(
            decision_id=uuid.uuid4().hex, selected_model=model, display_name=card.display_name, tier=tier,
            tier_name=TIER_NAMES[tier], task=task or "general", confidence=round(float(confidence), 6),
            reason=reason, signals=sorted(sig.fired), alternatives=alts,
            scores={m: round(float(q), 6) for m, q in zip(pool, quality)},
            score_sources=dict(zip(pool, sources)), best_model=best,
            quality_vs_best=round(q_vs_best, 6), cost_vs_best=None if cost_vs_best is None else round(cost_vs_best, 6),
            estimated_cost=costs[chosen], estimated_tokens=sig.estimated_tokens, degraded=self.degraded,
            latency_ms=round((time.perf_counter() - t0) * 1000, 3))

    def _tier4_why(self, t4: Tier4View, pool: list[str], chosen: int, instead: int | None, task: str | None) -> str:
        """"you usually switch to Claude Opus 4.5 for coding" (who: you / your organisation / users)."""
        names = self.catalog.cards
        what = f" for {TASK_LABELS.get(task, task)}" if task else ""
        if t4.logits[chosen] > 0:
            src, verb, model = t4.source[chosen], "switch to", pool[chosen]
        elif instead is not None and t4.logits[instead] < 0:
            src, verb, model = t4.source[instead], "switch away from", pool[instead]
        else:
            return "adjusted to your usage"
        who = {"user": "you usually", "org": "your organisation usually", "global": "users usually"}.get(src,
                                                                                                    "you usually")
        if src in ("org", "global"):
            verb = verb.replace("switch", "switches", 1) if src == "org" else verb
        return f"{who} {verb} {names[model].display_name}{what}"

    def _hinted_task(self, sig: Signals) -> tuple[str | None, float]:
        if not sig.task_hints:
            return None, 0.0
        total = sum(sig.task_hints.values())
        task, w = max(sig.task_hints.items(), key=lambda kv: kv[1])
        return task, w / total * 0.6

