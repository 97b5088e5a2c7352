"""The `autoroute route` command: single prompts, JSONL batches, bad input -> exit 2."""
import json
import subprocess
import sys

import pytest

from autoroute.cli import main


def test_single_prompt_human_and_json(capsys):
    assert main(["route", "Fix this:\n```js\nconst x = ;\n```", "--space", "coding"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Claude Sonnet 4, auto-selected for coding")
    assert main(["route", "hello", "--json"]) == 0
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
    assert main(["route", "--input", str(inp), "--output", str(outp)]) == 0
    lines = [json.loads(x) for x in outp.read_text().splitlines()]
    assert len(lines) == 3
    for d in lines:
        for key in ("task", "selected_model", "tier", "confidence", "reason", "alternatives", "scores"):
            assert key in d
    assert set(lines[0]["scores"]) == {"gpt-4-1106-preview", "mixtral-8x7b-instruct"}
    assert lines[2]["selected_model"] == "claude-opus-4.5"


def test_hydra_override_selects_catalog(capsys):
    assert main(["route", "Explain recursion", "--candidates", "gpt4_1106_preview,mixtral-8x7b-instruct",
                 "catalog=[benchmark]", "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out)["scores"]) == {"gpt-4-1106-preview", "mixtral-8x7b-instruct"}


@pytest.mark.parametrize("argv,message", [
    (["route", "   "], "non-empty user message"),
    (["route"], "give a prompt"),
    (["route", "hi", "--space", "gaming"], "space.type"),
    (["route", "hi", "--lock", "gpt-9000"], "unknown model 'gpt-9000'"),
    (["route", "hi", "--candidates", "nobody/*"], "matches no model"),
    (["route", "hi", "catalog=nonexistent"], "config"),
    (["route", "hi", "--bogus"], "unexpected arguments"),
])
def test_bad_input_exits_2(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_malformed_jsonl_reports_file_and_line(tmp_path, capsys):
    f = tmp_path / "r.jsonl"
    f.write_text('{"messages": [{"role": "user", "content": "ok"}]}\n'
                 "{not json\n"
                 '{"messages": []}\n'
                 '{"messages": [{"role": "user", "content": "hi"}], "cost_quality": 3}\n')
    assert main(["route", "--input", str(f)]) == 2
    err = capsys.readouterr().err
    assert f"{f}:2:" in err and f"{f}:3:" in err and f"{f}:4:" in err and f"{f}:1:" not in err


def test_invalid_utf8_file(tmp_path, capsys):
    f = tmp_path / "r.jsonl"
    f.write_bytes(b'{"messages": [{"role": "user", "content": "\xff\xfe"}]}\n')
    assert main(["route", "--input", str(f)]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_console_script_entry_point():
    out = subprocess.run([sys.executable, "-m", "autoroute.cli", "route", "hello"], capture_output=True, text=True)
    assert out.returncode == 0 and "Claude Haiku 4.5" in out.stdout
