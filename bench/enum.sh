#!/usr/bin/env bash
# bench/enum.sh — ntt-enum against find(1), as root.
#
# Builds once (cached under /var/tmp/ntt-bench) a deterministic ext4 image of
# about 300,000 entries: nested directories, files with duplicate contents,
# hardlinks, symlinks, fifos and odd names (0x1C, newline, CR, backslash,
# invalid UTF-8, 255 bytes). Mounts it read-only through a loop device at
# WORK/mnt/<hash> and times, side by side and alternating,
#   ntt-enum MNT HASH OUT.raw
#   find MNT -xdev -printf '%y\034%D\034%i\034%n\034%s\034%Ts\034%p\0' > OUT
# warm (page cache kept; one untimed run of each first) and cold (echo 3 >
# /proc/sys/vm/drop_caches before every run), RUNS runs each (default 5),
# and prints the medians, the ratio ours/find and the peak RSS. With AB=1
# (the default) it also times `ntt-enum --kernel-walk` in the same rounds:
# the walk through system calls alone, without the direct read of the ext
# medium from its block device that ntt-enum does by default
# (enumerate/doc.go). It
# also checks that both outputs hold the same record set. Targets: ratio
# <= 0.35 cold and <= 0.5 warm, ntt-enum peak RSS <= 64 MiB.
#
# find runs with TZ=UTC (FIND_TZ): with TZ unset, glibc re-reads
# /etc/localtime for every %Ts and find takes 3-4 times longer; the output
# is the same (seconds since the epoch), so the faster reference is used.
#
# Usage: sudo bench/enum.sh     (RUNS=5 AB=1 WORKERS=<ntt-enum default> by default)
set -euo pipefail

BENCH=${NTT_BENCH_DIR:-/var/tmp/ntt-bench}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/bench/lib.sh"
RUNS=${RUNS:-5}
WORKERS=${WORKERS:-}
AB=${AB:-1}
FIND_TZ=${FIND_TZ:-UTC}
HASH=00000000000000000000000000e0c0de
IMG=$BENCH/enum-300k-v1.img
FMT='%y\034%D\034%i\034%n\034%s\034%Ts\034%p\0'

[[ $(id -u) == 0 ]] || { echo "bench/enum.sh: needs root (loop devices, mounts, drop_caches)" >&2; exit 1; }
for tool in mkfs.ext4 losetup find /usr/bin/time go; do
	command -v "$tool" >/dev/null || { echo "bench/enum.sh: $tool not found" >&2; exit 1; }
done
mkdir -p "$BENCH"
WORK=$(mktemp -d "$BENCH/enum-work.XXXXXX")
MNT=$WORK/mnt/$HASH
LOOP=
cleanup() {
	if mountpoint -q "$MNT" 2>/dev/null; then umount "$MNT" || umount -l "$MNT" || true; fi
	[[ -n $LOOP ]] && losetup -d "$LOOP" 2>/dev/null || true
	rm -rf "$WORK"
}
trap cleanup EXIT

build_image() {
	echo "building $IMG (once; takes a minute)…" >&2
	mkdir -p "$WORK/gen"
	cat >"$WORK/gen/gen.go" <<'EOF'
// Stages the benchmark tree: 10 x 10 x 30 directories of 99 entries
// each. Everything derives from the entry's number, so every build is the
// same tree.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func main() {
	root := os.Args[1]
	odd := []string{"sep\x1cname", "new\nline", "cr\rname", `back\slash`, "bad-\xff\xfe-utf8",
		strings.Repeat("L", 255), " spaced out ", "caf\xe9"}
	contents := make([][]byte, 64) // duplicate contents: 64 distinct blobs
	for i := range contents {
		contents[i] = []byte(strings.Repeat(fmt.Sprintf("blob %d\n", i), 1+i*7))
	}
	base := time.Unix(1262304000, 0) // 2010-01-01
	n := 0
	for a := 0; a < 10; a++ {
		for b := 0; b < 10; b++ {
			for c := 0; c < 30; c++ {
				dir := filepath.Join(root, fmt.Sprintf("vol%02d", a), fmt.Sprintf("set%02d", b), fmt.Sprintf("box%02d", c))
				must(os.MkdirAll(dir, 0o755))
				for k := 0; k < 99; k++ {
					n++
					name := fmt.Sprintf("doc-%06d.txt", n)
					if n%53 == 0 {
						name = fmt.Sprintf("%s-%d", odd[n%len(odd)], n)
						if len(name) > 255 {
							name = name[len(name)-255:]
						}
					}
					p := filepath.Join(dir, name)
					switch {
					case n%41 == 0 && k > 0:
						// hardlink to the previous file of this directory
						prev := filepath.Join(dir, fmt.Sprintf("doc-%06d.txt", n-1))
						if st, err := os.Lstat(prev); err == nil && st.Mode().IsRegular() {
							must(os.Link(prev, p))
						} else {
							must(os.WriteFile(p, nil, 0o644))
						}
					case n%29 == 0:
						must(os.Symlink(fmt.Sprintf("../box%02d/doc-%06d.txt", (c+1)%30, n+3), p))
					case n%997 == 0:
						must(syscall.Mkfifo(p, 0o644))
					case n%3 == 0:
						must(os.WriteFile(p, contents[n%len(contents)], 0o644))
					default:
						must(os.WriteFile(p, nil, 0o644))
					}
					if n%29 != 0 {
						t := base.Add(time.Duration(n) * time.Minute)
						must(os.Chtimes(p, t, t))
					}
				}
			}
		}
	}
	fmt.Fprintln(os.Stderr, "staged", n, "entries")
}
EOF
	local stage=$WORK/stage
	mkdir -p "$stage"
	(cd "$WORK/gen" && go run gen.go "$stage")
	rm -f "$IMG.tmp"
	truncate -s 2G "$IMG.tmp"
	E2FSPROGS_FAKE_TIME=1262304000 mkfs.ext4 -q -F -N 400000 -L enumbench \
		-U 6e747474-6265-6e63-6800-000000000001 -E hash_seed=6e747474-6265-6e63-6800-000000000002 \
		-d "$stage" "$IMG.tmp"
	mv "$IMG.tmp" "$IMG"
	rm -rf "$stage"
}
[[ -f $IMG ]] || build_image

