#!/usr/bin/env bash
# bench/copy.sh — ntt-copier against cp -a and cat, as root.
#
# Images (deterministic, built once with mkfs.ext4 -d, cached under
# /var/tmp/ntt-bench):
#   copy-300k-v2  ~300,000 entries (3,000 directories of 99 entries): about
#                 690 MB in files whose contents mostly repeat (a pool of
#                 3,000 contents, 1 file in 20 unique), empty files,
#                 hardlinks, symlinks, fifos.
#   copy-deep-v1  the second shape (SHAPE=deep): ~264,000 files in ~24,000
#                 directories 4 to 10 levels deep, three quarters of them
#                 duplicates (a pool of contents) and most of them small
#                 (64 B - 24 KiB, a few to 256 KiB), 1 in 50 empty, some
#                 hardlinks and symlinks, plus four large files (96, 160,
#                 256 MiB, and a duplicate of the 160 MiB one): about 1.7 GB
#                 of file content. DEEP_SCALE (default 1) scales the counts
#                 (DEEP_SCALE=0.25: ~66,000 files, built and copied in a
#                 quarter of the time; the image name carries the scale).
#   copy-2g-v1    one 2 GiB file of incompressible bytes.
# Each is mounted read-only through a loop device at WORK/mnt/<hash>,
# enumerated (ntt-enum) and loaded (ntt-loader) once into a private
# PostgreSQL cluster (default settings, fsync on).
#
# 1. Trees (SHAPES, default "wide deep": both): ntt-copier (fresh store, catalog reset to pending, the copier's
#    indexes dropped) against `cp -a MOUNT DEST`, both writing to the same
#    filesystem (WORK, under /var/tmp), cold source cache (cold_start in
#    bench/lib.sh before every run: memory warmed, then drop_caches),
#    alternating, RUNS runs each, medians. cp -a leaves
#    its data in the page cache while ntt-copier makes every batch durable
#    (syncfs) before recording it, so the time of a `sync` right after cp
#    is shown too. Peak RSS of ntt-copier (GNU time's %M). Targets (issue
#    16): ntt-copier <= 0.5 x cp -a on both trees, peak RSS <= 256 MiB.
# 2. Bytes read from the source: GNU time's %I (the kernel's per-process
#    read_bytes, in 512-byte units, the counter /proc/<pid>/io shows; the
#    last /proc/<pid>/io sample of a run is printed too) against the sum of
#    the file inodes' sizes. Target: each byte read once.
# 3. One 2 GiB file: ntt-copier against `cat FILE > DEST`, cold, same
#    destination filesystem; cat+sync shown too. Target: >= 90 % of cat's
#    throughput.
# 4. Claim latency: `go test -bench 'Claim|Hold' ./copier` (1M-inode
#    medium, 100 inodes per claim) against this script's cluster: the hold
#    by row lock, which is how a worker takes a batch of small files, and
#    the claim that writes claimed_by, how it takes one of large files.
#    Target (issue 16): median <= 2 ms.
#
# Usage: sudo bench/copy.sh   (env: RUNS=3 SHAPES="wide deep" DEEP_SCALE=1
#        BATCH=1000; WORKERS=N passes --workers N, unset: the copier's
#        default; KERNEL_READ=1 passes --kernel-read (files read through
#        the mount only, not from the ext medium's block device, on
#        both trees and the 2 GiB file); SKIP_TREE=1, SKIP_BIG=1, SKIP_CLAIM=1 leave a part out;
#        BUILD_ONLY=1 builds the images and stops; PERF=1 records the whole
#        machine with perf during the copier's tree runs, to BENCH/perf-SHAPE.data;
#        PGSS=1 loads pg_stat_statements and writes the copier's 15 costliest
#        statements of the last tree run (and the time they waited on block
#        reads, track_io_timing; the inode partition's updates, HOT ones,
#        pages) to BENCH/pgss-SHAPE.txt;
#        AGAINST=REV compares two builds of the copier on the trees: the
#        ntt-copier of git revision REV (git archive REV, built apart) takes
#        cp -a's place in each alternating run, and the ratio printed is the
#        copier of this checkout, uncommitted changes included, over REV's:
#        to measure a change before taking it, edit, then AGAINST=HEAD.
#        Each run also prints the busy CPU of the whole machine and the
#        copier's own (see timed), and their medians are compared too.
#        This checkout's copier runs first in each pair, and the first often
#        runs faster (on machine F, 2026-12-07: main against itself 0.935
#        wall, 0.962 CPU over two pairs): measure the other order too (commit
#        the change on a branch, check out the base, AGAINST=that-branch);
#        LOGS=DIR keeps each run's copier log as DIR/SHAPE-RUN-{ntt,against}.log
#        and DIR/big-RUN-ntt.log)
# The load average is printed next to every run: on a shared machine, read
# the figures of runs taken under load as noisy.
set -euo pipefail

