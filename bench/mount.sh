#!/usr/bin/env bash
# bench/mount.sh — ntt-mount-helper against util-linux, as root.
#
#  1. mount+unmount of a single-partition ext4 image (64 MiB, cached under
#     /var/tmp/ntt-bench): `ntt-mount-helper mount` + `unmount` against
#     `mount -o loop,ro,noload,nosuid,nodev,noexec,noatime` + `umount`
#     (losetup's autoclear loop). Median of RUNS. Target: ntt median <= 100 ms.
#  2. reap with 64 loop devices attached to deleted images:
#     `ntt-mount-helper reap` against `losetup -d` of the same 64 devices
#     (the reference already knows which ones; ntt has to find them).
#     Median of REAP_RUNS. Target: <= 1 s.
#  3. the Go benchmarks of package loopdev (library calls, no process start).
#
# Usage: sudo bench/mount.sh        (RUNS=21 REAP_RUNS=5 by default)
set -euo pipefail

BENCH=${NTT_BENCH_DIR:-/var/tmp/ntt-bench}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${RUNS:-21}
REAP_RUNS=${REAP_RUNS:-5}
HASH=00000000000000000000000000b3c0de
IMG=$BENCH/mount-ext4-64m.img

[[ $(id -u) == 0 ]] || { echo "bench/mount.sh: needs root (loop devices, mounts)" >&2; exit 1; }
mkdir -p "$BENCH"
WORK=$(mktemp -d /var/tmp/ntt-bench-mount.XXXXXX)
MNT=$WORK/mnt
cleanup() {
	umount "$WORK/ref" 2>/dev/null || true
	"$WORK/ntt-mount-helper" --root "$MNT" unmount "$HASH" >/dev/null 2>&1 || true
	rm -rf "$WORK"
}
trap cleanup EXIT

if [[ ! -f $IMG ]]; then
	stage=$WORK/stage
	mkdir -p "$stage"
	for i in $(seq -w 0 99); do head -c 65536 /dev/zero >"$stage/f$i"; done
	truncate -s 64M "$IMG.tmp"
	mkfs.ext4 -q -F -d "$stage" "$IMG.tmp"
	mv "$IMG.tmp" "$IMG"
fi

(cd "$ROOT" && go build -o "$WORK/ntt-mount-helper" ./examples/ntt-mount-helper)
NMH=$WORK/ntt-mount-helper

now() { date +%s%N; }
median() { sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.1f", m/1e6}'; }

# 1. mount + unmount
ntt_times=() ref_times=()
mkdir -p "$WORK/ref"
for ((i = 0; i < RUNS; i++)); do
	t0=$(now)
	"$NMH" --root "$MNT" mount "$HASH" "$IMG" >/dev/null 2>&1
	"$NMH" --root "$MNT" unmount "$HASH" >/dev/null 2>&1
	t1=$(now)
	mount -t ext4 -o loop,ro,noload,nosuid,nodev,noexec,noatime "$IMG" "$WORK/ref"
	umount "$WORK/ref"
	t2=$(now)
	ntt_times+=($((t1 - t0)))
	ref_times+=($((t2 - t1)))
done
ntt_mu=$(printf '%s\n' "${ntt_times[@]}" | median)
ref_mu=$(printf '%s\n' "${ref_times[@]}" | median)

# 2. reap with 64 deleted-backing loops
attach64() {
	local i f
	devs=()
	for ((i = 0; i < 64; i++)); do
		f=$WORK/gone$i.img
		truncate -s 1M "$f"
		devs+=("$(losetup -r -f --show "$f")")
		rm -f "$f"
	done
}
ntt_reap=() ref_reap=()
for ((i = 0; i < REAP_RUNS; i++)); do
	attach64
	t0=$(now)
	"$NMH" reap >/dev/null 2>&1
	t1=$(now)
	ntt_reap+=($((t1 - t0)))
	attach64
	t0=$(now)
	losetup -d "${devs[@]}"
	t1=$(now)
	ref_reap+=($((t1 - t0)))
done
ntt_rp=$(printf '%s\n' "${ntt_reap[@]}" | median)
ref_rp=$(printf '%s\n' "${ref_reap[@]}" | median)

ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a/b}'; }
echo "mount+unmount (64 MiB ext4, median of $RUNS, process start included):"
echo "  ntt-mount-helper mount+unmount  ${ntt_mu} ms   (target <= 100 ms)"
echo "  mount -o loop + umount          ${ref_mu} ms"
echo "  ratio ntt/reference             $(ratio "$ntt_mu" "$ref_mu")"
echo "reap with 64 loops on deleted images (median of $REAP_RUNS):"
echo "  ntt-mount-helper reap           ${ntt_rp} ms   (target <= 1000 ms)"
echo "  losetup -d <the 64 devices>     ${ref_rp} ms"
echo "  ratio ntt/reference             $(ratio "$ntt_rp" "$ref_rp")"
echo "Go benchmarks (library calls):"
(cd "$ROOT" && NTT_BENCH_DIR=$BENCH go test -run '^$' -bench 'MountUnmount|Reap64|Probe' -benchtime 20x ./loopdev/ | grep -E '^Benchmark')
