"""The product models' data (SWE-bench Verified, ZeroEval, Arena category ratings) and the
measured priors, on the hand-written fixture in tests/fixtures/shared_data/modern."""
from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd
import pytest
import yaml

from autoroute.catalog import Catalog
from autoroute.config import load_config
from autoroute.data import pipeline
from autoroute.data.dedup import near_duplicate_groups, normalize_text
from autoroute.data.modern import QUALIFIERS
from autoroute.priors import PriorError, TASK_CATEGORIES, compute, estimate, to_prior
from autoroute.types import TASKS
from test_data_pipeline import FIXTURES, fixture_config

MODERN = FIXTURES / "shared_data" / "modern"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "modern"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("modern")
    cfg = fixture_config(tmp)
    manifest = pipeline.run(cfg, verbose=False)
    processed = Path(cfg.paths.processed)
    return {"cfg": cfg, "manifest": manifest, "tmp": tmp,
            "prompts": {s: pd.read_parquet(processed / "prompts" / f"{s}.parquet")
                        for s in ("train", "validation", "test")},
            "comparisons": pd.read_parquet(processed / "comparisons.parquet"),
            "outcomes": pd.read_parquet(processed / "outcomes.parquet"),
            "ratings": pd.read_parquet(processed / "arena_ratings.parquet"),
            "priors": yaml.safe_load(Path(cfg.paths.priors).read_text())["priors"]}


def _spellings(folder: Path) -> dict[str, set[str]]:
    """Every model spelling in the modern files, by the qualifier its source resolves with."""
    def col(name: str) -> set[str]:
        return {r["model"] for r in csv.DictReader((folder / name).open(encoding="utf-8"))}
    return {"swebench": col("swebench_verified_bash_only_outcomes.csv"), "zeroeval": col("zeroeval_outcomes.csv"),
            "arena": col("arena_category_ratings.csv")}


def _check_aliases(folder: Path) -> None:
    catalog = Catalog.from_config(load_config().catalog)
    names = _spellings(folder)
    assert all(names.values())
    for qualifier, spellings in names.items():
        assert qualifier in QUALIFIERS.values()
        assert sorted(n for n in spellings if catalog.resolve_in(qualifier, n) is None) == []
    # one id per Arena model: two versions never share an id
    arena_ids = [catalog.resolve_in("arena", n) for n in names["arena"]]
    assert len(set(arena_ids)) == len(arena_ids)


def test_alias_table_covers_every_modern_spelling_of_the_fixture():
    _check_aliases(MODERN)


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data not present")
def test_alias_table_covers_every_modern_spelling_of_the_real_files():
    _check_aliases(SHARED)


def test_older_versions_and_reused_api_names_are_different_models():
    catalog = Catalog.from_config(load_config().catalog)
    assert catalog.resolve("claude-3-5-sonnet-20241022") != catalog.resolve("claude-sonnet-4")
    assert catalog.resolve("gpt-4o-2024-05-13") != catalog.resolve("gpt-4o")
    # the 2024 ZeroEval `deepseek-chat` and Arena's Dec 2024 `deepseek-v3` are not today's product DeepSeek V3
    assert catalog.resolve("deepseek-chat") == "deepseek-v3"
    assert catalog.resolve_in("zeroeval", "deepseek-chat") == "deepseek-chat-2024"
    assert catalog.resolve_in("arena", "deepseek-v3") == "deepseek-v3-2412"
    assert catalog.resolve_in("arena", "deepseek-v3-0324") == "deepseek-v3"
    assert catalog.resolve("Claude 4.5 Opus medium (20251101)") == "claude-opus-4.5"


