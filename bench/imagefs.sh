#!/usr/bin/env bash
# bench/imagefs.sh — reading a CD-ROM from its image (package imagefs)
# against The Sleuth Kit and cat(1), as root (drop_caches).
#
# Medium: a Rock Ridge + Joliet CD-ROM image that xorriso builds once
# (cached under /var/tmp/ntt-bench) from a generated tree: 20 x 25
# directories of 40 files (20,000 files), sizes from 0 to 24 KiB plus one
# file in 200 of ~1 MB, every 10th file a copy of an earlier one (dedupe),
# ~330 MB in all. Everything derives from the file's number, so every build
# holds the same tree.
#
# Measured, RUNS times each (default 3; (c), under a second a run, C_RUNS
# times, default 7), medians printed, cold caches
# (echo 3 > /proc/sys/vm/drop_caches before every run) unless said:
#   (a) listing:  bin/ntt-enum --image IMG HASH OUT.raw
#                 vs fls -r -p IMG > OUT              target <= 0.2x
#                 (warm too: one untimed run of each first)
#   (b) pipeline: ntt-pipeline --read image (pre-flight, enumerate, load,
#                 copy with hashing and dedupe, tree, seal and read-back
#                 verification; --keep-sources), a fresh database and
#                 store per run
#                 vs tsk_recover -e IMG DIR (+ its sync)  target <= 0.5x
#   (c) content:  bench/cmd/imgread IMG HASH (every file's bytes through
#                 imagefs, in image-offset order, as the copier reads a
#                 batch; the walk that finds the files is (a)'s, timed
#                 apart and not counted)
#                 vs cat IMG > /dev/null                target >= 80 %
#                 throughput (MB/s of file bytes / MB/s of image bytes)
# On a virtual machine "cold" is cold in the guest only: the host may still
# cache the image (cat then reads at memory speed, the hardest reference).
# The machine's load average is printed with every figure: other work on
# the machine skews them.
#
# One PostgreSQL cluster with default settings in a temp dir.
# Usage: sudo bench/imagefs.sh   (env: NTT_BENCH_DIR, RUNS=3, C_RUNS=7, WORKERS=2)
set -euo pipefail

BENCH=${NTT_BENCH_DIR:-/var/tmp/ntt-bench}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/bench/lib.sh"
RUNS=${RUNS:-3}
C_RUNS=${C_RUNS:-7}
WORKERS=${WORKERS:-2}
HASH=00000000000000000000000000ccd150
IMG=$BENCH/imagefs-cd-20k-v1/$HASH.img # named <hash>.img: the archive phase finds it by name
PGBIN=${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)}

[[ $(id -u) == 0 ]] || { echo "bench/imagefs.sh: needs root (drop_caches)" >&2; exit 1; }
for tool in xorriso fls tsk_recover python3 go; do
	command -v "$tool" >/dev/null || { echo "bench/imagefs.sh: $tool not found (scripts/deps.sh)" >&2; exit 1; }
