"""How the router uses the learned tiers through the LearnedScorer interface,
and Tier 4 fit from feedback rows."""
import numpy as np
import pandas as pd
import pytest

from autoroute.config import build_router, load_config
from autoroute.scoring import LearnedScorer, Scores, StaticUserPreference
from autoroute.types import TASKS, Request, Space


class TableScorer(LearnedScorer):
    """Scores looked up from fixed tables keyed by prompt (an interface double)."""

    def __init__(self, probs: dict[str, dict[str, float]], quality: dict[str, dict[str, float]], models):
        self.probs, self.quality, self.models = probs, quality, tuple(models)
        self.calls = 0

    def score(self, texts, models=None):
        self.calls += 1
        p = np.array([[self.probs[t].get(k, 0.0) for k in TASKS] for t in texts])
        q = np.array([[self.quality.get(t, {}).get(m, 0.5) for m in self.models] for t in texts])
        return Scores(task_probs=p, quality=q, models=self.models)


SURE = "Give me a recipe for onion soup with gruyere"
UNSURE = "Thoughts on the thing we discussed"
MMLU = "Which of the following best describes the role of mitochondria in eukaryotic cells"


@pytest.fixture(scope="module")
def cfg():
    return load_config()


@pytest.fixture
def scorer():
    return TableScorer(
        probs={SURE: {"creative_writing": 0.9, "simple_qa": 0.1}, UNSURE: {"analysis": 0.3, "research": 0.25},
               MMLU: {"simple_qa": 0.8}},
        quality={MMLU: {"gpt-4-1106-preview": 0.95, "mixtral-8x7b-instruct": 0.2}},
        models=["gpt-4-1106-preview", "mixtral-8x7b-instruct"])


def test_confident_classifier_decides_the_task(cfg, scorer):
    d = build_router(cfg, scorer=scorer).route(Request.from_prompt(SURE))
    assert d.tier == 3 and d.task == "creative_writing" and d.confidence == pytest.approx(0.9)
    assert "classified as creative writing" in d.reason


def test_low_confidence_follows_the_preference_model_and_says_so(cfg):
    """Unsure classifier: no Space default is forced; the model with the best predicted
    quality for this prompt wins (here the preference model rates a mid-priced model best)."""
    offered = ["claude-opus-4.5", "claude-sonnet-4", "claude-haiku-4.5", "gpt-5.2", "gpt-4o", "gpt-4o-mini",
               "gemini-3-pro", "deepseek-v3"]
    quality = {UNSURE: {m: 0.3 for m in offered} | {"gpt-4o": 0.97}}
    scorer = TableScorer(probs={UNSURE: {"analysis": 0.3, "research": 0.25}}, quality=quality, models=offered)
    router = build_router(cfg, scorer=scorer)
    d = router.route(Request.from_prompt(UNSURE, cost_quality=0.9))
    assert d.tier == 3 and d.task == "general" and d.selected_model == "gpt-4o"
    assert "classifier unsure (0.30 for analysis), so the best predicted quality for this prompt" in d.reason
    # the user's own Space preference is explicit context and still wins
    d = router.route(Request.from_prompt(UNSURE, space=Space(type="general", preferred_models=["deepseek-v3"])))
    assert d.selected_model == "deepseek-v3"


class ProbsOnlyScorer(TableScorer):
    def score(self, texts, models=None):
        return Scores(task_probs=super().score(texts, models).task_probs, quality=None, models=())


def test_low_confidence_without_quality_predictions_falls_back_to_the_space_default(cfg):
    scorer = ProbsOnlyScorer(probs={UNSURE: {"analysis": 0.3, "research": 0.25}}, quality={}, models=[])
    d = build_router(cfg, scorer=scorer).route(Request.from_prompt(UNSURE))
    assert d.selected_model == "claude-sonnet-4" and "classifier unsure" in d.reason and "general Space" in d.reason


def test_learned_quality_replaces_the_prior_for_known_models(cfg, scorer):
    router = build_router(cfg, scorer=scorer)
    req = Request.from_prompt(MMLU, candidates=["gpt-4-1106-preview", "mixtral-8x7b-instruct"], cost_quality=0.9)
    d = router.route(req)
    assert d.scores == {"gpt-4-1106-preview": 0.95, "mixtral-8x7b-instruct": 0.2}
    assert d.selected_model == "gpt-4-1106-preview"
    d = router.route(req.model_copy(update={"cost_quality": 0.0}))
    assert d.selected_model == "mixtral-8x7b-instruct"


def test_batch_runs_the_scorer_once_and_skips_rule_decisions(cfg, scorer):
    router = build_router(cfg, scorer=scorer)
    ds = router.route_batch([Request.from_prompt(SURE), Request.from_prompt(MMLU), Request.from_prompt("hello")])
    assert scorer.calls == 1 and [d.tier for d in ds] == [3, 3, 2]


def test_tier4_user_preference_changes_the_pick(cfg, scorer):
    base = build_router(cfg, scorer=scorer).route(Request.from_prompt(SURE))
    runner_up = base.alternatives[0]
    pref = StaticUserPreference({"user:ada": {runner_up.model: 0.2}})
    router = build_router(cfg, scorer=scorer, user_preference=pref)
    assert router.route(Request.from_prompt(SURE)).selected_model == base.selected_model != runner_up.model
    d = router.route(Request.from_prompt(SURE, user_id="ada"))
    assert d.selected_model == runner_up.model and d.tier == 4 and "your usage" in d.reason


