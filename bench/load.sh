#!/usr/bin/env bash
# bench/load.sh — ntt-loader against the way existing tools load, and the floor.
#
#   (a) ntt-loader RAW HASH (binary COPY into fresh tables, keys, FK index,
#       attach, ANALYZE; ignore patterns applied; one transaction)
#   (b) staged baseline, one psql transaction: COPY (text) into an unlogged
#       staging table, the medium's partitions as schema.CreatePartitions makes
#       them, INSERT … SELECT DISTINCT ON into inode, INSERT … SELECT into
#       path, UPDATEs for exclusions / NON_FILE / EXCLUDED, ANALYZE
#   (c) floor: psql COPY (text) of the same rows into an UNLOGGED table
#       without indexes
# Raw files are deterministic (bench/cmd/genraw: two partitions, hardlinks,
# symlinks, junk matching the ignore patterns, hostile names), 300k and 1M
# records, cached under /var/tmp/ntt-bench with their text COPY form for
# (b) and (c) (the conversion is not timed). Each size: median of RUNS runs,
# database reset and CHECKPOINT before each run, wall time and CPU time
# (server: the cluster's processes including reaped backends and parallel
# workers; plus the client: ntt-loader or psql). CPU time is the fairer
# figure on a shared machine. Then the peak RSS of ntt-loader on a
# 10M-record file.
#
# The server is a private throwaway cluster (initdb as postgres, unix socket
# only, default settings: fsync on) removed at exit.
# Targets: (a) at least 3x faster than (b); (a) at most 6x (c); peak RSS of
# ntt-loader at 10M records <= 256 MiB.
#
# Usage: bench/load.sh            (env: RUNS=3 SIZES="300000 1000000" RSS_N=10000000)
set -euo pipefail
. "$(dirname "$0")/lib.sh"

BENCH=${NTT_BENCH_DIR:-/var/tmp/ntt-bench}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${RUNS:-3}
SIZES=${SIZES:-"300000 1000000"}
RSS_N=${RSS_N:-10000000}
HASH=00000000000000000000000000b10ad0
MROOT=/mnt/ntt/$HASH
PGBIN=${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)}