done
log() { printf '%s\n' "$*" >&2; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.2f", b - a}'; }
load() { cut -d' ' -f1-3 /proc/loadavg; }
median() { sort -g | awk '{a[NR] = $1} END {printf "%.2f", NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

mkdir -p "$BENCH"
WORK=$(mktemp -d "$BENCH/imagefs-work.XXXXXX")
PGDIR=$(mktemp -d /tmp/ntt-ib.XXXXXX)
cleanup() {
	[[ -f $PGDIR/data/postmaster.pid ]] && runuser -u postgres -- "$PGBIN/pg_ctl" stop -m immediate -D "$PGDIR/data" >/dev/null 2>&1 || true
	rm -rf "$WORK" "$PGDIR"
}
trap cleanup EXIT

build_image() {
	log "building $IMG (once)…"
	python3 - "$WORK/tree" <<'PY'
import os, random, sys
root = sys.argv[1]
n = 0
kept = []
for a in range(20):
    for b in range(25):
        d = os.path.join(root, "dir%02d" % a, "sub%02d" % b)
        os.makedirs(d)
        for c in range(40):
            rnd = random.Random(n)
            if n % 10 == 9 and kept:
                data = kept[rnd.randrange(len(kept))]
            elif n % 200 == 7:
                data = rnd.randbytes(900 * 1024 + rnd.randrange(200 * 1024))
            else:
                data = rnd.randbytes(rnd.randrange(24 * 1024 + 1))
            if len(data) < 64 * 1024 and len(kept) < 1000:
                kept.append(data)
            name = "file%05d-%s.dat" % (n, "long name for joliet and rock ridge" if n % 7 == 0 else "x")
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)
            os.utime(os.path.join(d, name), (1262304000 + n * 60, 1262304000 + n * 60))
            n += 1
PY
	xorriso -as mkisofs -quiet -R -J -joliet-long -V NTT_BENCH -o "$IMG.tmp" "$WORK/tree"
	mv "$IMG.tmp" "$IMG"
	rm -rf "$WORK/tree"
}
[[ -f $IMG ]] || { mkdir -p "$(dirname "$IMG")"; build_image; }
files=$(find "$IMG" -printf '%s')
log "building the programs…"
(cd "$ROOT" && go build -o "$WORK/" ./examples/ntt-enum ./examples/ntt-pipeline ./examples/ntt-loader ./bench/cmd/imgread)

# --- (a) listing -------------------------------------------------------------
run_enum() { rm -f "$WORK/ours.raw"; "$WORK/ntt-enum" --image "$IMG" "$HASH" "$WORK/ours.raw" >/dev/null 2>&1; }
run_fls() { fls -r -p "$IMG" >"$WORK/fls.txt"; }
timed() { local t; t=$(now); "$@"; since "$t"; }
for mode in warm cold; do
	[[ $mode == warm ]] && { run_enum; run_fls; }
	: >"$WORK/a-ours" >"$WORK/a-fls"
	la=$(load)
	for _ in $(seq "$RUNS"); do
		[[ $mode == cold ]] && drop
		timed run_enum >>"$WORK/a-ours"
		[[ $mode == cold ]] && drop
		timed run_fls >>"$WORK/a-fls"
	done
	eval "a_ours_$mode=$(median <"$WORK/a-ours") a_fls_$mode=$(median <"$WORK/a-fls") a_load_$mode='$la / $(load)'"
done
records=$(tr -cd '\0' <"$WORK/ours.raw" | wc -c)
flsrec=$(wc -l <"$WORK/fls.txt")

# --- (c) content -------------------------------------------------------------
: >"$WORK/c-ours" >"$WORK/c-cat"
c_la=$(load)
for _ in $(seq "$C_RUNS"); do
	drop
	"$WORK/imgread" "$IMG" "$HASH" >"$WORK/imgread.out"
	awk '{print $NF == "MB/s" ? $(NF-1) : ""}' "$WORK/imgread.out" >>"$WORK/c-ours"
	drop
	t=$(now); cat "$IMG" >/dev/null; s=$(since "$t")
	awk -v b="$files" -v s="$s" 'BEGIN {printf "%.1f\n", b / s / 1e6}' >>"$WORK/c-cat"
done
c_ours=$(median <"$WORK/c-ours")
c_cat=$(median <"$WORK/c-cat")
c_la="$c_la / $(load)"
filebytes=$(awk '{print $3}' "$WORK/imgread.out")

# --- (b) pipeline --------------------------------------------------------------
chown postgres "$PGDIR"
runuser -u postgres -- "$PGBIN/initdb" -D "$PGDIR/data" --auth=trust -U postgres >/dev/null
runuser -u postgres -- "$PGBIN/pg_ctl" start -w -D "$PGDIR/data" -l "$PGDIR/log" \
	-o "-c listen_addresses='' -c unix_socket_directories='$PGDIR'" >/dev/null
url() { echo "postgres://postgres@/$1?host=$PGDIR"; }
: >"$WORK/b-ours" >"$WORK/b-tsk" >"$WORK/b-copy"
b_la=$(load)
for i in $(seq "$RUNS"); do
	psql -X -q -d "$(url postgres)" -c "CREATE DATABASE ours$i"
	"$WORK/ntt-loader" migrate --db "$(url "ours$i")" >/dev/null
	rm -rf "$WORK/p"
	mkdir -p "$WORK/p/cold/img-read" "$WORK/p/work" "$WORK/p/mnt"
	drop; t=$(now)
	"$WORK/ntt-pipeline" --read image --keep-sources --db "$(url "ours$i")" --root "$WORK/p/mnt" --store "$WORK/p/cold" \
		--dest "$WORK/p/cold/img-read" --work "$WORK/p/work" --workers "$WORKERS" "$IMG" "$HASH" \
		>"$WORK/ours.out" 2>"$WORK/ours.err" || {
		cat "$WORK/ours.out" "$WORK/ours.err" >&2
		exit 1
	}
	t=$(since "$t")
	echo "$t" >>"$WORK/b-ours"
	python3 -c "import json; m=json.load(open('$WORK/p/work/${HASH:0:8}.metrics.json')); print('%.2f' % sum(p['seconds'] for p in m['phases'] if p['name'] == 'copy'))" >>"$WORK/b-copy"
	rm -rf "$WORK/p" "$WORK/tsk"
	drop; t=$(now)
	tsk_recover -e "$IMG" "$WORK/tsk" >/dev/null
	sync
	since "$t" >>"$WORK/b-tsk"
	rm -rf "$WORK/tsk"
done
b_ours=$(median <"$WORK/b-ours")
b_tsk=$(median <"$WORK/b-tsk")
b_copy=$(median <"$WORK/b-copy")
b_la="$b_la / $(load)"

# --- Report --------------------------------------------------------------------
echo "imagefs benchmark: $IMG ($files bytes; $records ntt-enum records, $flsrec fls lines; $filebytes bytes of distinct files), $(nproc) cores, median of $RUNS"
echo "load average (1 5 15 min) at the start / end of each figure's runs"
ratio() { awk -v o="$1" -v r="$2" -v t="$3" -v op="$4" 'BEGIN {x = o / r; ok = (op == "le" ? x <= t : x >= t); printf "%.2f %s", x, (ok ? "(target: met)" : "(target: MISSED)")}'; }
printf '%-44s %9s   %-30s %9s   %s\n' "ours" "" "reference" "" "ratio"
printf '%-44s %8ss   %-30s %8ss   %s   load %s\n' "(a) ntt-enum --image, cold" "$a_ours_cold" "fls -r -p, cold" "$a_fls_cold" "$(ratio "$a_ours_cold" "$a_fls_cold" 0.2 le) <= 0.2" "$a_load_cold"
printf '%-44s %8ss   %-30s %8ss   %s   load %s\n' "(a) ntt-enum --image, warm" "$a_ours_warm" "fls -r -p, warm" "$a_fls_warm" "$(ratio "$a_ours_warm" "$a_fls_warm" 0.2 le) <= 0.2" "$a_load_warm"
printf '%-44s %8ss   %-30s %8ss   %s   load %s\n' "(b) ntt-pipeline --read image, cold" "$b_ours" "tsk_recover -e (+ sync), cold" "$b_tsk" "$(ratio "$b_ours" "$b_tsk" 0.5 le) <= 0.5" "$b_la"
printf '%-44s %8ss\n' "    of which the copy phase" "$b_copy"
printf '%-44s %7sMB/s   %-30s %7sMB/s   %s   load %s\n' "(c) imgread (imagefs content), cold, $C_RUNS runs" "$c_ours" "cat IMG > /dev/null, cold" "$c_cat" "$(ratio "$c_ours" "$c_cat" 0.8 ge) >= 0.8" "$c_la"
