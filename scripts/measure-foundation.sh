#!/usr/bin/env bash
# Measure the lab foundation's figures, on an otherwise idle machine:
#   1. cold build of a definition: empty lab cache, no ccache yet (what a fresh machine pays);
#   2. a second `lab build` of the same definition (must compile nothing);
#   3. boot to a command, three times: lab's wall time and the guest's uptime when the command ran.
# Usage: scripts/measure-foundation.sh [KERNEL]   (default debian-6.12). Prints a summary table.
set -euo pipefail
cd "$(dirname "$0")/.."
KERNEL=${1:-debian-6.12}
LAB=target/debug/lab
cargo build -q -p sockmap-lab

real_cache=${LAB_CACHE:-$HOME/.cache/sockmap-lab}
scratch=$(mktemp -d /var/tmp/lab-measure.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$scratch/cache"
# Reuse this host's KVM/TCG verdict: the probe is not part of a build.
[ -f "$real_cache/accel.json" ] && cp "$real_cache/accel.json" "$scratch/cache/"
export LAB_CACHE=$scratch/cache CCACHE_DIR=$scratch/ccache

now() { date +%s.%N; }
t0=$(now); $LAB build "$KERNEL"; t1=$(now)
$LAB build "$KERNEL" | tee "$scratch/second"; t2=$(now)
grep -q "cached, nothing compiled" "$scratch/second"

boots=()
for i in 1 2 3; do
  b0=$(now)
  up=$($LAB run "$KERNEL" -- cut -d' ' -f1 /proc/uptime | tail -1)
  b1=$(now)
  boots+=("$(printf '%.1f s wall, guest uptime %s s' "$(echo "$b1 - $b0" | bc)" "$up")")
done

echo
echo "== sockmap-lab foundation figures ($KERNEL, $(nproc) cores, accel: $($LAB accel "$KERNEL" | cut -d: -f1))"
printf 'cold build (fresh cache, no ccache):%.0f s\n' "$(echo "$t1 - $t0" | bc)"
printf 'second lab build (cache hit):      %.1f s\n' "$(echo "$t2 - $t1" | bc)"
for b in "${boots[@]}"; do echo "boot to command:                   $b"; done