log() { printf '%s\n' "$*" >&2; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
now() { date +%s.%N; }

mkdir -p "$BENCH/bin"
log "building ntt-loader and genraw"
(cd "$ROOT" && go build -o "$BENCH/bin/ntt-loader" ./examples/ntt-loader && go build -o "$BENCH/bin/genraw" ./bench/cmd/genraw)
LOADER=$BENCH/bin/ntt-loader
IGNORE=$BENCH/load-v2-ignore.txt

raw() { echo "$BENCH/load-v2-$1.raw"; }
tsv() { echo "$BENCH/load-v2-$1.tsv"; }
prepare() {
	local n=$1 with_tsv=${2:-yes}
	if [[ ! -s $(raw "$n") || ($with_tsv == yes && ! -s $(tsv "$n")) ]]; then
		log "generating $(raw "$n") ($n records)"
		local args=(-n "$n" -hash "$HASH" -out "$(raw "$n").part" -ignore "$IGNORE")
		[[ $with_tsv == yes ]] && args+=(-tsv "$(tsv "$n")")
		"$BENCH/bin/genraw" "${args[@]}"
		mv "$(raw "$n").part" "$(raw "$n")"
	fi
	[[ -s $IGNORE ]] || "$BENCH/bin/genraw" -n 1 -out /dev/null -ignore "$IGNORE"
}

# The private cluster. initdb refuses root: run the server as postgres.
PGDIR=$(mktemp -d /tmp/ntt-lb.XXXXXX)
chmod 755 "$PGDIR"
cleanup() {
	[[ -f $PGDIR/data/postmaster.pid ]] && runuser -u postgres -- "$PGBIN/pg_ctl" stop -m immediate -D "$PGDIR/data" >/dev/null 2>&1 || true
	rm -rf "$PGDIR"
}
trap cleanup EXIT
chown postgres: "$PGDIR"
log "starting a throwaway PostgreSQL cluster in $PGDIR"
runuser -u postgres -- "$PGBIN/initdb" -D "$PGDIR/data" --auth=trust -U postgres -E UTF8 --locale=C >/dev/null
runuser -u postgres -- "$PGBIN/pg_ctl" start -w -D "$PGDIR/data" -l "$PGDIR/server.log" \
	-o "-c listen_addresses='' -c unix_socket_directories='$PGDIR'" >/dev/null
URL="postgres://postgres@/bench?host=$PGDIR&sslmode=disable"
psql_() { psql -X -q -v ON_ERROR_STOP=1 -d "$URL" "$@"; }
psql -X -q -d "postgres://postgres@/postgres?host=$PGDIR" -c 'CREATE DATABASE bench'
"$LOADER" migrate --db "$URL" >/dev/null

reset() {
	psql_ -c "DROP TABLE IF EXISTS path_p_$HASH, inode_p_$HASH, floor, stage CASCADE; DELETE FROM medium;" -c CHECKPOINT
}

run_a() {
	"$LOADER" --db "$URL" --ignore "$IGNORE" "$(raw "$1")" "$HASH" >"$PGDIR/a.out" 2>"$PGDIR/a.err" || {
		cat "$PGDIR/a.err" >&2
		return 1
	}
}

# The ignore file's patterns as one regex, for the staged load's UPDATE.
IGNORE_RE='(/\.DS_Store$)|(/Thumbs\.db$)|(/\._[^/]*$)|(/\.Trash-1000/)'
run_b() { staged_sql "$HASH" "$MROOT" "$(tsv "$1")" "$IGNORE_RE" | psql_ -1; }

run_c() { psql_ -c "\\copy floor FROM '$(tsv "$1")'"; }
prep_c() { psql_ -c "CREATE UNLOGGED TABLE floor (type char(1), dev bigint, ino bigint, nlink bigint, size bigint, mtime bigint, path bytea)"; }

# srvcpu: CPU seconds used by the cluster so far: the postmaster, its live
# children, and (cutime/cstime) the backends and workers it has reaped.
srvcpu() {
	local pm t=0 c
	pm=$(head -n 1 "$PGDIR/data/postmaster.pid")
	t=$(awk '{print $14+$15+$16+$17}' "/proc/$pm/stat")
	for c in $(pgrep -P "$pm"); do
		[[ -r /proc/$c/stat ]] && t=$((t + $(awk '{print $14+$15}' "/proc/$c/stat" 2>/dev/null || echo 0)))
	done
	echo "$t / $(getconf CLK_TCK)" | bc -l
}

timed() { # timed FUNC N [PREP] -> "wall-seconds cpu-seconds" (cpu: server + client)
	local f=$1 n=$2 prep=${3:-}
	reset
	[[ -n $prep ]] && $prep
	sleep 0.2 # let the reset's backend be reaped
	local t0 t1 s0 s1
	s0=$(srvcpu)
	t0=$(now)
	/usr/bin/time -f '%U %S' -o "$PGDIR/client.cpu" bash -c "$(declare -f "$f" psql_ run_a run_b run_c raw tsv staged_sql); $(declare -p LOADER URL IGNORE IGNORE_RE HASH MROOT BENCH PGDIR); $f $n"
	t1=$(now)
	sleep 0.2 # the client's backend exits and is reaped
	s1=$(srvcpu)
	read -r cu cs <"$PGDIR/client.cpu"
	echo "$(echo "$t1 - $t0" | bc -l) $(echo "$s1 - $s0 + $cu + $cs" | bc -l)"
}

check() { # the three loads must agree with what the catalog says
	local n=$1 what=$2
	local got
	got=$(psql_ -At -c "SELECT (SELECT count(*) FROM path WHERE medium_hash = '$HASH') || ' ' ||
		(SELECT count(*) FROM inode WHERE medium_hash = '$HASH') || ' ' ||
		(SELECT count(*) FROM path WHERE medium_hash = '$HASH' AND exclude_reason IS NOT NULL) || ' ' ||
		(SELECT count(*) FROM inode WHERE medium_hash = '$HASH' AND claimed_by = 'EXCLUDED') || ' ' ||
		(SELECT count(*) FROM inode WHERE medium_hash = '$HASH' AND claimed_by = 'NON_FILE')")
	log "  $what: paths inodes excluded-paths excluded-inodes non-files = $got"
	echo "$got"
}

printf '\n%-8s %26s %26s %26s %15s %15s\n' records "(a) ntt wall/cpu" "(b) staged wall/cpu" "(c) floor wall/cpu" "b/a wall/cpu" "a/c wall/cpu"
for n in $SIZES; do
	prepare "$n"
	# Warm the page cache for the inputs; check that (a) and (b) agree.
	cat "$(raw "$n")" "$(tsv "$n")" >/dev/null
	timed run_a "$n" >/dev/null
	ca=$(check "$n" "(a)")
	timed run_b "$n" >/dev/null
	cb=$(check "$n" "(b)")
	if [[ $ca != "$cb" ]]; then
		log "MISMATCH between (a) and (b) at $n records: $ca vs $cb"
		exit 1
	fi
	wa=() wb=() wc=() ua=() ub=() uc=()
	for ((i = 0; i < RUNS; i++)); do
		read -r w u < <(timed run_a "$n") && wa+=("$w") ua+=("$u")
		read -r w u < <(timed run_b "$n") && wb+=("$w") ub+=("$u")
		read -r w u < <(timed run_c "$n" prep_c) && wc+=("$w") uc+=("$u")
	done
	med() { printf '%s\n' "$@" | median; }
	a=$(med "${wa[@]}") b=$(med "${wb[@]}") c=$(med "${wc[@]}")
	ca=$(med "${ua[@]}") cb=$(med "${ub[@]}") cc=$(med "${uc[@]}")
	log "  wall (a): ${wa[*]}   cpu (a): ${ua[*]}"
	log "  wall (b): ${wb[*]}   cpu (b): ${ub[*]}"
	log "  wall (c): ${wc[*]}   cpu (c): ${uc[*]}"
	log "  (a) last run: $(tr -d '\n' <"$PGDIR/a.out")"
	printf '%-8s %12.2fs / %7.2fs %12.2fs / %7.2fs %12.2fs / %7.2fs %6.2fx / %5.2fx %6.2fx / %5.2fx\n' "$n" \
		"$a" "$ca" "$b" "$cb" "$c" "$cc" \
		"$(echo "$b / $a" | bc -l)" "$(echo "$cb / $ca" | bc -l)" "$(echo "$a / $c" | bc -l)" "$(echo "$ca / $cc" | bc -l)"
done
echo "targets: b/a >= 3, a/c <= 6 (cpu: server + client CPU seconds, robust against other load on the machine)"

if [[ $RSS_N -gt 0 ]]; then
	prepare "$RSS_N" no
	reset
	cat "$(raw "$RSS_N")" >/dev/null
	log "loading $RSS_N records for the peak RSS"
	/usr/bin/time -f '%M %e' -o "$PGDIR/rss" "$LOADER" --db "$URL" --ignore "$IGNORE" "$(raw "$RSS_N")" "$HASH" >"$PGDIR/a.out" 2>"$PGDIR/a.err" ||
		{ cat "$PGDIR/a.err" >&2; exit 1; }
	read -r kib secs <"$PGDIR/rss"
	log "  phases: $(tr -d '\n' <"$PGDIR/a.out")"
	printf '\n%s records: ntt-loader peak RSS %.1f MiB (target <= 256), %.1fs\n' "$RSS_N" "$(echo "$kib / 1024" | bc -l)" "$secs"
fi
