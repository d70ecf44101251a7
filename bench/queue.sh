#!/usr/bin/env bash
# bench/queue.sh — the processing queue on many small media: the per-medium
# overhead (mount, load, syncs, archive) is what counts here.
#
# Media: N floppy-sized ext2 images (1.44 MB, a few dozen files each, some
# contents shared between media), built once with mkfs.ext2 -d and cached.
# Each side gets a fresh copy of the images, a fresh database and store in
# one PostgreSQL cluster (default settings, fsync on).
#
# Reference: a shell loop over the single-medium pipeline,
#   for img in img/*.img; do ntt-pipeline "$img"; done
# Ours: ntt-pipeline --all --jobs 1, and ntt-pipeline --all (default jobs).
# Reported: media per minute of each, and default/loop.
# Target: the default >= 3x the shell loop.
#
# Usage: sudo bench/queue.sh   (env: NTT_BENCH_DIR, N=100, RUNS=3 rounds: medians)
set -euo pipefail

BENCH=${NTT_BENCH_DIR:-/var/tmp/ntt-bench}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
N=${N:-100}
RUNS=${RUNS:-3}
PGBIN=${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)}

[[ $(id -u) == 0 ]] || { echo "bench/queue.sh: needs root (loop devices, mounts)" >&2; exit 1; }
log() { printf '%s\n' "$*" >&2; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.2f", b - a}'; }

MEDIA=$BENCH/queue-floppies-$N
WORK=$(mktemp -d "$BENCH/queue-work.XXXXXX")
PGDIR=$(mktemp -d /tmp/ntt-qb.XXXXXX)
cleanup() {
	[[ -f $PGDIR/data/postmaster.pid ]] && runuser -u postgres -- "$PGBIN/pg_ctl" stop -m immediate -D "$PGDIR/data" >/dev/null 2>&1 || true
	rm -rf "$WORK" "$PGDIR"
}
trap cleanup EXIT

if [[ ! -f $MEDIA/.done ]]; then
	log "building $N floppy images in $MEDIA…"
	rm -rf "$MEDIA"
	mkdir -p "$MEDIA/src"
	for i in $(seq 1 "$N"); do
		d=$MEDIA/src/$i
		mkdir -p "$d/docs"
		for j in $(seq 1 30); do
			# Every fifth file is shared with the other media (same seed).
			seed=$((j % 5 == 0 ? j : i * 100 + j))
			head -c $((500 + (seed * 131) % 20000)) <(yes "$seed" | tr -d '\n') >"$d/docs/f$j.txt"
		done
		h=$(printf 'floppy-%d' "$i" | md5sum | cut -c1-32)
		mkfs.ext2 -q -d "$d" "$MEDIA/$h.img" 1440k >/dev/null
		touch -d '1 hour ago' "$MEDIA/$h.img"
		rm -rf "$d"
	done
	rmdir "$MEDIA/src"
	touch "$MEDIA/.done"
fi

log "building the programs…"
(cd "$ROOT" && go build -o "$WORK/" ./examples/ntt-pipeline ./examples/ntt-loader)
chown postgres "$PGDIR"
runuser -u postgres -- "$PGBIN/initdb" -D "$PGDIR/data" --auth=trust -U postgres >/dev/null
runuser -u postgres -- "$PGBIN/pg_ctl" start -w -D "$PGDIR/data" -l "$PGDIR/log" \
	-o "-c listen_addresses='' -c unix_socket_directories='$PGDIR' -c max_connections=200" >/dev/null
url() { echo "postgres://postgres@/$1?host=$PGDIR"; }

# side NAME: fresh database, images, store; prints nothing.
side() {
	local name=$1
	psql -X -q -d "$(url postgres)" -c "CREATE DATABASE $name"
	"$WORK/ntt-loader" migrate --db "$(url "$name")" >/dev/null 2>&1
	mkdir -p "$WORK/$name/img" "$WORK/$name/cold/img-read" "$WORK/$name/work"
	cp "$MEDIA"/*.img "$WORK/$name/img/"
	touch -d '1 hour ago' "$WORK/$name"/img/*.img
}
args() {
	local name=$1
	echo --db "$(url "$name")" --root "$WORK/$name/mnt" --store "$WORK/$name/cold" --dest "$WORK/$name/cold/img-read" --work "$WORK/$name/work"
}

# A round runs the three sides one after the other, each on a fresh
# database, store and copy of the images; RUNS rounds give each side's
# median (figures on 2 cores move by a fifth from run to run).
: >"$WORK/loop.t"
: >"$WORK/jobs1.t"
: >"$WORK/dflt.t"
for ((r = 1; r <= RUNS; r++)); do
	side loop$r
	sync
	t=$(now)
	for img in "$WORK"/loop$r/img/*.img; do
		# shellcheck disable=SC2046
		"$WORK/ntt-pipeline" $(args loop$r) "$img" >/dev/null 2>"$WORK/loop.err" || { cat "$WORK/loop.err" >&2; exit 1; }
	done
	since "$t" >>"$WORK/loop.t"
	echo >>"$WORK/loop.t"

	side jobs1_$r
	sync
	t=$(now)
	# shellcheck disable=SC2046
	"$WORK/ntt-pipeline" $(args jobs1_$r) --all --images "$WORK/jobs1_$r/img" --jobs 1 >/dev/null 2>"$WORK/jobs1.err" || { cat "$WORK/jobs1.err" >&2; exit 1; }
	since "$t" >>"$WORK/jobs1.t"
	echo >>"$WORK/jobs1.t"

	side dflt$r
	sync
	t=$(now)
	# shellcheck disable=SC2046
	"$WORK/ntt-pipeline" $(args dflt$r) --all --images "$WORK/dflt$r/img" >"$WORK/dflt.out" 2>"$WORK/dflt.err" || { cat "$WORK/dflt.out" "$WORK/dflt.err" >&2; exit 1; }
	since "$t" >>"$WORK/dflt.t"
	echo >>"$WORK/dflt.t"
	log "round $r: loop $(tail -n 1 "$WORK/loop.t") s, --jobs 1 $(tail -n 1 "$WORK/jobs1.t") s, --all $(tail -n 1 "$WORK/dflt.t") s"
done
median() { sort -g | awk '{v[NR] = $1} END {print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2)}'; }
t_loop=$(median <"$WORK/loop.t")
t_jobs1=$(median <"$WORK/jobs1.t")
t_dflt=$(median <"$WORK/dflt.t")
jobs=$(sed -n 's/.* media to process, \([0-9]*\) at a time.*/\1/p' "$WORK/dflt.out")

echo "queue benchmark: $N floppy media (1.44 MB, 30 files), $(nproc) cores, median of $RUNS round(s)"
rate() { awk -v n="$N" -v s="$1" 'BEGIN {printf "%.1f", n / s * 60}'; }
printf '%-40s %9s %14s\n' "run" "seconds" "media/minute"
printf '%-40s %9s %14s\n' "shell loop over ntt-pipeline IMAGE" "$t_loop" "$(rate "$t_loop")"
printf '%-40s %9s %14s\n' "ntt-pipeline --all --jobs 1" "$t_jobs1" "$(rate "$t_jobs1")"
printf '%-40s %9s %14s\n' "ntt-pipeline --all (default: $jobs jobs)" "$t_dflt" "$(rate "$t_dflt")"
awk -v l="$t_loop" -v d="$t_dflt" -v j="$t_jobs1" 'BEGIN {
	r = l / d
	printf "speed-up default/loop %.2fx, --jobs 1/loop %.2fx  %s\n", r, l / j, (r >= 3 ? "(target >= 3: met)" : "(target >= 3: MISSED)")
}'
