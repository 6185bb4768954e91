"""Summarize bench/otel_overhead.sh's results: per variant and worker count, the median
throughput and worker CPU over the rounds, and the median of the per-round ratios (with the
extra / without), each round's pair having run back to back.

Usage: python bench/otel_overhead_summary.py OUT_DIR"""

from __future__ import annotations

import json
import re
import statistics
import sys
from pathlib import Path


def main(out: Path) -> None:
    runs: dict[tuple[int, str], dict[int, dict[str, float]]] = {}
    for path in sorted(out.glob("*.json")):
        match = re.fullmatch(r"(with|without)-(\d+)\.json", path.name)
        if match is None:
            continue
        variant, round_ = match.group(1), int(match.group(2))
        text = path.read_text()
        if not text.strip():
            continue  # a run still in progress
        for result in json.loads(text)["results"]:
            processes = 1 if result["case"].startswith("drain, 1 ") else 2
            runs.setdefault((processes, variant), {})[round_] = {
                "per_s": result["per_second"],
                "cpu_s": result["worker_cpu_s"],
            }
    for processes in (1, 2):
        with_, without = runs[(processes, "with")], runs[(processes, "without")]
        rounds = sorted(set(with_) & set(without))
        print(f"drain, {processes} worker process(es), {len(rounds)} rounds")
        for name, variant in (("with the extra", with_), ("without", without)):
            rates = [variant[r]["per_s"] for r in rounds]
            cpu = [variant[r]["cpu_s"] for r in rounds]
            print(
                f"  {name:15s} median {statistics.median(rates):8,.0f} jobs/s "
                f"(min-max {min(rates):,.0f}-{max(rates):,.0f}), "
                f"worker CPU median {statistics.median(cpu):.2f} s"
            )
        rate_ratio = [with_[r]["per_s"] / without[r]["per_s"] for r in rounds]
        cpu_ratio = [with_[r]["cpu_s"] / without[r]["cpu_s"] for r in rounds]
        print(
            f"  with/without per round: throughput median {statistics.median(rate_ratio):.3f} "
            f"(min-max {min(rate_ratio):.2f}-{max(rate_ratio):.2f}), "
            f"worker CPU median {statistics.median(cpu_ratio):.3f} "
            f"(min-max {min(cpu_ratio):.2f}-{max(cpu_ratio):.2f})"
        )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
