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
# database reset and CHECKPOINT before each run. Then the peak RSS of
# ntt-loader on a 10M-record file.
#
# The server is a private throwaway cluster (initdb as postgres, unix socket
# only, default settings: fsync on) removed at exit.
# Targets: (a) at least 3x faster than (b); (a) at most 6x (c); peak RSS of
# ntt-loader at 10M records <= 256 MiB.
#
# Usage: bench/load.sh            (env: RUNS=3 SIZES="300000 1000000" RSS_N=10000000)
set -euo pipefail

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

run_b() {
	local n=$1 rlen=$((${#MROOT} + 1))
	psql_ -1 <<-SQL
		CREATE UNLOGGED TABLE stage (type char(1), dev bigint, ino bigint, nlink bigint, size bigint, mtime bigint, path bytea);
		\copy stage FROM '$(tsv "$n")'
		CREATE TABLE inode_p_$HASH PARTITION OF inode FOR VALUES IN ('$HASH');
		CREATE TABLE path_p_$HASH PARTITION OF path FOR VALUES IN ('$HASH');
		ALTER TABLE path_p_$HASH ADD CONSTRAINT path_p_${HASH}_fk FOREIGN KEY (medium_hash, dev, ino)
			REFERENCES inode_p_$HASH (medium_hash, dev, ino) ON DELETE CASCADE;
		CREATE INDEX path_p_${HASH}_fk_idx ON path_p_$HASH (medium_hash, dev, ino);
		INSERT INTO inode (medium_hash, dev, ino, fs_type, nlink, size, mtime)
			SELECT DISTINCT ON (dev, ino) '$HASH', dev, ino, type, nlink, size, mtime FROM stage ORDER BY dev, ino;
		INSERT INTO path (medium_hash, dev, ino, path)
			SELECT '$HASH', dev, ino, CASE WHEN path = '$MROOT'::bytea THEN '/'::bytea ELSE substring(path FROM $rlen) END FROM stage;
		UPDATE path SET exclude_reason = 'pattern_match' WHERE medium_hash = '$HASH'
			AND encode(path, 'escape') ~ '(/\.DS_Store$)|(/Thumbs\.db$)|(/\._[^/]*$)|(/\.Trash-1000/)';
		UPDATE inode SET copied = true, claimed_by = 'NON_FILE', status = 'success' WHERE medium_hash = '$HASH' AND fs_type <> 'f';
		UPDATE inode i SET copied = true, claimed_by = 'EXCLUDED', status = 'success' WHERE medium_hash = '$HASH'
			AND NOT EXISTS (SELECT 1 FROM path p WHERE p.medium_hash = '$HASH' AND p.dev = i.dev AND p.ino = i.ino AND p.exclude_reason IS NULL);
		INSERT INTO medium (medium_hash, enum_root, enum_done) VALUES ('$HASH', '$MROOT'::bytea, now())
			ON CONFLICT (medium_hash) DO UPDATE SET enum_root = excluded.enum_root, enum_done = excluded.enum_done;
		ANALYZE inode_p_$HASH, path_p_$HASH;
		DROP TABLE stage;
	SQL
}

run_c() { psql_ -c "\\copy floor FROM '$(tsv "$1")'"; }
prep_c() { psql_ -c "CREATE UNLOGGED TABLE floor (type char(1), dev bigint, ino bigint, nlink bigint, size bigint, mtime bigint, path bytea)"; }

timed() { # timed FUNC N [PREP] -> seconds
	local f=$1 n=$2 prep=${3:-}
	reset
	[[ -n $prep ]] && $prep
	local t0 t1
	t0=$(now)
	$f "$n"
	t1=$(now)
	echo "$t1 - $t0" | bc -l
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

printf '\n%-8s %9s %9s %9s %8s %8s\n' records "(a) ntt" "(b) staged" "(c) floor" "b/a" "a/c"
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
	ta=() tb=() tc=()
	for ((i = 0; i < RUNS; i++)); do
		ta+=("$(timed run_a "$n")")
		tb+=("$(timed run_b "$n")")
		tc+=("$(timed run_c "$n" prep_c)")
	done
	a=$(printf '%s\n' "${ta[@]}" | median)
	b=$(printf '%s\n' "${tb[@]}" | median)
	c=$(printf '%s\n' "${tc[@]}" | median)
	log "  runs (a): ${ta[*]}"
	log "  runs (b): ${tb[*]}"
	log "  runs (c): ${tc[*]}"
	log "  (a) phases of the last run: $(tr -d '\n' <"$PGDIR/a.out")"
	printf '%-8s %8.2fs %8.2fs %8.2fs %7.2fx %7.2fx\n' "$n" "$a" "$b" "$c" "$(echo "$b / $a" | bc -l)" "$(echo "$a / $c" | bc -l)"
done
echo "targets: b/a >= 3, a/c <= 6"

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