BENCH=${NTT_BENCH_DIR:-/var/tmp/ntt-bench}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/bench/lib.sh"
RUNS=${RUNS:-3}
WORKERS=${WORKERS:-}
SHAPES=${SHAPES:-wide deep}
DEEP_SCALE=${DEEP_SCALE:-1}
BATCH=${BATCH:-1000}
TREE_HASH=00000000000000000000000000c0b1e5
BIG_HASH=00000000000000000000000000c0b2e5
DEEP_HASH=00000000000000000000000000c0b3e5
TREE_IMG=$BENCH/copy-300k-v2.img
DEEP_IMG=$BENCH/copy-deep-v1-x$DEEP_SCALE.img
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
// medium, most small) or, one file in 20, its own. "deep SCALE": see deep.
// "big": one 2 GiB file.
// Everything derives from numbers: every build is the same tree.
package main

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
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

// deep stages the second shape: directories 4 to 10 levels deep (a tree
// of fan-out 3 walked depth first, cut at 24,000 x scale directories), ~11
// files in each; 3 files in 4 take their content from a pool (duplicates),
// 1 in 4 its own; 1 in 50 empty, 1 in 97 a hardlink, 1 in 89 a symlink;
// and four large files at the top (the last a duplicate of the second).
func deep(root string, scale float64) {
	maxDirs := int(24000 * scale)
	poolN := max(int(5000*scale), 50)
	size := func(i int) int {
		switch r := splitmix(uint64(i)) % 100; {
		case r == 0:
			return 24<<10 + int(splitmix(uint64(i)+1)%(232<<10))
		case r < 25:
			return 4<<10 + int(splitmix(uint64(i)+1)%(20<<10))
		}
		return 64 + int(splitmix(uint64(i)+1)%(4<<10-64))
	}
	pool := make([][]byte, poolN)
	for i := range pool {
		pool[i] = content(uint64(500000+i), size(i))
	}
	base := time.Unix(1262304000, 0)
	var dirs []string
	var walk func(dir string, depth int)
	walk = func(dir string, depth int) {
		if len(dirs) >= maxDirs || depth > 10 {
			return
		}
		must(os.MkdirAll(dir, 0o755))
		if depth >= 4 {
			dirs = append(dirs, dir)
		}
		for k := 0; k < 3; k++ {
			walk(filepath.Join(dir, fmt.Sprintf("%s%d", []string{"src", "lib", "doc"}[k], depth)), depth+1)
		}
	}
	for top := 0; len(dirs) < maxDirs; top++ {
		walk(filepath.Join(root, fmt.Sprintf("project%03d", top)), 1)
	}
	n, bytes := 0, 0
	for di, dir := range dirs {
		files := int(splitmix(uint64(di)) % 22)
		var last string
		for k := 0; k < files; k++ {
			n++
			p := filepath.Join(dir, fmt.Sprintf("f%07d.txt", n))
			switch {
			case n%97 == 0 && last != "":
				must(os.Link(last, p))
				continue
			case n%89 == 0:
				must(os.Symlink(fmt.Sprintf("../f%07d.txt", n+5), p))
				continue
			case n%50 == 0:
				must(os.WriteFile(p, nil, 0o644))
			case splitmix(uint64(n)+7)%4 != 0:
				d := pool[splitmix(uint64(n)+11)%uint64(poolN)]
				bytes += len(d)
				must(os.WriteFile(p, d, 0o644))
			default:
				d := content(uint64(1000000+n), size(n+1000000))
				bytes += len(d)
				must(os.WriteFile(p, d, 0o644))
			}
			last = p
			t := base.Add(time.Duration(n) * time.Minute)
			must(os.Chtimes(p, t, t))
		}
	}
	for i, mib := range []int{96, 160, 256, 160} {
		f, err := os.Create(filepath.Join(root, fmt.Sprintf("large-%d.bin", i)))
		must(err)
		w := bufio.NewWriterSize(f, 8<<20)
		seed := i
		if i == 3 {
			seed = 1 // the same content as large-1.bin
		}
		for k := 0; k < int(float64(mib)*max(scale, 0.25)); k++ {
			_, err := w.Write(content(uint64(900000+seed*10000+k), 1<<20))
			must(err)
			bytes += 1 << 20
		}
		must(w.Flush())
		must(f.Close())
	}
	fmt.Fprintf(os.Stderr, "staged %d files in %d directories, %d bytes in files\n", n, len(dirs), bytes)
}

