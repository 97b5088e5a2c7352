"""The `autoroute route` command: single prompts, JSONL batches, bad input -> exit 2,
and which router it runs (the champion in the store, --bundle, --rules-only)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from autoroute.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_single_prompt_human_and_json(capsys):
    assert main(["route", "Fix this:\n```js\nconst x = ;\n```", "--space", "coding", "--rules-only"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Claude Sonnet 4, auto-selected for coding")
    assert main(["route", "hello", "--json", "--rules-only"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["selected_model"] == "claude-haiku-4.5" and d["tier"] == 2


def test_batch_jsonl_with_benchmark_candidates(tmp_path):
    reqs = [
        {"messages": [{"role": "user", "content": "What is 17 * 23?"}],
         "candidates": ["gpt-4-1106-preview", "Mixtral-8x7B-Instruct"]},
        {"messages": [{"role": "user", "content": "Write a sonnet about rain"}]},
        {"messages": [{"role": "user", "content": "hi"}], "space": {"type": "writing"}},
    ]
    inp, outp = tmp_path / "requests.jsonl", tmp_path / "decisions.jsonl"
    inp.write_text("\n".join(json.dumps(r) for r in reqs) + "\n")
    assert main(["route", "--input", str(inp), "--output", str(outp), "--rules-only"]) == 0
    lines = [json.loads(x) for x in outp.read_text().splitlines()]
    assert len(lines) == 3
    for d in lines:
        for key in ("task", "selected_model", "tier", "confidence", "reason", "alternatives", "scores"):
            assert key in d
    assert set(lines[0]["scores"]) == {"gpt-4-1106-preview", "mixtral-8x7b-instruct"}
    assert lines[2]["selected_model"] == "claude-opus-4.5"


def test_hydra_override_selects_catalog(capsys):
    assert main(["route", "Explain recursion", "--candidates", "gpt4_1106_preview,mixtral-8x7b-instruct",
                 "catalog=[benchmark]", "--json", "--rules-only"]) == 0
    assert set(json.loads(capsys.readouterr().out)["scores"]) == {"gpt-4-1106-preview", "mixtral-8x7b-instruct"}


@pytest.mark.parametrize("argv,message", [
    (["route", "   "], "non-empty user message"),
    (["route"], "give a prompt"),
    (["route", "hi", "--space", "gaming"], "space.type"),
    (["route", "hi", "--lock", "gpt-9000"], "unknown model 'gpt-9000'"),
    (["route", "hi", "--candidates", "nobody/*"], "matches no model"),
    (["route", "hi", "catalog=nonexistent"], "config"),
    (["route", "hi", "--bogus"], "unexpected arguments"),
    (["route", "hi", "--bundle", "/nonexistent/bundle"], "no such bundle folder"),
])
def test_bad_input_exits_2(argv, message, capsys):
    assert main([*argv, "--rules-only"] if "--bundle" not in argv else argv) == 2
    assert message in capsys.readouterr().err


def test_malformed_jsonl_reports_file_and_line(tmp_path, capsys):
    f = tmp_path / "r.jsonl"
    f.write_text('{"messages": [{"role": "user", "content": "ok"}]}\n'
                 "{not json\n"
                 '{"messages": []}\n'
                 '{"messages": [{"role": "user", "content": "hi"}], "cost_quality": 3}\n')
    assert main(["route", "--input", str(f), "--rules-only"]) == 2
    err = capsys.readouterr().err
    assert f"{f}:2:" in err and f"{f}:3:" in err and f"{f}:4:" in err and f"{f}:1:" not in err


def test_invalid_utf8_file(tmp_path, capsys):
    f = tmp_path / "r.jsonl"
    f.write_bytes(b'{"messages": [{"role": "user", "content": "\xff\xfe"}]}\n')
    assert main(["route", "--input", str(f), "--rules-only"]) == 2
    assert "cannot read" in capsys.readouterr().err


def _cli(args, bentoml_home, **kw):
    env = {**os.environ, "BENTOML_HOME": str(bentoml_home), "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"}
    return subprocess.run([sys.executable, "-m", "autoroute.cli", "route", *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=300, **kw)


def test_console_script_without_a_champion_says_so_and_routes_with_rules(tmp_path):
    out = _cli(["hello"], tmp_path / "empty_store")
    assert out.returncode == 0 and "Claude Haiku 4.5" in out.stdout
    assert "no champion" in out.stderr and "rule tiers" in out.stderr
    assert "router: rule tiers and catalog priors (no champion)" in out.stdout


def test_bad_row_in_a_batch_names_its_request(tmp_path, capsys):
    f = tmp_path / "r.jsonl"
    f.write_text('{"messages": [{"role": "user", "content": "ok"}]}\n'
                 '{"messages": [{"role": "user", "content": "hi"}], "area": {"model_lock": "gpt-9000"}}\n')
    assert main(["route", "--input", str(f), "--rules-only"]) == 2
    err = capsys.readouterr().err
    assert f"{f}:request 2:" in err and "request 1" not in err


# ------------------------------------------------------------ the champion in the store
@pytest.fixture(scope="module")
def champion_store(tiny_run, tmp_path_factory):
    """A BentoML store holding the tiny run's bundle as `autoroute-router`, as `make train` leaves it."""
    home = tmp_path_factory.mktemp("cli_store")
    code = ("import sys; from autoroute.bundle import export_to_bentoml; "
            "print(export_to_bentoml(sys.argv[1], labels={'alias': 'champion'}, metadata={'run_id': 'tiny'}))")
    env = {**os.environ, "BENTOML_HOME": str(home), "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"}
    out = subprocess.run([sys.executable, "-c", code, str(tiny_run["bundle"])], capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return home, out.stdout.strip()


def test_cli_uses_the_champion_and_says_so(champion_store, tiny_run):
    home, tag = champion_store
    out = _cli(["Tariffs versus subsidies as tools of industrial policy", "--json"], home)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"router: champion {tag}" in out.stderr
    d = json.loads(out.stdout)
    learned = set(json.loads((tiny_run["bundle"] / "manifest.json").read_text())["models"])
    assert d["tier"] == 3 and learned & set(d["scores"])
    assert {d["score_sources"][m] for m in learned & set(d["scores"])} <= {
        "learned", "measured_prior", "proxy_prior", "family_prior"}


def test_rules_only_and_bundle_override_the_champion(champion_store, tiny_run):
    home, _ = champion_store
    prompt = "Tariffs versus subsidies as tools of industrial policy"
    rules = _cli([prompt, "--rules-only", "--json"], home)
    champ = _cli([prompt, "--json"], home)
    assert rules.returncode == 0 and "--rules-only" in rules.stderr and "champion" in champ.stderr
    rules, champ = json.loads(rules.stdout), json.loads(champ.stdout)
    assert "learned" not in rules["score_sources"].values()
    assert rules["scores"] != champ["scores"]                     # catalog priors, not the preference model
    out = _cli(["Write a haiku about autumn", "--bundle", str(tiny_run["bundle"])], home / "elsewhere")
    assert out.returncode == 0 and f"router: bundle {tiny_run['bundle']}" in out.stdout


def test_jsonl_batch_runs_one_learned_pass(tiny_run, tmp_path, monkeypatch, capsys):
    from autoroute.bundle import BundleScorer
    calls = []
    score = BundleScorer.score
    monkeypatch.setattr(BundleScorer, "score",
                        lambda self, texts, models=None: calls.append(len(texts)) or score(self, texts, models))
    prompts = ["Write a poem about the sea", "Summarize the causes of WW1", "Prove that sqrt(2) is irrational",
               "Translate 'good morning' into French", "Plan a three-day trip to Rome"]
    f = tmp_path / "r.jsonl"
    f.write_text("".join(json.dumps({"messages": [{"role": "user", "content": p}]}) + "\n" for p in prompts))
    assert main(["route", "--input", str(f), "--bundle", str(tiny_run["bundle"])]) == 0
    decisions = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(decisions) == 5 and len(calls) == 1 and calls[0] >= 1
