"""Invariants of the router, checked on generated requests (hypothesis)."""
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from autoroute.config import build_router, load_config
from autoroute.types import Area, Message, Policy, Request, RoutingError, Space

ROUTER = build_router(load_config())
CAT = ROUTER.catalog
ALL = list(CAT.cards)
OFFERED = CAT.offered
SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def luhn_complete(prefix: str) -> str:
    for last in "0123456789":
        digits = prefix + last
        total = 0
        for i, ch in enumerate(reversed(digits)):
            d = int(ch)
            if i % 2 == 1:
                d = d * 2 - 9 if d * 2 > 9 else d * 2
            total += d
        if total % 10 == 0:
            return digits
    raise AssertionError


texts = st.text(min_size=1, max_size=400)
models = st.sampled_from(ALL)
model_sets = st.lists(models, min_size=1, max_size=6, unique=True)
spaces = st.none() | st.builds(Space, type=st.sampled_from(["coding", "writing", "research", "general"]))
card_numbers = st.from_regex(r"4[0-9]{14}", fullmatch=True).map(luhn_complete)
secrets = st.from_regex(r"sk-[A-Za-z0-9]{24}", fullmatch=True) | st.from_regex(r"AKIA[0-9A-Z]{16}", fullmatch=True)


def requests(**extra):
    return st.builds(
        Request,
        messages=st.lists(st.builds(Message, role=st.sampled_from(["user", "assistant"]), content=texts),
                          min_size=0, max_size=5).map(lambda ms: ms + [Message(role="user", content="go on")]),
        space=spaces, mode=st.sampled_from(["chat", "planning", "assist"]),
        cost_quality=st.floats(0, 1), **extra)


@SETTINGS
@given(req=requests(candidates=st.none() | model_sets,
                    policy=st.none() | st.builds(Policy, approved_models=model_sets)))
def test_selected_model_is_always_in_the_allowed_pool(req):
    try:
        d = ROUTER.route(req)
    except RoutingError as err:
        assert err.code in ("no_eligible_model",)
        return
    pool = set(CAT.match(req.candidates)) if req.candidates else set(OFFERED)
    if req.policy and req.policy.approved_models:
        pool &= set(CAT.match(req.policy.approved_models))
    assert d.selected_model in pool
    assert set(d.scores) <= pool and d.selected_model in d.scores


@SETTINGS
@given(req=requests(), lock=models, approved=st.none() | model_sets)
def test_a_lock_always_wins(req, lock, approved):
    req = req.model_copy(update={"area": Area(model_lock=lock),
                                 "policy": Policy(approved_models=approved) if approved else None})
    try:
        d = ROUTER.route(req)
    except RoutingError as err:
        # only a lock the policy forbids (or that cannot hold the conversation) may fail
        assert err.code == "no_eligible_model"
        assert (approved and lock not in approved) or "sensitive" in str(err) or "context window" in str(err) \
            or "vision" in str(err)
        return
    assert d.selected_model == lock and d.tier == 1


@SETTINGS
@given(before=texts, after=texts, secret=card_numbers | secrets, approved=model_sets,
       candidates=st.none() | model_sets)
def test_card_numbers_and_secrets_never_reach_unapproved_models(before, after, secret, approved, candidates):
    req = Request.from_prompt(f"{before} {secret} {after}", policy=Policy(approved_models=approved),
                              candidates=candidates)
    try:
        d = ROUTER.route(req)
    except RoutingError:
        return
    assert "sensitive_data" in d.signals
    assert d.selected_model in approved


@SETTINGS
@given(data=st.data())
def test_default_sensitive_policy_without_request_policy(data):
    secret = data.draw(card_numbers | secrets)
    d = ROUTER.route(Request.from_prompt(f"please check {secret}"))
    allowed = set(CAT.match(ROUTER.rules["sensitive"]["approved_models"], strict=False))
    assert d.selected_model in allowed


@SETTINGS
@given(payload=st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20))
def test_no_payload_crashes_the_router(payload):
    body = {"messages": [{"role": "user", "content": payload}]} if not isinstance(payload, dict) else payload
    try:
        d = ROUTER.route(Request.model_validate(body))
    except (ValidationError, RoutingError):
        return
    assert d.selected_model in CAT.cards


@SETTINGS
@given(text=st.text(alphabet=st.characters(codec="utf-8"), min_size=1))
def test_arbitrary_unicode_never_crashes(text):
    try:
        d = ROUTER.route(Request.from_prompt(text))
    except ValidationError:
        assert not text.strip()
        return
    assert d.selected_model in OFFERED


def test_megabyte_prompt():
    d = ROUTER.route(Request.from_prompt("数据 analysis, row; " * 60_000))
    assert d.estimated_tokens > 250_000 and d.selected_model == "gemini-3-pro"
