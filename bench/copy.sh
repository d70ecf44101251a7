#!/usr/bin/env bash
# bench/copy.sh — ntt-copier against cp -a and cat, as root.
#
# Images (deterministic, built once with mkfs.ext4 -d, cached under
# /var/tmp/ntt-bench):
#   copy-300k-v2  ~300,000 entries (3,000 directories of 99 entries): about
#                 690 MB in files whose contents mostly repeat (a pool of
#                 3,000 contents, 1 file in 20 unique), empty files,
#                 hardlinks, symlinks, fifos.
#   copy-2g-v1    one 2 GiB file of incompressible bytes.
# Each is mounted read-only through a loop device at WORK/mnt/<hash>,
# enumerated (ntt-enum) and loaded (ntt-loader) once into a private
# PostgreSQL cluster (default settings, fsync on).
#
# 1. Tree: ntt-copier (fresh store, catalog reset to pending, the copier's
#    indexes dropped) against `cp -a MOUNT DEST`, both writing to the same
#    filesystem (WORK, under /var/tmp), cold source cache (drop_caches
#    before every run), alternating, RUNS runs each, medians. cp -a leaves
#    its data in the page cache while ntt-copier makes every batch durable
#    (syncfs) before recording it, so the time of a `sync` right after cp
#    is shown too. Target: ntt-copier <= 1.0 x cp -a.
# 2. Bytes read from the source: GNU time's %I (the kernel's per-process
#    read_bytes, in 512-byte units, the counter /proc/<pid>/io shows; the
#    last /proc/<pid>/io sample of a run is printed too) against the sum of
#    the file inodes' sizes. Target: each byte read once.
# 3. One 2 GiB file: ntt-copier against `cat FILE > DEST`, cold, same
#    destination filesystem; cat+sync shown too. Target: >= 80 % of cat's
#    throughput.
# 4. Claim latency: `go test -bench Claim ./copier` (1M-inode medium, 100
#    inodes per claim) against this script's cluster. Target: median <= 5 ms.
#
# Usage: sudo bench/copy.sh   (env: RUNS=3 WORKERS=4 BATCH=1000; SKIP_TREE=1,
#        SKIP_BIG=1, SKIP_CLAIM=1 leave a part out)
set -euo pipefail

BENCH=${NTT_BENCH_DIR:-/var/tmp/ntt-bench}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${RUNS:-3}
WORKERS=${WORKERS:-4}
BATCH=${BATCH:-1000}
TREE_HASH=00000000000000000000000000c0b1e5
BIG_HASH=00000000000000000000000000c0b2e5
TREE_IMG=$BENCH/copy-300k-v2.img
BIG_IMG=$BENCH/copy-2g-v1.img
PGBIN=${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)}

[[ $(id -u) == 0 ]] || { echo "bench/copy.sh: needs root (loop devices, mounts, drop_caches)" >&2; exit 1; }
for tool in mkfs.ext4 losetup /usr/bin/time go psql; do
	command -v "$tool" >/dev/null || { echo "bench/copy.sh: $tool not found" >&2; exit 1; }
done
log() { printf '%s\n' "$*" >&2; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2}'; }
mkdir -p "$BENCH"
WORK=$(mktemp -d "$BENCH/copy-work.XXXXXX")
PGDIR=$(mktemp -d /tmp/ntt-cb.XXXXXX)
MOUNTS=()
LOOPS=()
cleanup() {
	for m in "${MOUNTS[@]}"; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
	for l in "${LOOPS[@]}"; do losetup -d "$l" 2>/dev/null || true; done
	[[ -f $PGDIR/data/postmaster.pid ]] && runuser -u postgres -- "$PGBIN/pg_ctl" stop -m immediate -D "$PGDIR/data" >/dev/null 2>&1 || true
	rm -rf "$PGDIR" "$WORK"
}
trap cleanup EXIT

