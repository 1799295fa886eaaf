#!/usr/bin/env bash
# Runs the BenchmarkDotNet suite (or FILTER) with MemoryDiagnoser and compares every benchmark's allocated bytes
# per operation with benchmarks/allocations.expected. Fails when a benchmark allocates more than it lists, or is
# not listed at all.
#   bash benchmarks/check-allocations.sh                  # whole suite, short job (a few minutes)
#   FILTER='*QueueRoundTrip*' JOB=dry bash benchmarks/check-allocations.sh
set -euo pipefail
cd "$(dirname "$0")/.."
filter=${FILTER:-*}
job=${JOB:-short}
out=$(mktemp -d)
dotnet run -c Release --project benchmarks/Virtio.Benchmarks -- --filter "$filter" --job "$job" --memory \
  --exporters csv --artifacts "$out" >/dev/null
status=0
for csv in "$out"/results/*-report.csv; do
  # Columns: find "Method" and "Allocated" by header name; the class is in the file name.
  class=$(basename "$csv" | sed -e 's/-report.csv$//' -e 's/.*\.//')
  python3 - "$csv" "$class" benchmarks/allocations.expected <<'PY' || status=1
import csv, sys
path, cls, expected_path = sys.argv[1:4]
expected = {}
for line in open(expected_path):
    line = line.strip()
    if line and not line.startswith('#'):
        name, value = line.split()
        expected[name] = int(value)
def parse(text):
    text = text.strip()
    if text in ('-', '', 'NA'): return 0
    number, unit = text.split() if ' ' in text else (text, 'B')
    scale = {'B': 1, 'KB': 1024, 'MB': 1024 * 1024}[unit]
    return int(float(number.replace(',', '')) * scale)
bad = False
with open(path, newline='') as f:
    for row in csv.DictReader(f, delimiter=';' if ';' in open(path).readline() else ','):
        key = f"{cls}.{row['Method']}"
        got = parse(row.get('Allocated', '-'))
        if key not in expected:
            print(f"MISSING {key}: allocated {got} B, not listed in allocations.expected"); bad = True
        elif got > expected[key]:
            print(f"FAIL {key} ({', '.join(v for k, v in row.items() if k not in ('Method', 'Allocated') and len(v) < 12)}): {got} B > {expected[key]} B"); bad = True
        else:
            print(f"ok   {key}: {got} B")
sys.exit(1 if bad else 0)
PY
done
rm -rf "$out"
exit $status
