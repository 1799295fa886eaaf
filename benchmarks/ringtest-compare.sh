#!/usr/bin/env bash
# Runs our ping-pong harness (benchmarks/Virtio.PingPong) and Linux's tools/virtio/ringtest alternately,
# A B A B ..., and prints each pair's ratio of ns per buffer (ours / theirs) and the median ratio.
# Pairs compared: our split queue vs ringtest's virtio_ring_0_9, our packed queue vs ringtest's ring.
# ringtest is built on the fly from Debian's linux-source-6.1 (installed if missing); none of it is committed.
#
#   bash benchmarks/ringtest-compare.sh            # 5 pairs of 10,000,000 buffers, threads on CPUs 0 and 1
#   PAIRS=9 CYCLES=20000000 EXTRA="--sleep" bash benchmarks/ringtest-compare.sh
#   RINGS=packed OURS_EXTRA="--used-batch 4" bash benchmarks/ringtest-compare.sh   # ours only; ringtest unchanged
set -euo pipefail
cd "$(dirname "$0")/.."

pairs=${PAIRS:-5}
cycles=${CYCLES:-10000000}
extra=${EXTRA:-}
ours_extra=${OURS_EXTRA:-}
rings=${RINGS:-split packed}
affinity=${AFFINITY:---host-affinity 0 --guest-affinity 1}
work=${WORK:-${TMPDIR:-/tmp}/virtio-ringtest}

if [ ! -f /usr/src/linux-source-6.1.tar.xz ]; then
  apt-get update -qq && apt-get install -y -qq linux-source-6.1
fi
if [ ! -x "$work/ringtest/ring" ] || [ ! -x "$work/ringtest/virtio_ring_0_9" ]; then
  mkdir -p "$work"
  tar -xJf /usr/src/linux-source-6.1.tar.xz -C "$work" --wildcards 'linux-source-6.1/tools/virtio/ringtest/*'
  rm -rf "$work/ringtest" && mv "$work/linux-source-6.1/tools/virtio/ringtest" "$work/ringtest"
  make -s -C "$work/ringtest" ring virtio_ring_0_9 >/dev/null
fi

dotnet build -c Release benchmarks/Virtio.PingPong -v quiet -nologo >/dev/null
ours=benchmarks/Virtio.PingPong/bin/Release/net10.0/Virtio.PingPong

theirs_ns() { # ns per buffer of one ringtest run, from wall time (its process does nothing else)
  local start end
  start=$(date +%s%N)
  # shellcheck disable=SC2086
  "$work/ringtest/$1" --run-cycles "$cycles" $affinity $extra >/dev/null
  end=$(date +%s%N)
  echo "scale=2; ($end - $start) / $cycles" | bc
}

ours_ns() {
  # shellcheck disable=SC2086
  "$ours" --ring "$1" --run-cycles "$cycles" $affinity $extra $ours_extra | sed -n 's/.*ns_per_buffer=\([0-9.]*\).*/\1/p'
}

median() { sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

for ring in $rings; do
  case $ring in
    split) set -- split virtio_ring_0_9 ;;
    packed) set -- packed ring ;;
    *) echo "unknown ring $ring" >&2; exit 2 ;;
  esac
  echo "== ours ($1 $ours_extra) vs ringtest $2: $pairs pairs of $cycles buffers $affinity $extra"
  ratios=()
  for p in $(seq 1 "$pairs"); do
    a=$(ours_ns "$1")
    b=$(theirs_ns "$2")
    r=$(echo "scale=3; $a / $b" | bc)
    ratios+=("$r")
    printf 'pair %d: ours %s ns, ringtest %s ns, ratio %s\n' "$p" "$a" "$b" "$r"
  done
  printf 'median ratio (ours / ringtest, <= 1.0 means we are at least as fast): %s\n' "$(printf '%s\n' "${ratios[@]}" | median)"
done
