"""What counting for ``/metrics`` costs: trio_chat as it is, scraped every second, against the
same server from before it counted anything, side by side.

    python bench/metrics_cost.py                   # 3 runs, about 6 minutes
    python bench/metrics_cost.py --runs 5 --base <commit>
    python bench/metrics_cost.py --quick --runs 1 --output /tmp/check.md

The server from before is a git worktree of ``--base`` (by default ``METRICS_BASE``, the last
commit before metrics), made in a temporary folder and removed afterwards; it runs with the
same Python and the same installed dependencies, its own code first on ``PYTHONPATH``. Both
servers are ``hypercorn -c hypercorn.toml trio_chat:app`` (4 workers and the hub) and both are
sent ``GET /metrics`` every ``SCRAPE_INTERVAL_SECONDS`` while measured, as a Prometheus would
(the one from before answers 404): what is compared is everything metrics add, the counting in
every worker, the reports to the hub and the scrapes. Loads: the fan-out load of (a) and the
100 rooms of 10 of (f), in ``bench/run.py``'s terms; every figure is a median of the runs, and
every ratio the median of the ratios measured side by side.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import run
from run import (
    FANOUT_LOAD,
    FANOUT_QUICK,
    ROOMS_MANY,
    ROOMS_MANY_QUICK,
    ROOT,
    STORE_LOAD_FIGURES,
    Server,
    Servers,
    ServerSpec,
    comparison_table,
    load_args,
    log,
    measure_load,
    per_run_lines,
)

#: The last commit before trio_chat counted anything for ``/metrics``.
METRICS_BASE = "179ebc4"
#: How often both servers are scraped while measured (Prometheus defaults to 15 s: this is
#: fifteen times as often).
SCRAPE_INTERVAL_SECONDS = 1.0
SCRAPE_TIMEOUT_SECONDS = 5.0
#: The loads measured: (key, load, quick).
LOADS = (
    ("fanout", FANOUT_LOAD, FANOUT_QUICK),
    ("many_rooms", ROOMS_MANY, ROOMS_MANY_QUICK),
)
#: Within noise of the server from before (the issue's target: no measurable change).
CPU_TARGET = 1.05
FIGURES = [
    dataclasses.replace(
        STORE_LOAD_FIGURES[0],
        target=f"≤ {CPU_TARGET:.2f} x before",
        check=lambda v, q: q <= CPU_TARGET,
    ),
    *STORE_LOAD_FIGURES[1:],
]


def server_specs(base_root: Path) -> tuple[ServerSpec, ServerSpec]:
    """(now, before): the first is the numerator of the ratios."""
    now = dataclasses.replace(run.TRIO_CHAT, name="trio_chat-metrics")
    before = dataclasses.replace(
        run.TRIO_CHAT,
        name="trio_chat-before",
        args=("-c", str(base_root / "hypercorn.toml"), "trio_chat:app"),
        env=(("PYTHONPATH", str(base_root)),),
        root=base_root,
    )
    return now, before


@contextlib.contextmanager
def worktree(ref: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="trio-chat-before-") as folder:
        path = Path(folder) / "tree"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), ref],
            check=True,
            capture_output=True,
        )
        try:
            yield path
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)],
                check=False,
                capture_output=True,
            )


class Scraper:
    """``GET /metrics`` on a server every ``SCRAPE_INTERVAL_SECONDS``, from a thread, until
    stopped; counts the answers by status."""

    def __init__(self, port: int) -> None:
        self._url = f"http://127.0.0.1:{port}/metrics"
        self._stop = threading.Event()
        self.statuses: dict[int, int] = {}
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Scraper:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(SCRAPE_INTERVAL_SECONDS):
            try:
                with urllib.request.urlopen(self._url, timeout=SCRAPE_TIMEOUT_SECONDS) as answer:
                    answer.read()
                    status = answer.status
            except urllib.error.HTTPError as error:
                status = error.code
            except OSError:
                status = 0
            self.statuses[status] = self.statuses.get(status, 0) + 1


def measure_scraped(
    servers: Servers, spec: ServerSpec, args: dict[str, Any], label: str
) -> dict[str, Any]:
    server: Server = servers.get(spec)
    with Scraper(server.port) as scraper:
        result = measure_load(servers, spec, args, label)
    result["scrapes"] = dict(scraper.statuses)
    return result


def run_runs(
    specs: tuple[ServerSpec, ServerSpec], runs: int, quick: bool, log_dir: Path
) -> dict[str, list[Any]]:
    results: dict[str, list[Any]] = {f"{k}/{s.name}": [] for k, _, _ in LOADS for s in specs}
    servers = Servers(log_dir)
    try:
        for number in range(runs):
            log(f" run {number + 1}/{runs}")
            order = specs if number % 2 == 0 else specs[::-1]
            for key, load, quick_load in LOADS:
                args = load_args(load, quick_load, quick, None)
                for spec in order:
                    result = measure_scraped(servers, spec, args, f"{key} {spec.name}")
                    results[f"{key}/{spec.name}"].append(result)
            servers.stop_all()
    finally:
        servers.stop_all()
    return results


def report(
    results: dict[str, list[Any]],
    specs: tuple[ServerSpec, ServerSpec],
    args: argparse.Namespace,
    elapsed: float,
) -> list[str]:
    now, before = specs
    lines = [
        "# What metrics cost",
        "",
        f"`python bench/metrics_cost.py {' '.join(sys.argv[1:])}`: trio_chat now (counting, "
        f"reporting to the hub, `/metrics` scraped every {SCRAPE_INTERVAL_SECONDS:g} s) against "
        f"trio_chat at {args.base} (before metrics, scraped alike: 404), medians of {args.runs} "
        "runs, ratios measured side by side in the same run (now / before). "
        f"Took {elapsed / 60:.1f} minutes.",
        "",
        "Machine: " + "; ".join(f"{k} {v}" for k, v in run.machine().items()) + ".",
    ]
    for key, load, quick_load in LOADS:
        shape = run._shape(load_args(load, quick_load, args.quick, None))
        lines += ["", f"## {key}: {shape}", ""]
        ours, base = results[f"{key}/{now.name}"], results[f"{key}/{before.name}"]
        lines += comparison_table(FIGURES, ours, base, ("now", "before"))
        scrapes = [r.get("scrapes", {}) for r in results[f"{key}/{now.name}"]]
        lines += ["", f"Scrapes of the server now, by status, per run: {scrapes}."]
    lines += ["", "<details><summary>every measurement</summary>", ""]
    lines += per_run_lines("store", results)
    lines += ["", "</details>"]
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="short durations, fewer clients")
    parser.add_argument("--base", default=METRICS_BASE, help="the commit to compare with")
    parser.add_argument("--output", type=Path, default=run.BENCH / "metrics-results.md")
    args = parser.parse_args(argv)
    started = time.monotonic()
    with worktree(args.base) as base_root, tempfile.TemporaryDirectory() as log_dir:
        specs = server_specs(base_root)
        log(f"metrics cost: now against {args.base}")
        results = run_runs(specs, args.runs, args.quick, Path(log_dir))
    lines = report(results, specs, args, time.monotonic() - started)
    args.output.write_text("\n".join(lines) + "\n")
    args.output.with_suffix(".json").write_text(
        run.json.dumps({"args": vars(args), "results": results}, indent=1, default=str)
    )
    log(f"\nwrote {args.output}")
    print(args.output.read_text())


if __name__ == "__main__":
    main()
