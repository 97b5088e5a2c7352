"""Row validation of the source readers: malformed rows are counted and located, never passed on."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from autoroute.data.sources import Report, SourceError, check_malformed, read_authored, read_prompts, read_routellm

FIXTURES = Path(__file__).parent / "fixtures"


def test_malformed_jsonl_rows_reported_with_file_and_line(tmp_path):
    root = tmp_path / "gsm8k"
    root.mkdir()
    lines = [json.dumps({"question": "What is 2 + 2?", "answer": "4"}), "{not json",
             json.dumps({"question": "   ", "answer": "x"}), json.dumps({"answer": "no question"}),
             json.dumps({"question": "What is 3 * 3?", "answer": "9"})]
    (root / "train.jsonl").write_text("\n".join(lines) + "\n")
    (root / "test.jsonl").write_text(json.dumps({"question": "What is 5 - 1?", "answer": "4"}) + "\n")
    report = Report()
    rows = read_prompts("gsm8k", root, report)["gsm8k"]
    assert [r["prompt"] for r in rows] == ["What is 2 + 2?", "What is 3 * 3?", "What is 5 - 1?"]
    assert [(Path(i.file).name, i.line) for i in report.issues] == [("train.jsonl", 2), ("train.jsonl", 3),
                                                                     ("train.jsonl", 4)]
    assert "invalid JSON" in report.issues[0].reason and "empty" in report.issues[1].reason
    assert (report.read["gsm8k"], report.kept["gsm8k"], report.malformed("gsm8k")) == (6, 3, 3)
    with pytest.raises(SourceError, match="malformed rows exceed"):
        check_malformed(report, "gsm8k", 0.2)
    check_malformed(report, "gsm8k", 0.6)
    assert report.to_dict()["malformed"][0]["line"] == 2


def test_csv_bad_value_reported_on_the_line_the_record_starts(tmp_path):
    root = tmp_path / "gsm8k"
    root.mkdir()
    (root / "gsm8k_responses.csv").write_text(
        "prompt,mistralai/Mixtral-8x7B-Instruct-v0.1,gpt-4-1106-preview\n"
        '"a question\nspanning two lines",True,False\n'
        '"second",maybe,True\n')
    (root / "contaminated_prompts.jsonl").write_text(json.dumps({"eval_prompt": "x"}) + "\n")
    report = Report()
    out = read_routellm(root, "gsm8k", report)
    assert len(out["routellm_gsm8k"]) == 2          # one prompt x two models
    assert [(i.line, "maybe" in i.reason) for i in report.issues] == [(4, True)]


def test_authored_rows_checked_against_the_taxonomy(tmp_path):
    (tmp_path / "x.jsonl").write_text(
        json.dumps({"prompt": "Plan my week", "task": "planning", "source": "authored", "source_label": "a"}) + "\n"
        + json.dumps({"prompt": "Hi", "task": "chitchat", "source": "authored"}) + "\n")
    report = Report()
    rows = read_authored(tmp_path, report)["authored"]
    assert len(rows) == 1 and report.issues[0].line == 2 and "chitchat" in report.issues[0].reason
    with pytest.raises(SourceError):
        read_authored(tmp_path / "empty", Report())


def test_missing_file_raises(tmp_path):
    with pytest.raises(SourceError, match="missing"):
        read_prompts("humaneval", tmp_path, Report())