func main() {
	root := os.Args[2]
	if os.Args[1] == "deep" {
		scale, err := strconv.ParseFloat(os.Args[3], 64)
		must(err)
		deep(root, scale)
		return
	}
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
	(cd "$WORK/gen" && go run gen.go "$kind" "$stage" "$DEEP_SCALE")
	rm -f "$img.tmp"
	truncate -s "$size" "$img.tmp"
	local uuid=1
	[[ $kind == big ]] && uuid=2
	[[ $kind == deep ]] && uuid=4
	E2FSPROGS_FAKE_TIME=1262304000 mkfs.ext4 -q -F -N "$inodes" -L "copy-$kind" \
		-U 6e747474-636f-7079-0000-00000000000$uuid \
		-E hash_seed=6e747474-636f-7079-0000-000000000003 -d "$stage" "$img.tmp"
	mv "$img.tmp" "$img"
	rm -rf "$stage"
}
has_shape() { [[ -z ${SKIP_TREE:-} && " $SHAPES " == *" $1 "* ]]; }
if has_shape wide && [[ ! -f $TREE_IMG ]]; then build_image tree "$TREE_IMG" 3G 400000; fi
if [[ -z ${SKIP_BIG:-} && ! -f $BIG_IMG ]]; then build_image big "$BIG_IMG" 2200M 1024; fi
if has_shape deep && [[ ! -f $DEEP_IMG ]]; then
	build_image deep "$DEEP_IMG" "$(awk -v s="$DEEP_SCALE" 'BEGIN {printf "%.0fM", 512 + 3584 * s}')" \
		"$(awk -v s="$DEEP_SCALE" 'BEGIN {printf "%.0f", 1024 + 340000 * s}')"
fi
[[ -n ${BUILD_ONLY:-} ]] && exit 0

# ---- binaries, database, mounts ------------------------------------------------
log "building ntt-copier, ntt-enum, ntt-loader"
mkdir -p "$WORK/bin"
(cd "$ROOT" && go build -o "$WORK/bin/" ./examples/ntt-copier ./examples/ntt-enum ./examples/ntt-loader)
if [[ -n ${AGAINST:-} ]]; then
	log "building ntt-copier of $AGAINST"
	mkdir -p "$WORK/against"
	git -C "$ROOT" archive "$AGAINST" | tar -x -C "$WORK/against"
	(cd "$WORK/against" && go build -o "$WORK/bin/against-ntt-copier" ./examples/ntt-copier)
fi
[[ -n ${LOGS:-} ]] && mkdir -p "$LOGS"

chmod 755 "$PGDIR"
chown postgres: "$PGDIR"
log "starting a throwaway PostgreSQL cluster in $PGDIR"
runuser -u postgres -- "$PGBIN/initdb" -D "$PGDIR/data" --auth=trust -U postgres -E UTF8 --locale=C >/dev/null
PGSS_OPT=""
[[ -n ${PGSS:-} ]] && PGSS_OPT="-c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all -c track_io_timing=on"
runuser -u postgres -- "$PGBIN/pg_ctl" start -w -D "$PGDIR/data" -l "$PGDIR/server.log" \
	-o "-c listen_addresses='' -c unix_socket_directories='$PGDIR' -c max_connections=200 $PGSS_OPT" >/dev/null
URL="postgres://postgres@/bench?host=$PGDIR&sslmode=disable"
psql -X -q -d "postgres://postgres@/postgres?host=$PGDIR" -c 'CREATE DATABASE bench'
[[ -n ${PGSS:-} ]] && psql -X -q -d "$URL" -c 'CREATE EXTENSION pg_stat_statements'
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
if has_shape wide; then mount_medium "$TREE_HASH" "$TREE_IMG"; fi
if has_shape deep; then mount_medium "$DEEP_HASH" "$DEEP_IMG"; fi
if [[ -z ${SKIP_BIG:-} ]]; then mount_medium "$BIG_HASH" "$BIG_IMG"; fi
WFLAG=()
[[ -n $WORKERS ]] && WFLAG=(--workers "$WORKERS")
KFLAG=()
[[ -n ${KERNEL_READ:-} ]] && KFLAG=(--kernel-read)

