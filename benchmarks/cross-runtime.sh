#!/usr/bin/env bash
# Runs the same suite on net8.0, net10.0 and NativeAOT and prints one comparison table.
#   bash benchmarks/cross-runtime.sh              # 3 interleaved rounds
#   ROUNDS=5 CYCLES=10000000 bash benchmarks/cross-runtime.sh
#
# This machine kind has only the .NET 10 runtime, so net8.0 runs as a self-contained publish (its runtime pack
# comes from NuGet). NativeAOT is published with IlcInstructionSet=native: NativeAOT's default is baseline x64,
# on which Vector256/Vector512 report "not accelerated", while the JIT uses what the machine has; building for the
# machine keeps the comparison about the runtimes, not the instruction sets (a portable AOT build would pick a
# level such as x86-x64-v3 explicitly).
# The suite: `micro` (single-thread round trip per buffer, both formats, 1 and 4 descriptors, bytes allocated per
# operation) and the two-thread polling ping-pong (split and packed, CPUs 0 and 1). BenchmarkDotNet's suite
# (benchmarks/Virtio.Benchmarks) stays the detailed net10.0 view; it cannot run NativeAOT or an uninstalled runtime.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${ROUNDS:-3}
cycles=${CYCLES:-5000000}
out=${OUT:-${TMPDIR:-/tmp}/virtio-cross-runtime}
project=benchmarks/Virtio.PingPong
mkdir -p "$out"

dotnet publish "$project" -c Release -f net8.0 -r linux-x64 --self-contained -o "$out/net8.0" -v quiet -nologo >/dev/null
dotnet publish "$project" -c Release -f net10.0 -o "$out/net10.0" -v quiet -nologo >/dev/null
dotnet publish "$project" -c Release -f net10.0 -r linux-x64 -p:PublishAot=true -o "$out/nativeaot" -v quiet -nologo >/dev/null

results="$out/results.txt"
: > "$results"
for round in $(seq 1 "$rounds"); do
  for runtime in net8.0 net10.0 nativeaot; do
    exe="$out/$runtime/Virtio.PingPong"
    "$exe" micro 5 | awk -v rt="$runtime" '/^case=/ { split($1, c, "="); split($2, n, "="); split($3, b, "="); print rt, c[2], n[2], b[2] }' >> "$results"
    for ring in split packed; do
      "$exe" --ring "$ring" --run-cycles "$cycles" --host-affinity 0 --guest-affinity 1 \
        | sed -n "s/.*ns_per_buffer=\([0-9.]*\).*/$runtime $ring-pingpong \1 -/p" >> "$results"
    done
  done
  echo "round $round done" >&2
done

# One table: median ns per operation for each case and runtime, and the ratio to net10.0.
awk '
  { key = $2 SUBSEP $1; v[key, ++n[key]] = $3; if ($4 != "-" && $4 + 0 > alloc[$2, $1]) alloc[$2, $1] = $4 + 0;
    cases[$2] = 1; runtimes[$1] = 1 }
  function median(k,   i, j, t, m, a) {
    m = n[k]; for (i = 1; i <= m; i++) a[i] = v[k, i]
    for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
    return (m % 2) ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2
  }
  END {
    printf "%-26s %12s %12s %12s %10s %10s %12s\n", "case (ns per op, median)", "net8.0", "net10.0", "nativeaot", "8/10", "aot/10", "bytes/op"
    for (c in cases) {
      a = median(c SUBSEP "net8.0"); b = median(c SUBSEP "net10.0"); d = median(c SUBSEP "nativeaot")
      bytes = (alloc[c, "net8.0"] + alloc[c, "net10.0"] + alloc[c, "nativeaot"]); if (c ~ /pingpong/) bytes = "-"
      printf "%-26s %12.2f %12.2f %12.2f %10.2f %10.2f %12s\n", c, a, b, d, a / b, d / b, bytes
    }
  }' "$results" | sort
