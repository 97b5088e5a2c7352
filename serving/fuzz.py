"""`make schemathesis`: start a fake OpenAI upstream and a real `bentoml serve`
(tmp model store and log, API keys on), then run schemathesis against the
service's own OpenAPI document (/docs.json). Exit status: schemathesis's.

    python -m serving.fuzz [--max-examples 50] [--checks ...] [extra schemathesis args]

Checks: no 5xx, documented status codes, content types, headers, and every
response valid against the schema. Positive-data acceptance is not checked:
the router may reject schema-valid requests on business rules (an unknown
model id in `candidates`, a budget no model fits), always with a documented
4xx."""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,"
          "response_headers_conformance,response_schema_conformance")


def main(argv: list[str] | None = None) -> int:
    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root / "tests"))
    from fake_upstream import FakeUpstream
    from serving_support import KEYS, serving_overrides, start_server

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--max-examples", type=int, default=50)
    p.add_argument("--checks", default=CHECKS)
    p.add_argument("--workers", default="1")
    args, rest = p.parse_known_args(argv)
    with tempfile.TemporaryDirectory(prefix="autoroute-fuzz-") as tmp:
        tmp = Path(tmp)
        upstream = FakeUpstream(delay=0.0).start()
        server = start_server(tmp, serving_overrides(tmp, upstream.url))
        print(f"service on {server.url}, fake upstream on {upstream.url}", flush=True)
        try:
            cmd = [str(Path(sys.executable).with_name("schemathesis")), "run", server.url + "/docs.json",
                   "--checks", args.checks, "--max-examples", str(args.max_examples), "--workers", args.workers,
                   "--header", f"x-api-key: {KEYS['acme']}", "--seed", "7", "--request-timeout", "30",
                   "--generation-database", "none", *rest]
            print(" ".join(cmd), flush=True)
            rc = subprocess.call(cmd, cwd=tmp)
        finally:
            server.stop()
            upstream.stop()
        bad = [ln for ln in server.log().splitlines() if "Traceback" in ln or "[ERROR]" in ln]
        if bad:
            print(f"server log has {len(bad)} error lines; first: {bad[0]}", flush=True)
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