# ---- images ---------------------------------------------------------------
gen() {
	mkdir -p "$WORK/gen"
	cat >"$WORK/gen/gen.go" <<'EOF'
// Stages a bench tree. "tree": 10 x 10 x 30 directories of 99 entries; a
// file's content is chosen from a pool of 3,000 contents (a few large, some
// medium, most small) or, one file in 20, its own. "big": one 2 GiB file.
// Everything derives from numbers: every build is the same tree.
package main

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func splitmix(x uint64) uint64 {
	x += 0x9E3779B97F4A7C15
	x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9
	x = (x ^ (x >> 27)) * 0x94D049BB133111EB
	return x ^ (x >> 31)
}

func content(seed uint64, size int) []byte {
	b := make([]byte, (size+7)&^7)
	for i := 0; i < len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], splitmix(seed*0x9E3779B97F4A7C15+uint64(i/8)))
	}
	return b[:size]
}

func poolSize(i int) int {
	switch {
	case i%400 == 0:
		return 512<<10 + i*7919%(256<<10)
	case i%20 == 0:
		return 16<<10 + i*131%(32<<10)
	}
	return 400 + i*97%4400
}

func main() {
	root := os.Args[2]
	if os.Args[1] == "big" {
		f, err := os.Create(filepath.Join(root, "big.bin"))
		must(err)
		w := bufio.NewWriterSize(f, 8<<20)
		for i := 0; i < 2048; i++ {
			_, err := w.Write(content(uint64(77000+i), 1<<20))
			must(err)
		}
		must(w.Flush())
		must(f.Close())
		return
	}
	const poolN = 3000
	pool := make([][]byte, poolN)
	for i := range pool {
		pool[i] = content(uint64(i), poolSize(i))
	}
	base := time.Unix(1262304000, 0)
	n, bytes := 0, 0
	for a := 0; a < 10; a++ {
		for b := 0; b < 10; b++ {
			for c := 0; c < 30; c++ {
				dir := filepath.Join(root, fmt.Sprintf("vol%02d", a), fmt.Sprintf("set%02d", b), fmt.Sprintf("box%02d", c))
				must(os.MkdirAll(dir, 0o755))
				for k := 0; k < 99; k++ {
					n++
					p := filepath.Join(dir, fmt.Sprintf("doc-%06d.dat", n))
					switch {
					case n%41 == 0 && k > 0:
						prev := filepath.Join(dir, fmt.Sprintf("doc-%06d.dat", n-1))
						if st, err := os.Lstat(prev); err == nil && st.Mode().IsRegular() {
							must(os.Link(prev, p))
							continue
						}
						must(os.WriteFile(p, nil, 0o644))
					case n%29 == 0:
						must(os.Symlink(fmt.Sprintf("../box%02d/doc-%06d.dat", (c+1)%30, n+3), p))
						continue
					case n%997 == 0:
						must(syscall.Mkfifo(p, 0o644))
						continue
					case n%10 == 0:
						must(os.WriteFile(p, nil, 0o644))
					case n%20 == 1:
						d := content(uint64(100000+n), 2000+n%6000)
						bytes += len(d)
						must(os.WriteFile(p, d, 0o644))
					default:
						d := pool[int(uint64(n)*2654435761%poolN)]
						bytes += len(d)
						must(os.WriteFile(p, d, 0o644))
					}
					t := base.Add(time.Duration(n) * time.Minute)
					must(os.Chtimes(p, t, t))
				}
			}
		}
	}
	fmt.Fprintf(os.Stderr, "staged %d entries, %d bytes in files\n", n, bytes)
}
EOF
}

build_image() { # kind image size inodes
	local kind=$1 img=$2 size=$3 inodes=$4
	log "building $img (once; takes a minute or two)…"
	gen
	local stage=$WORK/stage-$kind
	rm -rf "$stage"
	mkdir -p "$stage"
	(cd "$WORK/gen" && go run gen.go "$kind" "$stage")
	rm -f "$img.tmp"
	truncate -s "$size" "$img.tmp"
	E2FSPROGS_FAKE_TIME=1262304000 mkfs.ext4 -q -F -N "$inodes" -L "copy-$kind" \
		-U 6e747474-636f-7079-0000-00000000000$([[ $kind == big ]] && echo 2 || echo 1) \
		-E hash_seed=6e747474-636f-7079-0000-000000000003 -d "$stage" "$img.tmp"
	mv "$img.tmp" "$img"
	rm -rf "$stage"
}
[[ -f $TREE_IMG ]] || build_image tree "$TREE_IMG" 3G 400000
[[ -f $BIG_IMG ]] || build_image big "$BIG_IMG" 2200M 1024