(cd "$ROOT" && go build -o "$WORK/ntt-enum" ./examples/ntt-enum)
mkdir -p "$MNT"
LOOP=$(losetup -r -f --show "$IMG")
mount -t ext4 -o ro,noload,nosuid,nodev,noexec,noatime "$LOOP" "$MNT"

# run_ntt / run_find append "seconds rss_kib" to the named file.
run_ntt() {
	/usr/bin/time -f '%e %M' -a -o "$1" "$WORK/ntt-enum" --force ${WORKERS:+--workers "$WORKERS"} "${@:2}" \
		"$MNT" "$HASH" "$WORK/ntt.raw" >/dev/null 2>"$WORK/ntt.log"
}
run_find() {
	TZ=$FIND_TZ /usr/bin/time -f '%e %M' -a -o "$1" find "$MNT" -xdev -printf "$FMT" >"$WORK/find.raw"
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2}'; }
col() { awk -v c="$2" '{print $c}' "$1"; }

# Same record set (the walk's order differs from find's).
run_ntt /dev/null
run_find /dev/null
records=$(tr -cd '\0' <"$WORK/find.raw" | wc -c)
if ! cmp -s <(tr '\0' '\n' <"$WORK/ntt.raw" | LC_ALL=C sort) <(tr '\0' '\n' <"$WORK/find.raw" | LC_ALL=C sort); then
	echo "bench/enum.sh: ntt-enum and find disagree on the record set" >&2
	exit 1
fi

LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
for f in warm.ntt warm.find warm.pf cold.ntt cold.find cold.pf; do : >"$WORK/$f"; done
for ((i = 0; i < RUNS; i++)); do
	run_ntt "$WORK/warm.ntt"
	run_find "$WORK/warm.find"
	if ((AB)); then run_ntt "$WORK/warm.pf" --kernel-walk; fi
done
for ((i = 0; i < RUNS; i++)); do
	drop
	run_ntt "$WORK/cold.ntt"
	direct=$(grep -o '"direct_roots":[^]]*\],"direct_devices":[^]]*\],"direct_inode_table_bytes":[0-9]*,"direct_directory_bytes":[0-9]*' "$WORK/ntt.log" || true)
	drop
	run_find "$WORK/cold.find"
	if ((AB)); then
		drop
		run_ntt "$WORK/cold.pf" --kernel-walk
	fi
done

report() {
	local name=$1 target=$2 ours theirs pf
	ours=$(col "$WORK/$name.ntt" 1 | median)
	theirs=$(col "$WORK/$name.find" 1 | median)
	awk -v n="$name" -v o="$ours" -v t="$theirs" -v g="$target" 'BEGIN {
		r = o / t
		printf "%-5s ntt-enum %6.2f s   find %6.2f s   ratio %.2f  (target <= %s: %s)\n", n, o, t, r, g, (r <= g ? "met" : "MISSED")
	}'
	echo "      runs: ntt-enum $(col "$WORK/$name.ntt" 1 | xargs)  find $(col "$WORK/$name.find" 1 | xargs)"
	if ((AB)); then
		pf=$(col "$WORK/$name.pf" 1 | median)
		awk -v n="$name" -v o="$ours" -v p="$pf" -v t="$theirs" 'BEGIN {
			printf "      ntt-enum --kernel-walk %.2f s (ratio %.2f); default/--kernel-walk %.2f\n", p, p / t, o / p
		}'
		echo "      runs: --kernel-walk $(col "$WORK/$name.pf" 1 | xargs)"
	fi
}
echo "load average before/after: $LOAD0 / $(cut -d' ' -f1-3 /proc/loadavg) (others' work and drop_caches skew timings)"
echo "enum benchmark: $records records, image $IMG, median of $RUNS, $(nproc) cores, workers ${WORKERS:-default}, find with TZ=$FIND_TZ"
echo "direct read of the last cold run: ${direct:-none (walked through system calls)}"
report warm 0.5
report cold 0.35
rss=$(cat "$WORK/warm.ntt" "$WORK/cold.ntt" | col /dev/stdin 2 | sort -n | tail -1)
frss=$(cat "$WORK/warm.find" "$WORK/cold.find" | col /dev/stdin 2 | sort -n | tail -1)
awk -v r="$rss" -v f="$frss" 'BEGIN {
	printf "peak RSS ntt-enum %.1f MiB (find %.1f MiB)  %s\n", r/1024, f/1024, (r <= 65536 ? "(target <= 64 MiB: met)" : "(target <= 64 MiB: MISSED)")
}'
