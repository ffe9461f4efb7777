"""Ingestion through the service, pages/s: this checkout, and an earlier commit's (``--baseline``).

Each run is ``scripts/ingest_rate.py`` in a process of its own: the golden corpus's first
``--pages`` pages uploaded over the API and ingested by the worker, on embedded PostgreSQL and
Redis of its own. The builds take turns round by round, so a machine that slows down during the
benchmark slows both alike. Prints a table of medians (the spread beside them) and the ratio to
the baseline's run at the same worker concurrency.

    python -m scripts.benchmark_ingest --baseline e2c65ae      # make benchmark-ingest BASELINE=e2c65ae
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from contextlib import nullcontext
from pathlib import Path

from scripts.benchmark_load import ROOT, Build, baseline_checkout

RATE_SCRIPT = ROOT / "scripts" / "ingest_rate.py"


def run_once(build: Build, pages: int, concurrency: int) -> float:
    env = {**os.environ, **build.env}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (build.env.get("PYTHONPATH"), str(build.root)) if p)
    done = subprocess.run(
        [sys.executable, str(RATE_SCRIPT), str(pages), str(concurrency)],
        cwd=build.root,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if done.returncode != 0:
        raise SystemExit(f"{build.label}, WORKER_CONCURRENCY={concurrency} failed:\n{done.stderr[-3000:]}")
    return float(json.loads(done.stdout.strip().splitlines()[-1])["pages_per_s"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=100, help="golden pages per run")
    parser.add_argument("--rounds", type=int, default=3, help="runs per build and concurrency (median)")
    parser.add_argument("--concurrency", default="1,2", help="WORKER_CONCURRENCY values, comma-separated")
    parser.add_argument("--baseline", help="an earlier commit to measure beside this checkout")
    args = parser.parse_args(argv)
    concurrencies = [int(value) for value in args.concurrency.split(",")]
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="ragchat-bench-ingest-") as work:
        builds = [Build("now (this checkout)", ROOT)]
        rates: dict[tuple[str, int], list[float]] = {}
        with baseline_checkout(args.baseline, Path(work)) if args.baseline else nullcontext() as baseline:
            if baseline is not None:
                builds.insert(0, baseline)
            for round_number in range(1, args.rounds + 1):
                for concurrency in concurrencies:
                    for build in builds:
                        rate = run_once(build, args.pages, concurrency)
                        rates.setdefault((build.label, concurrency), []).append(rate)
                        print(
                            f"round {round_number}/{args.rounds}: {build.label}, "
                            f"WORKER_CONCURRENCY={concurrency}: {rate:.2f} pages/s",
                            file=sys.stderr,
                            flush=True,
                        )
    load_after = os.getloadavg()[0]
    print(f"\nIngestion of {args.pages} golden pages through the service (upload + worker), ")
    print(f"median of {args.rounds} runs; load average {load_before:.2f} before, {load_after:.2f} after\n")
    print("| build | WORKER_CONCURRENCY | pages/s, median | runs | ratio to before |")
    print("|---|---:|---:|---|---:|")
    for concurrency in concurrencies:
        for build in builds:
            runs = rates[(build.label, concurrency)]
            median = statistics.median(runs)
            before = rates.get((builds[0].label, concurrency)) if len(builds) > 1 else None
            ratio = f"{median / statistics.median(before):.2f}" if before else ""
            spread = " / ".join(f"{rate:.2f}" for rate in runs)
            print(f"| {build.label} | {concurrency} | {median:.2f} | {spread} | {ratio} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