# ---- binaries, database, mounts ------------------------------------------------
log "building ntt-copier, ntt-enum, ntt-loader"
mkdir -p "$WORK/bin"
(cd "$ROOT" && go build -o "$WORK/bin/" ./examples/ntt-copier ./examples/ntt-enum ./examples/ntt-loader)

chmod 755 "$PGDIR"
chown postgres: "$PGDIR"
log "starting a throwaway PostgreSQL cluster in $PGDIR"
runuser -u postgres -- "$PGBIN/initdb" -D "$PGDIR/data" --auth=trust -U postgres -E UTF8 --locale=C >/dev/null
runuser -u postgres -- "$PGBIN/pg_ctl" start -w -D "$PGDIR/data" -l "$PGDIR/server.log" \
	-o "-c listen_addresses='' -c unix_socket_directories='$PGDIR' -c max_connections=200" >/dev/null
URL="postgres://postgres@/bench?host=$PGDIR&sslmode=disable"
psql -X -q -d "postgres://postgres@/postgres?host=$PGDIR" -c 'CREATE DATABASE bench'
psql_() { PGOPTIONS="-c client_min_messages=warning" psql -X -q -v ON_ERROR_STOP=1 -d "$URL" "$@"; }
"$WORK/bin/ntt-loader" migrate --db "$URL" >/dev/null

mount_medium() { # hash image → mount point
	local mnt=$WORK/mnt/$1 loop
	mkdir -p "$mnt"
	loop=$(losetup -r -f --show "$2")
	LOOPS+=("$loop")
	mount -t ext4 -o ro,noload,nosuid,nodev,noexec,noatime "$loop" "$mnt"
	MOUNTS+=("$mnt")
	"$WORK/bin/ntt-enum" "$mnt" "$1" "$WORK/$1.raw" >/dev/null 2>"$WORK/enum-$1.log"
	"$WORK/bin/ntt-loader" --db "$URL" --image "$2" "$WORK/$1.raw" "$1" >/dev/null 2>"$WORK/load-$1.log"
}
mount_medium "$TREE_HASH" "$TREE_IMG"
mount_medium "$BIG_HASH" "$BIG_IMG"

drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }
reset_medium() { # hash: files back to pending, no blobs, no copier indexes
	psql_ -c "UPDATE inode_p_$1 SET copied = false, status = 'pending', claimed_by = NULL, claimed_at = NULL,
		blobid = NULL, mime_type = NULL, processed_at = NULL, by_hash_created = NULL, error_type = NULL,
		errors = NULL, error_count = 0, damage = NULL WHERE fs_type = 'f' AND claimed_by IS DISTINCT FROM 'EXCLUDED'" \
		-c "TRUNCATE blobs" -c "DROP INDEX IF EXISTS inode_p_$1_pending_idx, inode_p_$1_claimed_idx" \
		-c "VACUUM ANALYZE inode_p_$1" -c "CHECKPOINT"
}
# timed OUT CMD…: appends "seconds read_bytes" to OUT; the command's last
# /proc/<pid>/io read_bytes sample goes to OUT.procio.
timed() {
	local out=$1
	shift
	/usr/bin/time -f '%e %I' -o "$WORK/time.tmp" "$@" &
	local tpid=$! pid="" last=0
	while kill -0 "$tpid" 2>/dev/null; do
		[[ -z $pid ]] && pid=$(pgrep -P "$tpid" | head -n 1 || true)
		if [[ -n $pid && -r /proc/$pid/io ]]; then
			last=$(awk '/^read_bytes/ {print $2}' "/proc/$pid/io" 2>/dev/null || echo "$last")
		fi
		sleep 0.02
	done
	wait "$tpid"
	awk '{printf "%s %.0f\n", $1, $2 * 512}' "$WORK/time.tmp" >>"$out"
	echo "$last" >>"$out.procio"
}

source_bytes() { psql_ -At -c "SELECT sum(size) FROM inode_p_$1 WHERE fs_type = 'f'"; }
source_files() { psql_ -At -c "SELECT count(*) FROM inode_p_$1 WHERE fs_type = 'f'"; }

