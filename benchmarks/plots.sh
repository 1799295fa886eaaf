#!/usr/bin/env bash
# Draws docs/img/*.png from BenchmarkDotNet's CSV reports (gnuplot; python3 reads the CSV).
#   bash benchmarks/plots.sh                 # runs the suite (short job) first, then plots
#   bash benchmarks/plots.sh RESULTS_DIR     # plots existing *-report.csv files
set -euo pipefail
cd "$(dirname "$0")/.."
command -v gnuplot >/dev/null || { apt-get update -qq && apt-get install -y -qq gnuplot-nox; }
results=${1:-}
if [ -z "$results" ]; then
  art=$(mktemp -d)
  dotnet run -c Release --project benchmarks/Virtio.Benchmarks -- --filter '*' --job short --exporters csv --artifacts "$art" >/dev/null
  results="$art/results"
fi
data=$(mktemp -d)
mkdir -p docs/img

python3 - "$results" "$data" <<'PY'
import csv, glob, os, sys
results, data = sys.argv[1], sys.argv[2]
def ns(text):
    number, unit = text.replace(',', '').split()
    return float(number) * {'ns': 1, 'us': 1e3, 'μs': 1e3, 'ms': 1e6}[unit]
def rows(name):
    paths = glob.glob(os.path.join(results, f'*{name}-report.csv'))
    return list(csv.DictReader(open(paths[0], newline=''))) if paths else []
with open(os.path.join(data, 'roundtrip.dat'), 'w') as f:
    f.write('case split packed\n')
    table = {}
    for r in rows('QueueRoundTripBenchmarks'):
        case = f"{r['Descriptors']}d{'-ind' if r.get('Indirect') == 'True' else ''}{'-evt' if r['EventIdx'] == 'True' else ''}"
        table.setdefault(case, {})[r['Format']] = ns(r['Mean'])
    for case, v in table.items():
        f.write(f"{case} {v.get('Split', 0):.2f} {v.get('Packed', 0):.2f}\n")
with open(os.path.join(data, 'device.dat'), 'w') as f:
    f.write('descriptors pop+iterate+push pop+iterate+push(indirect) pop+push\n')
    table = {}
    for r in rows('SplitDeviceBenchmarks'):
        table.setdefault(r['Descriptors'], {})[(r['Method'], r['Indirect'])] = ns(r['Mean'])
    for d, v in sorted(table.items(), key=lambda kv: int(kv[0])):
        f.write(f"{d} {v.get(('PopIteratePush', 'False'), 0):.2f} {v.get(('PopIteratePush', 'True'), 0):.2f} {v.get(('PopPush', 'False'), 0):.2f}\n")
with open(os.path.join(data, 'scan.dat'), 'w') as f:
    f.write('path ns\n')
    for r in rows('PackedFlagScanBenchmarks'):
        f.write(f"{r['Method']} {ns(r['Mean']):.3f}\n")
with open(os.path.join(data, 'echo.dat'), 'w') as f:
    f.write('case memcpy queue\n')
    table = {}
    for r in rows('EchoBenchmarks'):
        table.setdefault(f"{r['Format'].lower()}-{r['Bytes']}B", {})[r['Method']] = ns(r['Mean'])
    for case, v in table.items():
        f.write(f"{case} {v.get('MemoryCopyOnly', 0):.2f} {v.get('EchoThroughQueue', 0):.2f}\n")
PY

plot() { # output, title, ylabel, data file, columns; a class missing from the results keeps its old image
  if [ "$(wc -l < "$4")" -le 1 ]; then echo "no data for $1, docs/img/$1.png left as it is"; return; fi
  gnuplot <<GP
set terminal pngcairo size 900,420 font ",10"
set output "docs/img/$1.png"
set title "$2"
set ylabel "$3"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set boxwidth 0.9
set key top left
set grid ytics
set xtics rotate by -30
set yrange [0:*]
plot for [c=2:$5] "$4" using c:xtic(1) title columnheader
GP
}
plot roundtrip "Single-thread round trip per buffer (lower is better)" "ns" "$data/roundtrip.dat" 3
plot device-walk "Split device, per chain" "ns" "$data/device.dat" 4
plot flag-scan "Packed: availability of 4 descriptors (one cache line)" "ns per scan" "$data/scan.dat" 2
plot echo "Echo through the queue vs memcpy of the same bytes" "ns" "$data/echo.dat" 3
rm -rf "$data"
ls -1 docs/img/*.png
