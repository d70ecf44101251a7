#!/usr/bin/env bash
# bench/pipeline.sh — ntt-pipeline end to end against the reference tools
# doing the same work, as root.
#
# Medium: the 300k-entry copy benchmark image (bench/copy.sh builds and
# caches it: ~300,000 entries, ~690 MB of mostly repeated file contents,
# hardlinks, symlinks, fifos). One PostgreSQL cluster with default settings
# (fsync on) in a temp dir, one fresh database per side.
#
# Reference (the tools the runbook used, one after the other, cold caches):
#   find MNT -xdev -printf '%y\034%D\034%i\034%n\034%s\034%Ts\034%p\0' > raw
#   the staged psql load of those rows (staged_sql in bench/lib.sh, as
#     bench/load.sh's baseline; the raw→text conversion is NOT timed, in
#     the reference's favour)
#   cp -a MNT DEST                       (and the sync that makes it durable)
#   tar -I 'zstd -T0' -cf HASH.tar.zst HASH.img
# Ours: ntt-pipeline IMAGE (pre-flight, mount, enumerate, load, copy with
# the diagnose policy, seal + read-back verification, catalog, source
# removal, unmount), cold cache; phase times from its metrics file.
# Target: ntt-pipeline total <= 0.4 x the reference sum (issue 16; 0.5 before).
#
# Usage: sudo bench/pipeline.sh   (env: NTT_BENCH_DIR; WORKERS=N passes
# --workers N, unset: ntt-pipeline's default, as issue 16 measures;
# LOGS=DIR keeps ntt-pipeline's log, summary and metrics file there, and
# the cluster's log (its checkpoints);
# SKIP_REF=1 runs ntt-pipeline alone, its phases only, no ratio: to look
# into its own time)
set -euo pipefail
. "$(dirname "$0")/lib.sh"

BENCH=${NTT_BENCH_DIR:-/var/tmp/ntt-bench}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORKERS=${WORKERS:-}
WFLAG=()
[[ -n $WORKERS ]] && WFLAG=(--workers "$WORKERS")
HASH=00000000000000000000000000c0b1e5 # bench/copy.sh's tree medium
IMG=$BENCH/copy-300k-v2.img
FMT='%y\034%D\034%i\034%n\034%s\034%Ts\034%p\0'
PGBIN=${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)}

