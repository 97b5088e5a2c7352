"""Tier 4 as a learned model: per-user / per-org preferences fitted from
overrides, regenerations and ratings (Bradley-Terry with shrinkage user -> org
-> global and time decay), and how the router uses them: over learned and
rule-tier choices, never over a lock, a policy or sensitive-data constraints."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from autoroute.config import build_router, load_config
from autoroute.types import Request
from autoroute.user_preference import Tier4Model, Tier4Settings, fit_tier4, load_user_preference, \
    save_user_preference

OPUS, SONNET, GPT4O, MINI = "claude-opus-4.5", "claude-sonnet-4", "gpt-4o", "gpt-4o-mini"
POOL = [SONNET, OPUS, GPT4O, MINI]
DAY = 86400.0


def ev(event, routed, chosen=None, *, user="ada", org="acme", task="coding", ts=0.0, rating=None):
    return dict(decision_id=f"d{ts}", prompt="p", event=event, routed_model=routed, chosen_model=chosen or routed,
                rating=rating, user_id=user, org_id=org, task=task, ts=float(ts))


def overrides(n, routed=SONNET, chosen=OPUS, **kw):
    return [ev("override", routed, chosen, ts=i, **kw) for i in range(n)]


@pytest.fixture(scope="module")
def router_cfg():
    return load_config([])


def test_consistent_overrides_build_a_task_preference_with_shrinkage():
    m = fit_tier4(pd.DataFrame(overrides(4)))
    ada = m.view("ada", "acme", POOL, "coding")
    assert ada.logits[1] > 0 > ada.logits[0] and ada.source[1] == "user"
    assert ada.overrides(0) == 1                              # strong enough to replace a rule's Sonnet
    other_task = m.view("ada", "acme", POOL, "creative_writing").logits
    assert 0 < other_task[1] < ada.logits[1]                  # the task-agnostic part carries over, less
    colleague = m.view("bob", "acme", POOL, "coding")
    assert 0 < colleague.logits[1] < ada.logits[1] and colleague.overrides(0) is None   # org level: shrunk
    stranger = m.view("zed", "other", POOL, "coding").logits
    assert 0 < stranger[1] < colleague.logits[1]              # the global level: shrunk further
    assert np.all(np.abs(ada.adjust) <= m.settings.max_boost)


def test_evidence_must_be_strong_before_a_rule_default_is_replaced():
    live = ("org", "user")
    assert fit_tier4(pd.DataFrame(overrides(1)), levels=live).view("ada", "acme", POOL, "coding").overrides(0) is None
    assert fit_tier4(pd.DataFrame(overrides(3)), levels=live).view("ada", "acme", POOL, "coding").overrides(0) == 1
    mixed = overrides(3) + overrides(3, chosen=GPT4O)[:3]
    split = fit_tier4(pd.DataFrame(mixed), levels=live).view("ada", "acme", POOL, "coding")
    assert split.logits[0] < 0 and split.overrides(0) is not None   # away from Sonnet, to one of the two


def test_old_events_decay():
    s = Tier4Settings(half_life_days=7.0)
    recent = fit_tier4(pd.DataFrame(overrides(3)), s, now=10.0).view("ada", "acme", POOL, "coding").logits[1]
    old = fit_tier4(pd.DataFrame(overrides(3)), s, now=10.0 + 60 * DAY).view("ada", "acme", POOL, "coding").logits[1]
    assert 0 < old < recent / 2


def test_ratings_and_regenerations():
    rows = [ev("rating", GPT4O, rating=5, ts=i) for i in range(4)] + \
           [ev("regenerate", MINI, ts=10 + i) for i in range(4)] + \
           [ev("regenerate", MINI, GPT4O, ts=20 + i, user="cy") for i in range(3)]
    m = fit_tier4(pd.DataFrame(rows))
    ada = m.view("ada", "acme", POOL, "coding").logits
    assert ada[2] > 0 > ada[3]
    cy = m.view("cy", "acme", POOL, "coding").logits
    assert cy[2] > 0 > cy[3]                                # a regeneration with another model is a comparison


def test_live_fit_builds_on_the_bundle_and_only_on_newer_events(tmp_path):
    base = fit_tier4(pd.DataFrame(overrides(5, user="u1", org="o1")))
    save_user_preference(base, tmp_path / "t4.json")
    loaded = load_user_preference(tmp_path / "t4.json")
    assert isinstance(loaded, Tier4Model) and loaded.table == base.table and loaded.fitted_until == 4.0
    np.testing.assert_allclose(loaded.view("u1", "o1", POOL, "coding").logits, base.view("u1", "o1", POOL, "coding").logits)
    newer = pd.DataFrame(overrides(5, user="u1", org="o1") + [ev("override", SONNET, GPT4O, user="u2", ts=100 + i)
                                                               for i in range(3)])
    live = fit_tier4(newer, levels=("org", "user"), parent=loaded)
    assert "user:u1" not in live.table                        # already in the bundle: not counted twice
    u1 = live.view("u1", "o1", POOL, "coding").logits
    np.testing.assert_allclose(u1, loaded.view("u1", "o1", POOL, "coding").logits)
    u2 = live.view("u2", None, POOL, "coding").logits
    assert u2[2] > 0 and "global" not in live.table           # the live fit never moves the global level


def test_router_switches_a_coding_space_after_repeated_overrides(router_cfg):
    pref = fit_tier4(pd.DataFrame(overrides(3)), levels=("org", "user"))
    router = build_router(router_cfg, user_preference=pref)
    coding = {"space": {"type": "coding"}}
    base = router.route(Request.from_prompt("write a binary search", user_id="zed", **coding))
    assert base.selected_model == SONNET and base.tier == 1
    d = router.route(Request.from_prompt("write a binary search", user_id="ada", org_id="acme", **coding))
    assert d.selected_model == OPUS and d.tier == 4 and d.tier_name == "user preference"
    assert "you usually switch to Claude Opus 4.5 for coding" in d.reason
    assert "the rule default (a coding Space) is Claude Sonnet 4" in d.reason


def test_router_never_overrides_a_lock_a_policy_or_sensitive_data(router_cfg):
    pref = fit_tier4(pd.DataFrame(overrides(8, chosen="deepseek-v3")), levels=("org", "user"))
    router = build_router(router_cfg, user_preference=pref)
    who = dict(user_id="ada", org_id="acme", space={"type": "coding"})
    free = router.route(Request.from_prompt("write a binary search", **who))
    assert free.selected_model == "deepseek-v3"               # the preference is strong enough
    locked = router.route(Request.from_prompt("write a binary search", area={"model_lock": SONNET}, **who))
    assert locked.selected_model == SONNET and locked.tier == 1
    policy = router.route(Request.from_prompt("write a binary search", policy={"approved_models": [SONNET, OPUS]},
                                              **who))
    assert policy.selected_model in (SONNET, OPUS) and policy.selected_model != "deepseek-v3"
    secret = router.route(Request.from_prompt("write a binary search for jane.doe@example.com", **who))
    assert secret.selected_model != "deepseek-v3"             # not approved for sensitive data


def test_tier4_over_a_learned_choice_names_the_preference(router_cfg):
    rows = [ev("override", "claude-haiku-4.5", MINI, task="simple_qa", ts=i) for i in range(4)]
    router = build_router(router_cfg, user_preference=fit_tier4(pd.DataFrame(rows), levels=("user",)))
    d = router.route(Request.from_prompt("hello there", user_id="ada"))
    assert d.selected_model == MINI and d.tier == 4
    assert "you usually switch to GPT-4o-mini for quick questions" in d.reason


def test_strong_evidence_replaces_the_learned_pick_whatever_the_quality_gap(router_cfg):
    """The bounded utility term cannot bridge a wide quality gap; consistent overrides must still win."""
    prompt, who = "Explain why the Roman Republic fell, with the main causes.", dict(user_id="ada", org_id="acme",
                                                                                      cost_quality=0.95)
    plain = build_router(router_cfg).route(Request.from_prompt(prompt, **who))
    assert plain.selected_model != MINI and plain.scores[plain.selected_model] - plain.scores[MINI] > 0.2
    rows = [ev("override", plain.selected_model, MINI, task=plain.task, ts=i) for i in range(4)]
    d = build_router(router_cfg, user_preference=fit_tier4(pd.DataFrame(rows), levels=("user",))).route(
        Request.from_prompt(prompt, **who))
    assert d.selected_model == MINI and d.tier == 4 and "you usually switch to GPT-4o-mini" in d.reason
    one = build_router(router_cfg, user_preference=fit_tier4(pd.DataFrame(rows[:1]), levels=("user",))).route(
        Request.from_prompt(prompt, **who))
    assert one.selected_model != MINI                                # one override is not strong evidence
    floor = build_router(router_cfg, user_preference=fit_tier4(pd.DataFrame(rows), levels=("user",))).route(
        Request.from_prompt(prompt, variant="floor", **who))
    assert floor.tier != 4 or floor.selected_model != MINI or "auto:floor" in floor.reason