def test_swebench_split_by_repository(built):
    o = built["outcomes"]
    swe = o[o["source"] == "swebench_verified"]
    assert set(swe["split"]) == {"train", "validation", "test"}
    splits_per_repo = swe.groupby("subject")["split"].nunique()
    assert (splits_per_repo == 1).all(), splits_per_repo
    table = built["cfg"].data.modern.swebench.repository_splits
    for repo, split in swe.groupby("subject")["split"].first().items():
        assert repo in table[split]
    assert swe["cost"].notna().all() and (swe["cost"] > 0).all()
    assert set(swe["score"]) <= {0.0, 1.0}
    # the suspect model's rows are left out and counted
    assert "claude-3-7-sonnet-20250219" not in set(swe["model"])
    assert built["manifest"]["dropped"]["suspect_model_rows"]["swebench_verified"] == 6
    assert {"claude-opus-4.5", "gpt-5", "deepseek-v3.2-thinking"} == set(swe["model"])


def test_missing_repository_in_the_split_table_stops_the_build(tmp_path):
    from autoroute.data.sources import SourceError
    cfg = fixture_config(tmp_path, extra=("data.modern.swebench.repository_splits.validation=[pytest-dev/pytest]",))
    with pytest.raises(SourceError, match="astropy/astropy"):
        pipeline.run(cfg, verbose=False)


def test_zeroeval_gsm8k_never_reaches_a_training_split(built):
    o, p, c = built["outcomes"], built["prompts"], built["comparisons"]
    gsm = o[o["source"] == "zeroeval_gsm8k"]
    assert len(gsm) and set(gsm["split"]) == {"test"} and set(gsm["benchmark"]) == {"gsm8k"}
    questions = set(gsm["prompt"].map(normalize_text))
    # they are the RouteLLM GSM8K evaluation questions (the fixture mirrors that)
    assert questions & set(o.loc[o["source"] == "routellm_gsm8k", "prompt"].map(normalize_text))
    train = pd.concat([p["train"]["prompt"], c.loc[c["split"] == "train", "prompt"],
                       o.loc[o["split"] == "train", "prompt"]]).map(normalize_text)
    assert not questions & set(train)
    groups = set(gsm["dup_group"])
    assert not groups & set(o.loc[o["split"] == "train", "dup_group"])
    assert not groups & set(p["train"]["dup_group"])


def test_zeroeval_crux_splits_and_missing_math_prompts(built):
    o, m = built["outcomes"], built["manifest"]
    crux = o[o["source"] == "zeroeval_crux"]
    assert set(crux["split"]) <= {"train", "validation", "test"} and len(set(crux["split"])) >= 2
    assert (crux.groupby("dup_group")["split"].nunique() == 1).all()
    # the fixture's CRUX prompts share a long instruction but are different tasks
    assert crux["dup_group"].nunique() == crux["prompt_id"].nunique() == 6
    assert "zeroeval_math" in m["skipped_sources"] and "no question text" in m["skipped_sources"]["zeroeval_math"]
    assert not (o["source"] == "zeroeval_math").any()
    # deepseek-chat of 2024 results resolves through its source-qualified alias
    assert "deepseek-chat-2024" in set(crux["model"]) and "deepseek-v3" not in set(crux["model"])


def test_arena_ratings_table_and_card(built):
    r = built["ratings"]
    assert list(r.columns) == ["model", "source_name", "category", "rating", "q025", "q975"]
    assert not r.duplicated(["model", "category"]).any()
    assert ((r["q025"] <= r["rating"]) & (r["rating"] <= r["q975"])).all()
    assert {"claude-opus-4.5", "deepseek-v3", "deepseek-v3-2412", "gpt-4-1106-preview"} <= set(r["model"])
    card = (Path(built["cfg"].paths.data) / "README.md").read_text()
    assert "CC BY-NC 4.0" in card and "by repository" in card
    for split, info in built["manifest"]["modern_splits"]["swebench_verified"].items():
        assert f"| swebench_verified | {split} | {info['prompts']} |" in card
    assert "| gpt-5.2 |" in card and "(family)" in card