reset_medium() { # hash: files back to pending, no blobs, no copier indexes
	psql_ -c "UPDATE inode_p_$1 SET copied = false, status = 'pending', claimed_by = NULL, claimed_at = NULL,
		blobid = NULL, mime_type = NULL, processed_at = NULL, by_hash_created = NULL, error_type = NULL,
		errors = NULL, error_count = 0, damage = NULL WHERE fs_type = 'f' AND claimed_by IS DISTINCT FROM 'EXCLUDED'" \
		-c "TRUNCATE blobs" -c "DROP INDEX IF EXISTS inode_p_$1_pending_idx, inode_p_$1_claimed_idx" \
		-c "VACUUM ANALYZE inode_p_$1" -c "CHECKPOINT"
}
# timed OUT CMD…: appends "seconds read_bytes" to OUT; the command's last
# /proc/<pid>/io read_bytes sample goes to OUT.procio, its peak RSS (KiB)
# to WORK/time.rss, its CPU seconds (user + system) to WORK/time.cpu, and
# the whole machine's busy CPU seconds meanwhile (PostgreSQL and the
# kernel's writeback included; /proc/stat: user, nice, system, irq,
# softirq; not idle, iowait or a hypervisor's steal) to
# WORK/time.mcpu: on a machine bound by CPU, the work a run costs, which
# moves less from run to run than its wall time.
busy_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8}' /proc/stat; }
timed() {
	local out=$1 b0
	shift
	b0=$(busy_ticks)
	/usr/bin/time -f '%e %I %M %U %S' -o "$WORK/time.tmp" "$@" &
	local tpid=$! pid="" last=0 k v
	# The sampling costs next to nothing (bash builtins, 4 samples a
	# second): a loop of awk and sleep every 20 ms took a fifth of this
	# 2-core machine away from the program it measured.
	exec {tick}<> <(:)
	while kill -0 "$tpid" 2>/dev/null; do
		[[ -z $pid ]] && pid=$(pgrep -P "$tpid" | head -n 1 || true)
		if [[ -n $pid && -r /proc/$pid/io ]]; then
			while read -r k v; do [[ $k == read_bytes: ]] && last=$v; done <"/proc/$pid/io" 2>/dev/null || true
		fi
		read -r -t 0.25 -u "$tick" || true
	done
	exec {tick}<&-
	wait "$tpid"
	awk '{printf "%s %.0f\n", $1, $2 * 512}' "$WORK/time.tmp" >>"$out"
	awk '{print $3}' "$WORK/time.tmp" >"$WORK/time.rss"
	awk '{print $4 + $5}' "$WORK/time.tmp" >"$WORK/time.cpu"
	awk -v a="$b0" -v b="$(busy_ticks)" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.2f\n", (b - a) / hz}' >"$WORK/time.mcpu"
	echo "$last" >>"$out.procio"
}

# last FILE FIELD: field FIELD of the last line of WORK/FILE (the latest run's figures).
last() { tail -n 1 "$WORK/$1" | cut -d' ' -f"$2"; }
source_bytes() { psql_ -At -c "SELECT sum(size) FROM inode_p_$1 WHERE fs_type = 'f'"; }
source_files() { psql_ -At -c "SELECT count(*) FROM inode_p_$1 WHERE fs_type = 'f'"; }

# pgss_report prints the copier's costliest statements since the last
# pg_stat_statements_reset, then the inode partitions' updates (HOT ones
# among them) and sizes.
pgss_report() {
	psql_ -c "SELECT calls, round(total_exec_time) AS exec_ms, round(total_plan_time) AS plan_ms,
		round(max_exec_time) AS max_ms, rows, shared_blks_read AS blks_read, round(blk_read_time) AS read_ms, wal_bytes, left(regexp_replace(query, '\s+', ' ', 'g'), 110) AS query
		FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 15" \
		-c "SELECT relname, n_tup_upd, n_tup_hot_upd, pg_relation_size(relid) / 8192 AS pages
		FROM pg_stat_user_tables WHERE relname LIKE 'inode_p_%'"
}

