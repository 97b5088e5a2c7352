"""Every row of the product's rule tables (Tiers 1 and 2) and the hard constraints."""
import pytest

from autoroute.config import build_router, load_config
from autoroute.signals import find_sensitive, luhn_valid
from autoroute.types import Area, Attachment, Message, Needs, Policy, Request, RoutingError, Space


@pytest.fixture(scope="module")
def router():
    return build_router(load_config())


def route(router, prompt, **kw):
    return router.route(Request.from_prompt(prompt, **kw))


CODE = "```python\ndef mean(xs):\n    return sum(xs) / len(xs)\n```\n"


# ---------------------------------------------------------------- Tier 1
@pytest.mark.parametrize("space,primary,fallback", [
    ("coding", "claude-sonnet-4", "claude-opus-4.5"),
    ("writing", "claude-opus-4.5", "claude-sonnet-4"),
    ("research", "claude-sonnet-4", "gpt-4o"),
])
def test_space_type_primary_then_fallback(router, space, primary, fallback):
    d = route(router, "Tell me something useful about this.", space=Space(type=space))
    assert (d.selected_model, d.tier) == (primary, 1)
    assert f"a {space} Space" in d.reason
    d = route(router, "Tell me something useful about this.", space=Space(type=space),
              candidates=[m for m in router.catalog.offered if m != primary])
    assert d.selected_model == fallback and d.tier == 1
    assert "not available" in d.reason


def test_general_space_does_not_decide_at_tier1(router):
    d = route(router, "hello!", space=Space(type="general"))
    assert d.tier == 2 and d.selected_model == "claude-haiku-4.5"


def test_space_preferred_and_avoided_models(router):
    d = route(router, "Tell me about Rust lifetimes.", space=Space(type="coding", preferred_models=["gpt-4o"]))
    assert d.selected_model == "gpt-4o"
    d = route(router, "Write a limerick about cats", space=Space(avoided_models=["claude-opus-4.5", "gpt-5.2"]))
    assert d.selected_model not in ("claude-opus-4.5", "gpt-5.2")


def test_area_lock_wins_over_everything_else(router):
    d = route(router, "hi", space=Space(type="writing"), area=Area(model_lock="deepseek-chat"), mode="planning")
    assert d.selected_model == "deepseek-v3" and d.tier == 1 and "locked" in d.reason


def test_area_task_type(router):
    d = route(router, "Here is my text", area=Area(task_type="translation"))
    assert d.task == "translation" and d.selected_model == "gpt-4o" and d.tier == 1


def test_planning_mode_wants_reasoning_model(router):
    d = route(router, "Our team needs to ship the new billing flow", mode="planning")
    assert d.selected_model == "claude-opus-4.5" and d.task == "planning" and d.tier == 1
    d = route(router, "Our team needs to ship the new billing flow", mode="planning",
              candidates=["gpt-5.2", "gpt-4o-mini"])
    assert d.selected_model == "gpt-5.2"


# ---------------------------------------------------------------- Tier 2
@pytest.mark.parametrize("prompt,kwargs,model,task,rule_signal", [
    (CODE + "This crashes with ZeroDivisionError, please fix it.", {}, "claude-sonnet-4", "debugging", "intent_fix"),
    (CODE + "Can you review this code?", {}, "claude-sonnet-4", "code_review", "intent_review"),
    ("Hello!", {}, "claude-haiku-4.5", "simple_qa", "greeting"),
    ("hey there, how are you?", {}, "claude-haiku-4.5", "simple_qa", "greeting"),
    ("What is the capital of Australia?", {}, "claude-haiku-4.5", "simple_qa", "short_question"),
    ("Analyze the attached quarterly report and tell me what changed.",
     {"attachments": [Attachment(name="q3.pdf", text="Revenue rose 12%. " * 200)]},
     "claude-sonnet-4", "analysis", "documents"),
    ("We need a strategy to enter the German market next year.", {}, "claude-opus-4.5", "planning", "intent_plan"),
])
def test_signal_rules(router, prompt, kwargs, model, task, rule_signal):
    d = route(router, prompt, **kwargs)
    assert d.tier == 2, d.reason
    assert d.selected_model == model and d.task == task
    assert rule_signal in d.signals


def test_short_question_falls_back_to_gpt4o_mini_without_haiku(router):
    d = route(router, "Who wrote Dune?", candidates=["gpt-4o-mini", "gpt-4o", "claude-opus-4.5"])
    assert d.selected_model == "gpt-4o-mini" and d.tier == 2


def test_long_conversation_goes_to_claude(router):
    msgs = []
    for i in range(12):
        msgs += [Message(role="user", content=f"step {i}: tweak the paragraph"), Message(role="assistant", content="ok")]
    d = router.route(Request(messages=msgs))
    assert "long_conversation" in d.signals and d.tier == 2
    assert d.selected_model.startswith("claude-")


def test_weak_signal_is_not_decisive(router):
    d = route(router, "Write a short story about a lighthouse keeper who befriends a whale.")
    assert d.tier == 3 and d.task == "creative_writing" and d.confidence < 0.75