def _ratings(model_rating: float, half: float = 10.0) -> pd.DataFrame:
    rows = []
    for cat in ("coding", "math"):
        rows += [{"model": "ref", "category": cat, "rating": 1200.0, "q025": 1195.0, "q975": 1205.0},
                 {"model": "m", "category": cat, "rating": model_rating, "q025": model_rating - half,
                  "q975": model_rating + half}]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("half", [0.0, 8.0, 40.0])
def test_prior_is_monotone_in_the_rating_and_its_interval_holds_the_point(half):
    last = None
    for rating in range(1000, 1500, 25):
        est = estimate(_ratings(float(rating), half), "m", "ref", ["coding", "math"])
        pr = to_prior(*est[:3], "measured", ["m"])
        assert 0 <= pr.lo <= pr.p <= pr.hi <= 1
        if last is not None:
            assert pr.p > last.p and pr.lo > last.lo and pr.hi > last.hi
        last = pr
    at_ref = to_prior(*estimate(_ratings(1200.0), "m", "ref", ["coding"])[:3], "measured", [])
    assert at_ref.p == 0.5


def test_proxy_and_family_priors_are_wider_than_measured():
    est = estimate(_ratings(1300.0), "m", "ref", ["coding"])
    measured, proxy = to_prior(*est[:3], "measured", ["m"]), to_prior(*est[:3], "proxy", ["m"], extra=40.0)
    assert measured.p == proxy.p
    assert proxy.hi - proxy.lo > measured.hi - measured.lo


def test_every_product_model_has_a_prior_per_task_from_the_data(built):
    catalog = Catalog.from_config(load_config().catalog)
    priors = built["priors"]
    assert set(priors["models"]) == set(catalog.offered)
    for mid, tasks in priors["models"].items():
        assert set(tasks) == set(TASKS)
        for t, v in tasks.items():
            assert 0 <= v["lo"] <= v["p"] <= v["hi"] <= 1 and v["source"] in ("measured", "proxy", "family")
    # the fixture leaves Haiku 4.5 unrated for `expert` and `industry_*`: research comes from its proxy
    haiku = priors["models"]["claude-haiku-4.5"]
    assert haiku["coding"]["source"] == "measured"
    assert haiku["research"]["source"] == "proxy" and haiku["research"]["evidence"] == ["claude-3-5-haiku-20241022"]
    # GPT-5.2 has no rating: a family prior from GPT-5.1 / GPT-5, wider than any measured one
    gpt52 = priors["models"]["gpt-5.2"]
    assert {v["source"] for v in gpt52.values()} == {"family"}
    assert set(gpt52["coding"]["evidence"]) == {"gpt-5.1", "gpt-5-high"}
    width = {m: tasks["coding"]["hi"] - tasks["coding"]["lo"] for m, tasks in priors["models"].items()}
    assert width["gpt-5.2"] > max(w for m, w in width.items() if m != "gpt-5.2")
    # the priors follow the ratings: the fixture rates Gemini 3 Pro > Opus 4.5 > Sonnet 4
    p = {m: tasks["coding"]["p"] for m, tasks in priors["models"].items()}
    assert p["gemini-3-pro"] > p["claude-opus-4.5"] > p["claude-sonnet-4"] > p["gpt-4o"]


def test_product_model_without_any_evidence_stops_the_priors_stage(built):
    cfg = load_config()
    models = yaml.safe_load(Path(cfg.paths.root, "conf/catalog/default.yaml").read_text())["models"]
    models["gpt-5.2"]["evidence"] = {"same": [], "proxies": [], "family": []}
    bench = yaml.safe_load(Path(cfg.paths.root, "conf/catalog/benchmark.yaml").read_text())["models"]
    catalog = Catalog.from_config({"models": {**models, **bench}})
    with pytest.raises(PriorError, match="gpt-5.2"):
        compute(catalog, built["ratings"], {"reference": "gpt-4-1106-preview", "proxy_extra_elo": 40,
                                            "family_extra_elo": 75})