# ---- 1 + 2: the trees ----------------------------------------------------------
# tree_run SHAPE HASH RUN BIN NAME [WRAPPER…]: one cold run of the copier BIN
# on a fresh store and a reset catalog, timed into WORK/NAME.t (its summary
# WORK/NAME-summary.json, its log WORK/NAME.log, kept in LOGS); it must
# complete.
tree_run() {
	local shape=$1 hash=$2 run=$3 bin=$4 name=$5
	shift 5
	rm -rf "$WORK/store"
	mkdir -p "$WORK/store"
	reset_medium "$hash"
	cold_start
	[[ -n ${PGSS:-} ]] && psql_ -c 'SELECT pg_stat_statements_reset()' >/dev/null
	timed "$WORK/$name.t" "$@" "$bin" --db "$URL" --medium-hash "$hash" --root "$WORK/mnt" \
		--store "$WORK/store" "${WFLAG[@]}" "${KFLAG[@]}" --batch-size "$BATCH" --worker-id bench \
		>"$WORK/$name-summary.json" 2>"$WORK/$name.log"
	[[ -n ${LOGS:-} ]] && cp "$WORK/$name.log" "$LOGS/$shape-$run-$name.log"
	grep -q '"complete":true' "$WORK/$name-summary.json" ||
		{ log "$name: ntt-copier did not complete: $(cat "$WORK/$name-summary.json")"; exit 1; }
}
copy_tree() { # shape hash image
	local shape=$1 hash=$2 img=$3 mnt=$WORK/mnt/$2 entries files bytes alloc i
	entries=$(tr -cd '\0' <"$WORK/$hash.raw" | wc -c)
	files=$(source_files "$hash")
	bytes=$(source_bytes "$hash")
	# What reading every file once costs: the blocks the file inodes occupy
	# (a 1 KB file is a 4 KiB block on the medium).
	alloc=$(find "$mnt" -xdev -type f -printf '%i %b\n' | sort -u | awk '{s += $2 * 512} END {printf "%.0f", s}')
	log "$shape tree: $entries entries, $files file inodes, $bytes bytes in files; $RUNS alternating cold runs"
	: >"$WORK/ntt.t"
	: >"$WORK/ntt.t.procio"
	: >"$WORK/ntt.rss"
	: >"$WORK/against.rss"
	: >"$WORK/ntt.cpu"
	: >"$WORK/against.cpu"
	: >"$WORK/cp.t"
	: >"$WORK/cp.t.procio"
	: >"$WORK/sync.t"
	: >"$WORK/against.t"
	for ((i = 0; i < RUNS; i++)); do
		PERFCMD=()
		[[ -n ${PERF:-} ]] && PERFCMD=(perf record -q -a -g -F 499 -o "$BENCH/perf-$shape.data" --)
		tree_run "$shape" "$hash" $((i + 1)) "$WORK/bin/ntt-copier" ntt "${PERFCMD[@]}"
		cat "$WORK/time.rss" >>"$WORK/ntt.rss"
		paste -d' ' "$WORK/time.cpu" "$WORK/time.mcpu" >>"$WORK/ntt.cpu"
		[[ -n ${PGSS:-} ]] && pgss_report >"$BENCH/pgss-$shape.txt"
		if [[ -n ${AGAINST:-} ]]; then
			tree_run "$shape" "$hash" $((i + 1)) "$WORK/bin/against-ntt-copier" against
			cat "$WORK/time.rss" >>"$WORK/against.rss"
			paste -d' ' "$WORK/time.cpu" "$WORK/time.mcpu" >>"$WORK/against.cpu"
			log "  run $((i + 1)): ntt-copier $(last ntt.t 1) s (CPU: its own $(last ntt.cpu 1) s, machine $(last ntt.cpu 2) s), ntt-copier of $AGAINST $(last against.t 1) s (CPU $(last against.cpu 1) s, machine $(last against.cpu 2) s); load average $(cut -d' ' -f1-3 /proc/loadavg)"
			continue
		fi
		rm -rf "$WORK/cpdest"
		cold_start
		timed "$WORK/cp.t" cp -a "$mnt" "$WORK/cpdest"
		s0=$(date +%s.%N)
		sync
		awk -v a="$s0" -v b="$(date +%s.%N)" 'BEGIN {print b - a}' >>"$WORK/sync.t"
		log "  run $((i + 1)): ntt-copier $(last ntt.t 1) s, cp -a $(last cp.t 1) s (+ sync $(last sync.t 1) s); load average $(cut -d' ' -f1-3 /proc/loadavg)"
	done
	# Checks: every copier run completed (tree_run); the last run's store
	# verifies.
	"$WORK/bin/ntt-copier" verify-store --db "$URL" --store "$WORK/store" >"$WORK/verify.json" 2>/dev/null ||
		{ log "verify-store failed: $(head -c 2000 "$WORK/verify.json")"; exit 1; }
	if [[ -n ${AGAINST:-} ]]; then
		awk -v n="$(cut -d' ' -f1 "$WORK/ntt.t" | median)" -v c="$(cut -d' ' -f1 "$WORK/against.t" | median)" -v a="$AGAINST" -v s="$shape" -v r="$RUNS" 'BEGIN {
			printf "copy benchmark, %s tree, median of %d alternating cold runs: ntt-copier %.2f s, ntt-copier of %s %.2f s, ratio %.3f\n", s, r, n, a, c, n / c
		}'
		awk -v n="$(cut -d' ' -f2 "$WORK/ntt.cpu" | median)" -v c="$(cut -d' ' -f2 "$WORK/against.cpu" | median)" \
			-v nn="$(cut -d' ' -f1 "$WORK/ntt.cpu" | median)" -v cc="$(cut -d' ' -f1 "$WORK/against.cpu" | median)" -v a="$AGAINST" 'BEGIN {
			printf "  busy CPU of the whole machine, median: %.2f s against %.2f s of %s, ratio %.3f (the copier alone: %.2f s against %.2f s)\n", n, c, a, n / c, nn, cc
		}'
		local b label
		for b in ntt against; do # each run's time and peak RSS
			label=ntt-copier
			[[ $b == against ]] && label="of $AGAINST"
			paste -d' ' "$WORK/$b.t" "$WORK/$b.rss" |
				awk -v l="$label" '{printf "    %s: %s s, %.0f MiB\n", l, $1, $3 / 1024}' | paste -sd' '
		done
		return
	fi

	local ntt_t cp_t sync_t ntt_r cp_r ntt_io written new rss
	ntt_t=$(cut -d' ' -f1 "$WORK/ntt.t" | median)
	cp_t=$(cut -d' ' -f1 "$WORK/cp.t" | median)
	sync_t=$(median <"$WORK/sync.t")
	ntt_r=$(cut -d' ' -f2 "$WORK/ntt.t" | median)
	cp_r=$(cut -d' ' -f2 "$WORK/cp.t" | median)
	ntt_io=$(median <"$WORK/ntt.t.procio")
	rss=$(sort -n "$WORK/ntt.rss" | tail -n 1)
	written=$(grep -o '"bytes_written":[0-9]*' "$WORK/ntt-summary.json" | cut -d: -f2)
	new=$(grep -o '"new":[0-9]*' "$WORK/ntt-summary.json" | cut -d: -f2)
	echo "copy benchmark, $shape tree: $entries entries, $files file inodes, $bytes bytes in files ($img)"
	echo "  $(nproc) cores; ntt-copier ${WFLAG[*]:-(default workers)} --batch-size $BATCH; cold source cache; median of $RUNS alternating runs"
	awk -v n="$ntt_t" -v c="$cp_t" -v s="$sync_t" 'BEGIN {
		r = n / c
		printf "  ntt-copier %7.2f s   cp -a %7.2f s (cp -a + sync %.2f s)   ratio %.2f  %s\n", n, c, c + s, r, (r <= 0.5 ? "(target <= 0.5: met)" : "(target <= 0.5: MISSED)")
		printf "  against cp -a + sync: ratio %.2f\n", n / (c + s)
	}'
	awk -v b="$bytes" -v a="$alloc" -v n="$ntt_r" -v c="$cp_r" -v p="$ntt_io" -v w="$written" -v k="$new" -v m="$rss" 'BEGIN {
		printf "  source bytes read: ntt-copier %.0f (last /proc/<pid>/io read_bytes sample %.0f), cp -a %.0f\n", n, p, c
		printf "    = %.3f x (ntt-copier) and %.3f x (cp -a) the %.0f bytes of blocks the files occupy (%.0f bytes of content)\n", n / a, c / a, a, b
		printf "  store: %.0f new blobs, %.0f bytes written (cp -a writes %.0f)\n", k, w, b
		printf "  ntt-copier peak RSS %.0f MiB  %s\n", m / 1024, (m <= 256 * 1024 ? "(target <= 256 MiB: met)" : "(target <= 256 MiB: MISSED)")
	}'
}
if has_shape wide; then copy_tree wide "$TREE_HASH" "$TREE_IMG"; fi
if has_shape deep; then copy_tree deep "$DEEP_HASH" "$DEEP_IMG"; fi

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
		cold_start
		timed "$WORK/bntt.t" "$WORK/bin/ntt-copier" --db "$URL" --medium-hash "$BIG_HASH" --root "$WORK/mnt" \
			--store "$WORK/store" "${KFLAG[@]}" --worker-id bench >/dev/null 2>"$WORK/bntt.log"
		[[ -n ${LOGS:-} ]] && cp "$WORK/bntt.log" "$LOGS/big-$((i + 1))-ntt.log"
		ncpu=$(<"$WORK/time.cpu")
		rm -f "$WORK/cat.out"
		cold_start
		timed "$WORK/cat.t" sh -c 'cat "$1" >"$2"' sh "$BIG_FILE" "$WORK/cat.out"
		s0=$(date +%s.%N)
		sync
		awk -v a="$s0" -v b="$(date +%s.%N)" 'BEGIN {print b - a}' >>"$WORK/catsync.t"
		# Where the copier's time went: its batch log's stream (copy_s) and syncfs (sync_s).
		parts=$(grep -o '"copy_s":[0-9.e-]*,"sync_s":[0-9.e-]*' "$WORK/bntt.log" | tail -n 1 | tr -d '"' | sed 's/copy_s:/stream /; s/,sync_s:/ s, syncfs /')
		log "  2 GiB run $((i + 1)): ntt-copier $(last bntt.t 1) s (${parts:-?} s; CPU $ncpu s), cat $(last cat.t 1) s (+ sync $(last catsync.t 1) s); load average $(cut -d' ' -f1-3 /proc/loadavg)"
	done
	bn=$(cut -d' ' -f1 "$WORK/bntt.t" | median)
	bc_=$(cut -d' ' -f1 "$WORK/cat.t" | median)
	bs=$(median <"$WORK/catsync.t")
	br=$(cut -d' ' -f2 "$WORK/bntt.t" | median)
	awk -v n="$bn" -v c="$bc_" -v s="$bs" -v z="$size" -v r="$br" 'BEGIN {
		tn = z / n / 1e6; tc = z / c / 1e6; ts = z / (c + s) / 1e6
		printf "single %.0f-byte file: ntt-copier %.2f s (%.0f MB/s, durable)   cat %.2f s (%.0f MB/s)   cat + sync %.2f s (%.0f MB/s)\n", z, n, tn, c, tc, c + s, ts
		printf "  throughput vs cat: %.0f %%  %s;  vs cat + sync: %.0f %%;  bytes read %.0f (%.3f x)\n", 100 * tn / tc, (tn >= 0.9 * tc ? "(target >= 90 %: met)" : "(target >= 90 %: MISSED)"), 100 * tn / ts, r, r / z
	}'

