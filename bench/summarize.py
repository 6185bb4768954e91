"""Summarize several `jobq bench --json` runs: median and min-max of each figure.

python bench/summarize.py run1.json run2.json run3.json
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from typing import Any


def spread(values: list[float], fmt: str) -> str:
    if not values:
        return "-"
    median = statistics.median(values)
    if len(values) == 1:
        return format(median, fmt)
    return f"{format(median, fmt)} ({format(min(values), fmt)}-{format(max(values), fmt)})"


def main(paths: list[str]) -> None:
    by_case: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for path in paths:
        with open(path) as handle:
            for result in json.load(handle)["results"]:
                by_case[result["case"]].append(result)
    print("| case | runs | jobs/s | vs bare reference | other | worker CPU s | db CPU s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for case, results in by_case.items():
        rates = [r["per_second"] for r in results if r["per_second"]]
        ratios = [r["ratio"] for r in results if r.get("ratio")]
        extras: dict[str, list[float]] = defaultdict(list)
        for r in results:
            for key, value in (r.get("extra") or {}).items():
                if isinstance(value, int | float):
                    extras[key].append(value)
        other = "; ".join(f"{k} {spread(v, ',.1f')}" for k, v in extras.items())
        cpu = [r["worker_cpu_s"] for r in results if r.get("worker_cpu_s") is not None]
        db = [r["db_cpu_s"] for r in results if r.get("db_cpu_s") is not None]
        ratio_text = spread(ratios, ".2f") + ("x" if ratios else "")
        print(
            f"| {case} | {len(results)} | {spread(rates, ',.0f')} | {ratio_text} |"
            f" {other or '-'} | {spread(cpu, '.2f')} | {spread(db, '.2f')} |"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
