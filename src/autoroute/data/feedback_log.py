"""Stage `feedback`: the service's override log -> training data.

    python -m autoroute.data.feedback_log [key=value ...]

Reads the `feedback` table of ``paths.feedback_db`` (schema in
`autoroute.feedback`) and writes ``data/processed/feedback_comparisons.parquet``
and ``data/processed/user_stats.parquet`` (empty tables with the schema when no
log exists yet) plus ``feedback_manifest.json``.
"""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from autoroute.catalog import Catalog
from autoroute.data.io import stage_config, write_json, write_table
from autoroute.feedback import feedback_to_comparisons, read_feedback, user_stats, validate_feedback


def run(cfg: DictConfig) -> dict:
    db, processed = Path(cfg.paths.feedback_db), Path(cfg.paths.processed)
    log = validate_feedback(read_feedback(db), Catalog.from_config(cfg.catalog))
    comparisons, stats = feedback_to_comparisons(log), user_stats(log)
    write_table(comparisons, processed / "feedback_comparisons.parquet")
    write_table(stats, processed / "user_stats.parquet")
    manifest = {"feedback_db": str(db), "log_exists": db.exists(), "events": int(len(log)),
                "by_event": {str(k): int(v) for k, v in log["event"].value_counts().sort_index().items()},
                "comparisons": int(len(comparisons)), "user_stats_rows": int(len(stats))}
    write_json(manifest, processed / "feedback_manifest.json")
    return manifest


def main() -> None:
    m = run(stage_config())
    where = m["feedback_db"] if m["log_exists"] else f"{m['feedback_db']} (no log yet: empty tables)"
    print(f"feedback: {m['events']} events from {where} -> {m['comparisons']} comparisons, "
          f"{m['user_stats_rows']} user/org stat rows")


if __name__ == "__main__":
    main()