fi

# ---- 4: claim latency -----------------------------------------------------------
if [[ -z ${SKIP_CLAIM:-} ]]; then
	log "claim latency: go test -bench 'Claim|Hold' ./copier (1M inodes; a few minutes)"
	(cd "$ROOT" && NTT_TEST_DATABASE_URL="postgres://postgres@/postgres?host=$PGDIR&sslmode=disable" \
		go test -count=1 -run '^$' -bench '^Benchmark(Hold|Claim)$' -benchtime 2000x ./copier/) >"$WORK/claim.txt" 2>&1 ||
		{ cat "$WORK/claim.txt" >&2; exit 1; }
	awk '/ms-median\/claim/ {
		for (i = 1; i <= NF; i++) if ($i == "ms-median/claim") m = $(i - 1); else if ($i == "ms-p99/claim") p = $(i - 1)
		if ($1 ~ /^BenchmarkHold/) { hm = m; hp = p } else { cm = m; cp = p }
	}
	END {
		printf "claim of 100 inodes on a 1M-inode medium (held by row lock: small files): median %.2f ms, p99 %.2f ms  %s\n", hm, hp, (hm <= 2 ? "(target <= 2 ms: met)" : "(target <= 2 ms: MISSED)")
		printf "  the same claimed by claimed_by (large files): median %.2f ms, p99 %.2f ms\n", cm, cp
	}' "$WORK/claim.txt"
fi