[[ $(id -u) == 0 ]] || { echo "bench/pipeline.sh: needs root (loop devices, mounts, drop_caches)" >&2; exit 1; }
[[ -f $IMG ]] || { echo "bench/pipeline.sh: $IMG missing: run bench/copy.sh once to build it" >&2; exit 1; }
log() { printf '%s\n' "$*" >&2; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.2f", b - a}'; }

WORK=$(mktemp -d "$BENCH/pipeline-work.XXXXXX")
PGDIR=$(mktemp -d /tmp/ntt-pb.XXXXXX)
MNT=$WORK/ref-mnt
LOOP=
cleanup() {
	mountpoint -q "$MNT" 2>/dev/null && { umount "$MNT" || umount -l "$MNT" || true; }
	[[ -n $LOOP ]] && losetup -d "$LOOP" 2>/dev/null || true
	[[ -x $WORK/ntt-mount-helper ]] && "$WORK/ntt-mount-helper" --root "$WORK/mnt" unmount "$HASH" >/dev/null 2>&1 || true
	[[ -f $PGDIR/data/postmaster.pid ]] && runuser -u postgres -- "$PGBIN/pg_ctl" stop -m immediate -D "$PGDIR/data" >/dev/null 2>&1 || true
	rm -rf "$WORK" "$PGDIR"
}
trap cleanup EXIT

log "building the programs…"
(cd "$ROOT" && go build -o "$WORK/" ./examples/ntt-pipeline ./examples/ntt-loader ./examples/ntt-mount-helper ./bench/cmd/raw2tsv)
chown postgres "$PGDIR"
runuser -u postgres -- "$PGBIN/initdb" -D "$PGDIR/data" --auth=trust -U postgres >/dev/null
runuser -u postgres -- "$PGBIN/pg_ctl" start -w -D "$PGDIR/data" -l "$PGDIR/log" \
	-o "-c listen_addresses='' -c unix_socket_directories='$PGDIR'" >/dev/null
url() { echo "postgres://postgres@/$1?host=$PGDIR"; }
psql -X -q -d "$(url postgres)" -c 'CREATE DATABASE ref' -c 'CREATE DATABASE ours'
"$WORK/ntt-loader" migrate --db "$(url ref)" >/dev/null
"$WORK/ntt-loader" migrate --db "$(url ours)" >/dev/null

# --- Reference -------------------------------------------------------------
if [[ -z ${SKIP_REF:-} ]]; then
mkdir -p "$MNT" "$WORK/ref-dest" "$WORK/ref-archive"
LOOP=$(losetup -r -f --show "$IMG")
mount -t ext4 -o ro,noload,nosuid,nodev,noexec,noatime "$LOOP" "$MNT"

cold_start; t=$(now)
find "$MNT" -xdev -printf "$FMT" >"$WORK/ref.raw"
t_find=$(since "$t")
records=$(tr -cd '\0' <"$WORK/ref.raw" | wc -c)
"$WORK/raw2tsv" <"$WORK/ref.raw" >"$WORK/ref.tsv"

t=$(now)
staged_sql "$HASH" "$MNT" "$WORK/ref.tsv" | psql -X -q -v ON_ERROR_STOP=1 -d "$(url ref)" -1
t_load=$(since "$t")

cold_start; t=$(now)
cp -a "$MNT" "$WORK/ref-dest/"
t_cp=$(since "$t")
t=$(now); sync; t_cpsync=$(since "$t")
umount "$MNT"; losetup -d "$LOOP"; LOOP=
rm -rf "$WORK/ref-dest"

cold_start; t=$(now)
tar -I 'zstd -T0' -cf "$WORK/ref-archive/$HASH.tar.zst" -C "$(dirname "$IMG")" "$(basename "$IMG")"
t_tar=$(since "$t")
t=$(now); sync; t_tarsync=$(since "$t")
rm -rf "$WORK/ref-archive"
fi

# --- Ours ------------------------------------------------------------------
mkdir -p "$WORK/img" "$WORK/cold/img-read" "$WORK/work"
cp --sparse=always "$IMG" "$WORK/img/$HASH.img"
cold_start; t=$(now)
"$WORK/ntt-pipeline" --db "$(url ours)" --root "$WORK/mnt" --store "$WORK/cold" --dest "$WORK/cold/img-read" \
	--work "$WORK/work" "${WFLAG[@]}" "$WORK/img/$HASH.img" >"$WORK/ours.out" 2>"$WORK/ours.err" || {
	cat "$WORK/ours.out" "$WORK/ours.err" >&2
	exit 1
}
t_ours=$(since "$t")
M=$WORK/work/${HASH:0:8}.metrics.json
if [[ -n ${LOGS:-} ]]; then
	mkdir -p "$LOGS"
	cp "$WORK/ours.out" "$WORK/ours.err" "$M" "$LOGS/"
	cp "$PGDIR/log" "$LOGS/postgresql.log"
	psql -X -At -d "$(url ours)" -c "SELECT 'inode partition after the run: ' || pg_relation_size('inode_p_$HASH') || ' bytes, with indexes ' || pg_total_relation_size('inode_p_$HASH')" >"$LOGS/sizes.txt"
fi
phase() { python3 -c "import json,sys; m=json.load(open('$M')); print('%.2f' % sum(p['seconds'] for p in m['phases'] if p['name'] in sys.argv[1:]))" "$@"; }

if [[ -n ${SKIP_REF:-} ]]; then
	echo "ntt-pipeline alone (SKIP_REF): $t_ours s wall"
	python3 -c "import json; m=json.load(open('$M')); [print('  %-12s %8.2f s' % (p['name'], p['seconds'])) for p in m['phases']]"
	exit 0
fi
echo "pipeline benchmark: $records records, image $IMG, $(nproc) cores, copy workers ${WORKERS:-default}"
printf '%-26s %8s   %-34s %8s\n' "ntt-pipeline phase" "seconds" "reference" "seconds"
printf '%-26s %8s   %-34s %8s\n' "preflight + mount" "$(phase preflight mount)" "" ""
printf '%-26s %8s   %-34s %8s\n' "enumerate" "$(phase enumerate)" "find -printf" "$t_find"
printf '%-26s %8s   %-34s %8s\n' "load" "$(phase load)" "staged psql load" "$t_load"
printf '%-26s %8s   %-34s %8s\n' "copy (durable)" "$(phase copy)" "cp -a (+ sync $t_cpsync)" "$t_cp"
printf '%-26s %8s   %-34s %8s\n' "archive (sealed, verified)" "$(phase archive)" "tar zstd -T0 (+ sync $t_tarsync)" "$t_tar"
sum=$(awk -v a="$t_find" -v b="$t_load" -v c="$t_cp" -v d="$t_tar" 'BEGIN {printf "%.2f", a+b+c+d}')
sums=$(awk -v s="$sum" -v a="$t_cpsync" -v b="$t_tarsync" 'BEGIN {printf "%.2f", s+a+b}')
printf '%-26s %8s   %-34s %8s\n' "total (wall, whole run)" "$t_ours" "sum (with syncs: $sums)" "$sum"
awk -v o="$t_ours" -v s="$sum" -v ss="$sums" 'BEGIN {
	r = o / s
	printf "ratio ours/reference %.2f (%.2f against the synced sum)  %s\n", r, o / ss, (r <= 0.4 ? "(target <= 0.4: met)" : "(target <= 0.4: MISSED)")
}'