# ------------------------------------------------------- sensitive data
@pytest.mark.parametrize("text,kind", [
    ("mail me at jane.doe@example.com", "email"),
    ("call +1 415-555-0132 tomorrow", "phone"),
    ("card 4111 1111 1111 1111 exp 10/27", "card_number"),
    ("my key is sk-proj-abcdefghijklmnopqrstuvwx", "secret"),
    ("AWS AKIAIOSFODNN7EXAMPLE leaked", "secret"),
    ("password = hunter2hunter2", "secret"),
    ("SSN 123-45-6789", "national_id"),
])
def test_sensitive_kinds(text, kind):
    assert kind in find_sensitive(text)


def test_card_number_needs_luhn():
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
    assert "card_number" not in find_sensitive("order 4111 1111 1111 1112 shipped")


def test_sensitive_prompt_goes_only_to_approved_models(router):
    d = route(router, "Is card 4111 1111 1111 1111 valid? " + "x" * 10)
    assert "sensitive_data" in d.signals and d.selected_model != "deepseek-v3"
    d = route(router, "Summarize: api_key=sk-live-0123456789abcdefghij", policy=Policy(approved_models=["gpt-4o-mini"]))
    assert d.selected_model == "gpt-4o-mini"
    with pytest.raises(RoutingError, match="sensitive"):
        route(router, "my card 4111 1111 1111 1111", candidates=["deepseek-v3"])


# ------------------------------------------------------ hard constraints
def test_context_window_against_whole_conversation(router):
    big = "lorem ipsum dolor sit amet " * 15000          # ~100K tokens
    d = route(router, big + "\nWhat does this say?")
    assert d.selected_model != "deepseek-v3"
    assert d.estimated_tokens > 64000
    huge = Attachment(name="corpus.txt", tokens=400_000)
    d = route(router, "Analyze the attached corpus.", attachments=[huge])
    assert d.selected_model == "gemini-3-pro"


def test_vision_and_tools(router):
    d = route(router, "What is in this picture?", needs=Needs(vision=True), candidates=["deepseek-v3", "gpt-4o-mini"])
    assert d.selected_model == "gpt-4o-mini"
    with pytest.raises(RoutingError, match="no vision"):
        route(router, "Describe it", needs=Needs(vision=True), candidates=["deepseek-v3"])
    with pytest.raises(RoutingError, match="no tool support"):
        route(router, "Call the weather tool", needs=Needs(tools=True), candidates=["mixtral-8x7b-instruct"])


def test_policy_and_budget(router):
    d = route(router, "Write a haiku", policy=Policy(approved_models=["anthropic/*"]))
    assert d.selected_model.startswith("claude-")
    assert all(a.model.startswith("claude-") for a in d.alternatives)
    d = route(router, "Write a 2000-word essay on the history of Rome", budget=0.002)
    assert d.estimated_cost is not None and d.estimated_cost <= 0.002
    assert "gpt-5.2" not in d.scores  # unknown price cannot be checked against a budget
    with pytest.raises(RoutingError, match="no eligible model"):
        route(router, "Write an essay", budget=1e-9)


def test_unknown_price_is_explicit(router):
    d = route(router, "Plan the next quarter", candidates=["gpt-5.2"])
    assert d.selected_model == "gpt-5.2" and d.estimated_cost is None
    assert "price is unknown" in d.reason


def test_lock_against_policy_is_an_error(router):
    with pytest.raises(RoutingError, match="no eligible model"):
        route(router, "hi", area=Area(model_lock="deepseek-v3"), policy=Policy(approved_models=["anthropic/*"]))


def test_candidates_wildcards_and_benchmark_models(router):
    d = route(router, "Explain quicksort", candidates=["anthropic/*"])
    assert set(d.scores) == {"claude-opus-4.5", "claude-sonnet-4", "claude-haiku-4.5"}
    d = route(router, "Explain quicksort", candidates=["gpt-4-1106-preview", "Mixtral-8x7B-Instruct"])
    assert set(d.scores) == {"gpt-4-1106-preview", "mixtral-8x7b-instruct"}
    with pytest.raises(RoutingError, match="unknown model"):
        route(router, "Explain quicksort", candidates=["gpt-9"])


def test_bad_requests_are_rejected():
    from pydantic import ValidationError
    with pytest.raises(ValidationError, match="non-empty user message"):
        Request(messages=[Message(role="user", content="   ")])
    with pytest.raises(ValidationError):
        Request(messages=[])
    with pytest.raises(ValidationError):
        Request.model_validate({"messages": [{"role": "user", "content": "x"}], "space": {"type": "gaming"}})
    with pytest.raises(ValidationError):
        Request.from_prompt("x", cost_quality=1.5)


def test_decision_fields(router):
    d = route(router, "Compare PostgreSQL and MySQL for an analytics workload")
    assert d.reason.startswith(d.display_name)
    assert d.selected_model in d.scores and len(d.scores) == len(router.catalog.offered)
    assert [a.model for a in d.alternatives] and d.selected_model not in [a.model for a in d.alternatives]
    assert len(d.decision_id) == 32 and d.latency_ms >= 0


def test_cost_quality_knob_trades_cost_for_quality(router):
    prompt = "Write a function that merges overlapping intervals in Python"
    costs, quals = [], []
    for knob in (0.0, 0.5, 1.0):
        d = route(router, prompt, cost_quality=knob)
        costs.append(d.estimated_cost if d.estimated_cost is not None else float("inf"))
        quals.append(d.scores[d.selected_model])
    assert quals == sorted(quals) and quals[0] < quals[-1]
    assert costs[0] <= costs[1]