def test_no_product_card_keeps_hand_typed_capabilities():
    cfg = load_config()
    raw = yaml.safe_load(Path(cfg.paths.root, "conf/catalog/default.yaml").read_text())["models"]
    assert not any("capabilities" in card for card in raw.values())
    with pytest.raises(ValueError, match="capabilities"):
        Catalog.from_config({"models": {"x": {"capabilities": {"coding": 90}}}})
    catalog = Catalog.from_config(cfg.catalog)
    for mid in catalog.offered:
        card = catalog.cards[mid]
        assert set(card.priors) == set(TASKS), mid
        assert card.evidence.same or card.evidence.proxies or card.evidence.family
    assert set(TASK_CATEGORIES) == set(TASKS)


def test_gpt52_decisions_say_family_prior():
    from autoroute.config import build_router
    from autoroute.types import Request

    router = build_router(load_config())
    d = router.route(Request(messages=[{"role": "user", "content": "Write a haiku about the sea."}],
                             candidates=["gpt-5.2", "claude-opus-4.5"]))
    assert d.score_sources == {"gpt-5.2": "family_prior", "claude-opus-4.5": "measured_prior"}
    from autoroute.scoring import prior_quality
    expected = prior_quality(router.catalog, ["gpt-5.2"], d.task if d.task in TASKS else None)[0][0]
    assert d.scores["gpt-5.2"] == pytest.approx(expected, abs=1e-6)
    d = router.route(Request(messages=[{"role": "user", "content": "Write a haiku about the sea."}],
                             candidates=["gpt-5.2"]))
    assert d.selected_model == "gpt-5.2" and "family prior" in d.reason


def test_unrelated_texts_sharing_a_common_phrase_are_not_near_duplicates():
    a = "SECRET_KEY_FALLBACKS is not used for sessions. I rotated my secret key and one of the users was logged out."
    b = "An Australian state is offering one of the largest incentives to attract international students this year."
    c = a.replace("rotated", "changed")
    groups = near_duplicate_groups([a, b, c], jaccard=0.6)
    assert groups[0] != groups[1] and groups[0] == groups[2]


def test_modern_rows_with_bad_values_are_reported_with_file_and_line(tmp_path):
    from autoroute.data.modern import read_modern
    from autoroute.data.sources import Report, SourceError

    root = tmp_path / "modern"
    import shutil
    shutil.copytree(MODERN, root)
    path = root / "swebench_verified_bash_only_outcomes.csv"
    lines = path.read_text().splitlines()
    lines[2] = lines[2].replace("django__django-11002", "django__django-99999")   # an issue with no text
    parts = lines[5].split(",")
    lines[5] = ",".join(parts[:3] + ["2"] + parts[4:])                            # resolved = 2
    path.write_text("\n".join(lines) + "\n")
    report = Report()
    rows = read_modern("swebench_verified", root, report)["swebench_verified"]
    assert len(rows) == len(lines) - 1 - 2
    bad = {(Path(i.file).name, i.line): i.reason for i in report.issues}
    assert "not in swebench_verified_prompts.csv" in bad[(path.name, 3)]
    assert "expected 0 or 1" in bad[(path.name, 6)]
    ratings = root / "arena_category_ratings.csv"
    ratings.write_text(ratings.read_text().replace("full,gpt-4-1106-preview,1250,1244,1257",
                                                   "full,gpt-4-1106-preview,1250,1251,1257"))
    report = Report()
    read_modern("arena_ratings", root, report)
    assert [i.line for i in report.issues] == [2] and "does not contain" in report.issues[0].reason
    prompts = root / "zeroeval_prompts.csv"
    prompts.write_text(prompts.read_text() + "mmlu,1,What is 2 + 2?\n")
    with pytest.raises(SourceError, match="unknown task 'mmlu'"):
        read_modern("zeroeval", root, Report())
