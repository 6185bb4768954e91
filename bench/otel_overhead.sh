#!/usr/bin/env bash
# `jobq bench --cases drain` with the otel extra installed but no exporter configured, against
# the same source tree installed without the extra, interleaved (the order alternates each
# round). Usage: bench/otel_overhead.sh POSTGRES_URL ROUNDS OUT_DIR; then
# bench/otel_overhead_summary.py OUT_DIR. The URL's server must allow CREATE DATABASE.
set -euo pipefail
cd "$(dirname "$0")/.."
url=$1 rounds=$2 out=$3
with=.venv/bin/python  # `make venv`: .[dev], which includes .[otel]
without_venv=$(mktemp -d)/without-otel
python3 -m venv "$without_venv"
"$without_venv/bin/pip" install --quiet -e .  # jobq alone: no SDK, exporter, instrumentation
mkdir -p "$out"
for round in $(seq 1 "$rounds"); do
  if (( round % 2 )); then order="with without"; else order="without with"; fi
  for variant in $order; do
    if [[ $variant == with ]]; then python=$with; else python=$without_venv/bin/python; fi
    env -u OTEL_TRACES_EXPORTER -u OTEL_EXPORTER_OTLP_ENDPOINT \
      -u OTEL_EXPORTER_OTLP_TRACES_ENDPOINT -u OTEL_SDK_DISABLED \
      "$python" -m jobq.cli bench -d "$url" --cases drain -n 60000 --json \
      > "$out/$variant-$round.json"
  done
done
