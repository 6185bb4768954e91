"""jobq against the peer, run by run: ``jobq bench --json`` files and ``pgqueuer_bench.py
--json`` files of the same rounds, given in the same order, paired by position.

python bench/peer/compare.py --jobq jobq-1.json jobq-2.json jobq-3.json \\
    --peer peer-1.json peer-2.json peer-3.json

For each case both measured: the median (min-max) of each side, and of the per-round ratio
jobq ÷ peer (throughput: above 1 is jobq faster; latency: below 1 is jobq quicker). Ratios
are formed within a round, so that the machine's drift between rounds cancels.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

# The median (min-max) format of bench/summarize.py, so both tables read alike.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from summarize import spread


def jobq_figures(path: str) -> dict[str, dict[str, float]]:
    """Per case: jobs/s, or p50/p95 in ms for the latency case."""
    with open(path) as handle:
        results = json.load(handle)["results"]
    figures: dict[str, dict[str, float]] = {}
    for r in results:
        extra = r.get("extra") or {}
        if "p95_ms" in extra:
            figures[r["case"]] = {"p50_ms": extra["p50_ms"], "p95_ms": extra["p95_ms"]}
        else:
            figures[r["case"]] = {"jobs_per_s": r["per_second"]}
    return figures


def peer_figures(path: str) -> dict[str, dict[str, float]]:
    """The same, keyed by the jobq case each peer result stands beside."""
    with open(path) as handle:
        results: list[dict[str, Any]] = json.load(handle)
    figures: dict[str, dict[str, float]] = {}
    for r in results:
        if r.get("p50_ms") is not None:
            figures[r["jobq_case"]] = {"p50_ms": r["p50_ms"], "p95_ms": r["p95_ms"]}
        else:
            figures[r["jobq_case"]] = {"jobs_per_s": r["jobs_per_s"]}
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobq", nargs="+", required=True)
    parser.add_argument("--peer", nargs="+", required=True)
    args = parser.parse_args()
    if len(args.jobq) != len(args.peer):
        parser.error("give one peer file for each jobq file (the same rounds, in order)")
    # case -> figure -> (jobq values, peer values, per-round ratios)
    table: dict[str, dict[str, tuple[list[float], list[float], list[float]]]] = defaultdict(dict)
    for jobq_path, peer_path in zip(args.jobq, args.peer, strict=True):
        ours, theirs = jobq_figures(jobq_path), peer_figures(peer_path)
        for case in ours.keys() & theirs.keys():
            for figure, value in ours[case].items():
                peer_value = theirs[case].get(figure)
                if peer_value is None:
                    continue
                mine, peers, ratios = table[case].setdefault(figure, ([], [], []))
                mine.append(value)
                peers.append(peer_value)
                ratios.append(value / peer_value)
    print("| case | figure | rounds | jobq | peer | jobq ÷ peer |")
    print("| --- | --- | --- | --- | --- | --- |")
    for case in sorted(table):
        for figure, (mine, peers, ratios) in table[case].items():
            fmt = ",.0f" if figure == "jobs_per_s" else ".2f"
            print(
                f"| {case} | {figure} | {len(ratios)} | {spread(mine, fmt)} |"
                f" {spread(peers, fmt)} | {spread(ratios, '.2f')} |"
            )


if __name__ == "__main__":
    main()
