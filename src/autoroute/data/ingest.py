"""Stage `ingest`: read and validate every source into ``data/raw/<table>.parquet``.

    python -m autoroute.data.ingest [key=value ...]

Writes ``data/raw/ingest_report.json`` (rows read / kept / malformed per
source, every malformed row with file and line, skipped sources). Without the
shared data folder it ingests the authored prompts only and names every
skipped source.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig

from autoroute.data.io import data_params, stage_config, write_json, write_table
from autoroute.data.sources import Report, SourceError, check_malformed, read_authored, read_source


def run(cfg: DictConfig) -> Report:
    params = data_params(cfg)
    shared, raw = Path(cfg.paths.shared_data).resolve(), Path(cfg.paths.raw)
    report = Report(shared_root=str(shared))
    tables: dict[str, list[dict]] = {}
    for name, spec in params["sources"].items():
        if not spec.get("enabled", True):
            report.skipped[name] = "disabled in conf/data"
        elif not shared.is_dir():
            report.skipped[name] = f"shared data folder {shared} not found"
        else:
            tables.update(read_source(name, shared / spec["path"], spec, report))
    tables.update(read_authored(Path(cfg.paths.authored), report))
    for source in list(report.read):
        check_malformed(report, source, float(params["max_malformed_fraction"]))
    if raw.exists():
        shutil.rmtree(raw)
    raw.mkdir(parents=True)
    for name, rows in tables.items():
        if not rows:
            raise SourceError(f"{name}: no valid rows")
        write_table(pd.DataFrame(rows), raw / f"{name}.parquet")
    write_json(report.to_dict(), raw / "ingest_report.json")
    return report


def print_report(report: Report) -> None:
    print(f"ingest: shared data at {report.shared_root}")
    for name, why in report.skipped.items():
        print(f"  SKIPPED {name}: {why}")
    for source in sorted(report.read):
        print(f"  {source:28s} read {report.read[source]:7d}  kept {report.kept[source]:7d}  "
              f"malformed {report.malformed(source):5d}")
    for issue in report.issues[:50]:
        print(f"  malformed: {issue}")
    if len(report.issues) > 50:
        print(f"  ... {len(report.issues) - 50} more malformed rows in data/raw/ingest_report.json")


def main() -> None:
    print_report(run(stage_config()))


if __name__ == "__main__":
    main()