# ---- 1 + 2: the 300k tree ------------------------------------------------------
TREE_MNT=$WORK/mnt/$TREE_HASH
if [[ -z ${SKIP_TREE:-} ]]; then
	entries=$(tr -cd '\0' <"$WORK/$TREE_HASH.raw" | wc -c)
	files=$(source_files "$TREE_HASH")
	bytes=$(source_bytes "$TREE_HASH")
	# What reading every file once costs: the blocks the file inodes occupy
	# (a 1 KB file is a 4 KiB block on the medium).
	alloc=$(find "$TREE_MNT" -xdev -type f -printf '%i %b\n' | sort -u | awk '{s += $2 * 512} END {printf "%.0f", s}')
	log "tree: $entries entries, $files file inodes, $bytes bytes in files; $RUNS alternating cold runs"
	: >"$WORK/ntt.t"
	: >"$WORK/cp.t"
	: >"$WORK/sync.t"
	for ((i = 0; i < RUNS; i++)); do
		rm -rf "$WORK/store"
		mkdir -p "$WORK/store"
		reset_medium "$TREE_HASH"
		drop
		timed "$WORK/ntt.t" "$WORK/bin/ntt-copier" --db "$URL" --medium-hash "$TREE_HASH" --root "$WORK/mnt" \
			--store "$WORK/store" --workers "$WORKERS" --batch-size "$BATCH" --worker-id bench \
			>"$WORK/ntt-summary.json" 2>"$WORK/ntt.log"
		rm -rf "$WORK/cpdest"
		drop
		timed "$WORK/cp.t" cp -a "$TREE_MNT" "$WORK/cpdest"
		s0=$(date +%s.%N)
		sync
		awk -v a="$s0" -v b="$(date +%s.%N)" 'BEGIN {print b - a}' >>"$WORK/sync.t"
		log "  run $((i + 1)): ntt-copier $(tail -n 1 "$WORK/ntt.t" | cut -d' ' -f1) s, cp -a $(tail -n 1 "$WORK/cp.t" | cut -d' ' -f1) s (+ sync $(tail -n 1 "$WORK/sync.t") s)"
	done
	# Checks: the copier finished and its store verifies; cp -a copied as many files.
	grep -q '"complete":true' "$WORK/ntt-summary.json" || { log "ntt-copier did not complete: $(cat "$WORK/ntt-summary.json")"; exit 1; }
	"$WORK/bin/ntt-copier" verify-store --db "$URL" --store "$WORK/store" >"$WORK/verify.json" 2>/dev/null ||
		{ log "verify-store failed: $(head -c 2000 "$WORK/verify.json")"; exit 1; }

	ntt_t=$(cut -d' ' -f1 "$WORK/ntt.t" | median)
	cp_t=$(cut -d' ' -f1 "$WORK/cp.t" | median)
	sync_t=$(median <"$WORK/sync.t")
	ntt_r=$(cut -d' ' -f2 "$WORK/ntt.t" | median)
	cp_r=$(cut -d' ' -f2 "$WORK/cp.t" | median)
	ntt_io=$(median <"$WORK/ntt.t.procio")
	written=$(grep -o '"bytes_written":[0-9]*' "$WORK/ntt-summary.json" | cut -d: -f2)
	new=$(grep -o '"new":[0-9]*' "$WORK/ntt-summary.json" | cut -d: -f2)
	echo "copy benchmark: $entries entries, $files file inodes, $bytes bytes in files ($TREE_IMG)"
	echo "  $(nproc) cores; ntt-copier --workers $WORKERS --batch-size $BATCH; cold source cache; median of $RUNS alternating runs"
	awk -v n="$ntt_t" -v c="$cp_t" -v s="$sync_t" 'BEGIN {
		r = n / c
		printf "  ntt-copier %7.2f s   cp -a %7.2f s (cp -a + sync %.2f s)   ratio %.2f  %s\n", n, c, c + s, r, (r <= 1.0 ? "(target <= 1.0: met)" : "(target <= 1.0: MISSED)")
		printf "  against cp -a + sync: ratio %.2f\n", n / (c + s)
	}'
	awk -v b="$bytes" -v a="$alloc" -v n="$ntt_r" -v c="$cp_r" -v p="$ntt_io" -v w="$written" -v k="$new" 'BEGIN {
		printf "  source bytes read: ntt-copier %.0f (last /proc/<pid>/io read_bytes sample %.0f), cp -a %.0f\n", n, p, c
		printf "    = %.3f x (ntt-copier) and %.3f x (cp -a) the %.0f bytes of blocks the files occupy (%.0f bytes of content)\n", n / a, c / a, a, b
		printf "  store: %.0f new blobs, %.0f bytes written (cp -a writes %.0f)\n", k, w, b
	}'

