"""`autoroute route`: one decision or a JSONL batch, on the same config tree
as training (Hydra-style overrides such as ``catalog=[benchmark]``).

The router is the one the service runs: the champion in the BentoML model
store (``autoroute-router``, registered by `make train` under the MLflow alias
``champion``); ``--bundle`` picks another bundle folder; ``--rules-only`` (or
no champion in the store, said on stderr) routes with the rule tiers and
catalog priors. A JSONL batch is decided in one `route_batch` call (one
learned pass)."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from pydantic import ValidationError

from autoroute.types import Request, RoutingError

EXIT_BAD_INPUT = 2
CHAMPION_TAG = "autoroute-router:latest"


def _errors(err: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'request'}: {e['msg']}" for e in err.errors())


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="autoroute", description="autoroute: pick the model for a request")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("route", help="route one prompt or a JSONL file of requests")
    r.add_argument("prompt", nargs="?", help="the user's message (omit with --input)")
    r.add_argument("--space", help="Space type: coding, writing, research or general")
    r.add_argument("--lock", help="Area model lock (a catalog id or alias)")
    r.add_argument("--mode", default="chat", help="chat, planning or assist")
    r.add_argument("--candidates", help="comma-separated pool restriction (ids, aliases, wildcards)")
    r.add_argument("--cost-quality", type=float, default=0.5, help="0 = cheapest acceptable, 1 = best quality")
    r.add_argument("--user", help="user id (Tier 4)")
    r.add_argument("--input", type=Path, help="JSONL file, one request object per line")
    r.add_argument("--output", type=Path, help="JSONL file for the decisions (default: stdout)")
    r.add_argument("--bundle", type=Path, help="a trained router bundle folder (default: the champion in the "
                   "BentoML model store, paths.bentoml_home)")
    r.add_argument("--rules-only", action="store_true",
                   help="route with the rule tiers and catalog priors only, even when a champion exists")
    r.add_argument("--json", action="store_true", help="print the full decision as JSON")
    return p


def _load_router(args):
    """(router, which router it is, in words)."""
    from autoroute.config import build_router, load_config
    if args.bundle and args.rules_only:
        raise RoutingError("give --bundle or --rules-only, not both")
    if args.bundle:
        from autoroute.bundle import load_router, read_manifest
        if not args.bundle.is_dir():
            raise RoutingError(f"--bundle {args.bundle}: no such bundle folder")
        man = read_manifest(args.bundle)
        return load_router(args.bundle, overrides=args.overrides), f"bundle {args.bundle}{_run_note(man)}"
    cfg = load_config(args.overrides)
    if args.rules_only:
        return build_router(cfg), "rule tiers and catalog priors (--rules-only)"
    path, tag = _champion_path(str(cfg.paths.bentoml_home))
    if path is None:
        print(f"autoroute: no champion {CHAMPION_TAG!r} in the BentoML model store ({cfg.paths.bentoml_home}); "
              "routing with the rule tiers and catalog priors (train one with `make train`)", file=sys.stderr)
        return build_router(cfg), "rule tiers and catalog priors (no champion)"
    from autoroute.bundle import load_router, read_manifest
    return load_router(path, overrides=args.overrides), f"champion {tag}{_run_note(read_manifest(path))}"


def _champion_path(home: str) -> tuple[Path | None, str | None]:
    """The bundle folder of the champion in the BentoML store at `home`, as the service loads it."""
    os.environ["BENTOML_HOME"] = home          # bentoml reads its store location from here
    import bentoml
    from bentoml.exceptions import NotFound
    try:
        model = bentoml.models.get(CHAMPION_TAG)
    except NotFound:
        return None, None
    return Path(model.path), str(model.tag)


def _run_note(manifest: dict) -> str:
    run = manifest.get("run_id")
    return f" (MLflow run {run}, trained {manifest.get('created', '?')})" if run else ""


def _single_request(args) -> Request:
    body: dict = {"messages": [{"role": "user", "content": args.prompt}], "mode": args.mode,
                  "cost_quality": args.cost_quality, "user_id": args.user}
    if args.space:
        body["space"] = {"type": args.space}
    if args.lock:
        body["area"] = {"model_lock": args.lock}
    if args.candidates:
        body["candidates"] = [c.strip() for c in args.candidates.split(",")]
    return Request.model_validate(body)


def _read_jsonl(path: Path) -> list[Request]:
    requests, problems = [], []
    try:
        lines = path.read_text(encoding="utf-8", errors="strict").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise RoutingError(f"{path}: cannot read: {err}") from err
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            requests.append(Request.model_validate_json(line))
        except ValidationError as err:
            problems.append(f"{path}:{n}: {_errors(err)}")
    if problems:
        raise RoutingError("malformed requests:\n" + "\n".join(problems[:50])
                           + (f"\n... and {len(problems) - 50} more" if len(problems) > 50 else ""))
    if not requests:
        raise RoutingError(f"{path}: no requests in the file")
    return requests


def main(argv: list[str] | None = None) -> int:
    args, extra = _parser().parse_known_args(argv)
    args.overrides = [o for o in extra if "=" in o and not o.startswith("-")]
    bad = [o for o in extra if o not in args.overrides]
    try:
        if bad:
            raise RoutingError(f"unexpected arguments {bad}; config overrides look like key=value (e.g. catalog=[benchmark])")
        if args.input is None and not args.prompt:
            raise RoutingError("give a prompt or --input requests.jsonl")
        if args.input is not None and args.prompt:
            raise RoutingError("give either a prompt or --input, not both")
        requests = _read_jsonl(args.input) if args.input else [_single_request(args)]
        router, which = _load_router(args)
        print(f"autoroute: router: {which}", file=sys.stderr)
        decisions = router.route_batch(requests, errors="return")   # one learned pass for the batch
        failed = [(i, d) for i, d in enumerate(decisions, 1) if isinstance(d, RoutingError)]
        if failed:
            if not args.input:
                raise failed[0][1]
            raise RoutingError("\n".join(f"{args.input}:request {i}: {err}" for i, err in failed[:50])
                               + (f"\n... and {len(failed) - 50} more" if len(failed) > 50 else ""))
    except ValidationError as err:
        print(f"autoroute: invalid request: {_errors(err)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (RoutingError, ValueError) as err:
        print(f"autoroute: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.input:
        lines = "".join(d.model_dump_json() + "\n" for d in decisions)
        if args.output:
            args.output.write_text(lines, encoding="utf-8")
            print(f"autoroute: {len(decisions)} decisions -> {args.output}", file=sys.stderr)
        else:
            sys.stdout.write(lines)
    elif args.json:
        print(decisions[0].model_dump_json(indent=2))
    else:
        d = decisions[0]
        print(d.reason)
        print(f"  tier {d.tier} ({d.tier_name}), task {d.task}, confidence {d.confidence:.2f}, "
              f"estimated cost {'$%.5f' % d.estimated_cost if d.estimated_cost is not None else 'unknown'}")
        src = d.score_sources
        print(f"  predicted quality {d.scores.get(d.selected_model, float('nan')):.3f} "
              f"({src.get(d.selected_model, 'catalog')})")
        for a in d.alternatives:
            print(f"  alternative: {a.display_name} (score {a.score:.3f}, {src.get(a.model, 'catalog')})")
        print(f"  router: {which}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