fi

# ---- 3: one 2 GiB file ---------------------------------------------------------
BIG_FILE=$WORK/mnt/$BIG_HASH/big.bin
if [[ -z ${SKIP_BIG:-} ]]; then
	size=$(stat -c %s "$BIG_FILE")
	: >"$WORK/bntt.t"
	: >"$WORK/cat.t"
	: >"$WORK/catsync.t"
	for ((i = 0; i < RUNS; i++)); do
		rm -rf "$WORK/store" "$WORK/cat.out"
		mkdir -p "$WORK/store"
		reset_medium "$BIG_HASH"
		drop
		timed "$WORK/bntt.t" "$WORK/bin/ntt-copier" --db "$URL" --medium-hash "$BIG_HASH" --root "$WORK/mnt" \
			--store "$WORK/store" --worker-id bench >/dev/null 2>"$WORK/bntt.log"
		rm -f "$WORK/cat.out"
		drop
		timed "$WORK/cat.t" sh -c 'cat "$1" >"$2"' sh "$BIG_FILE" "$WORK/cat.out"
		s0=$(date +%s.%N)
		sync
		awk -v a="$s0" -v b="$(date +%s.%N)" 'BEGIN {print b - a}' >>"$WORK/catsync.t"
		log "  2 GiB run $((i + 1)): ntt-copier $(tail -n 1 "$WORK/bntt.t" | cut -d' ' -f1) s, cat $(tail -n 1 "$WORK/cat.t" | cut -d' ' -f1) s (+ sync $(tail -n 1 "$WORK/catsync.t") s)"
	done
	bn=$(cut -d' ' -f1 "$WORK/bntt.t" | median)
	bc_=$(cut -d' ' -f1 "$WORK/cat.t" | median)
	bs=$(median <"$WORK/catsync.t")
	br=$(cut -d' ' -f2 "$WORK/bntt.t" | median)
	awk -v n="$bn" -v c="$bc_" -v s="$bs" -v z="$size" -v r="$br" 'BEGIN {
		tn = z / n / 1e6; tc = z / c / 1e6; ts = z / (c + s) / 1e6
		printf "single %.0f-byte file: ntt-copier %.2f s (%.0f MB/s, durable)   cat %.2f s (%.0f MB/s)   cat + sync %.2f s (%.0f MB/s)\n", z, n, tn, c, tc, c + s, ts
		printf "  throughput vs cat: %.0f %%  %s;  vs cat + sync: %.0f %%;  bytes read %.0f (%.3f x)\n", 100 * tn / tc, (tn >= 0.8 * tc ? "(target >= 80 %: met)" : "(target >= 80 %: MISSED)"), 100 * tn / ts, r, r / z
	}'

fi

# ---- 4: claim latency -----------------------------------------------------------
if [[ -z ${SKIP_CLAIM:-} ]]; then
	log "claim latency: go test -bench Claim ./copier (1M inodes; a few minutes)"
	(cd "$ROOT" && NTT_TEST_DATABASE_URL="postgres://postgres@/postgres?host=$PGDIR&sslmode=disable" \
		go test -count=1 -run '^$' -bench '^BenchmarkClaim$' -benchtime 2000x ./copier/) >"$WORK/claim.txt" 2>&1 ||
		{ cat "$WORK/claim.txt" >&2; exit 1; }
	awk '/ms-median\/claim/ {
		for (i = 1; i <= NF; i++) if ($i == "ms-median/claim") m = $(i - 1); else if ($i == "ms-p99/claim") p = $(i - 1)
		printf "claim of 100 inodes on a 1M-inode medium: median %.2f ms, p99 %.2f ms  %s\n", m, p, (m <= 5 ? "(target <= 5 ms: met)" : "(target <= 5 ms: MISSED)")
	}' "$WORK/claim.txt"
fi
