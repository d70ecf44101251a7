#!/usr/bin/env bash
# bench/archive.sh — ntt-archiver seal (with read-back verification) against
# the seed's `tar -I 'zstd -T0' -cf` (write only, no verification), same zstd
# level (3, the zstd CLI default; ntt maps it to klauspost SpeedDefault).
#
# Images (cached under /var/tmp/ntt-bench, built once with mkfs.ext4 -d):
#   real1g  1 GiB ext4 image, fully allocated like a ddrescue image: Go source
#           (text), system libraries (binaries), compressed docs, random bytes
#           (photos/archives) and zeroed free space.
#   sparse3g 3 GiB ext4 image, sparse, ~1.5 GiB of the same kinds of data.
# Each run: median of 3 (wall and user+sys CPU) for tar, ntt (BLAKE3), ntt --sha256.
# The seal runs with --no-catalog (no database): the catalog step is a few
# queries and is not what this measures.
# Targets: time ratio ntt/tar <= 1.5, archive size within 3 % of tar's.
#
# Also printed, for reference: tar followed by an fsync of its output (ntt
# fsyncs its archive before calling it sealed; tar leaves it in the cache).
# Between runs: output removed, `sync`, image read into the page cache.
#
# Usage: [OUT=dir] [RUNS=n] bench/archive.sh [image-name...]
#   (default: real1g sparse3g; OUT defaults to $BENCH/out, on the same disk;
#    OUT=/dev/shm/ntt-bench-out takes the disk out of the comparison)
set -euo pipefail

BENCH=${NTT_BENCH_DIR:-/var/tmp/ntt-bench}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/bench/lib.sh"
RUNS=${RUNS:-3}
HASH_REAL=00000000000000000000000000a1c0de
HASH_SPARSE=00000000000000000000000000b2c0de

mkdir -p "$BENCH"
log() { printf '%s\n' "$*" >&2; }

# fill DIR MiB: realistic medium content of about MiB mebibytes.
fill() {
	local dir=$1 mib=$2 seed=$3
	mkdir -p "$dir"/src "$dir"/lib "$dir"/doc "$dir"/photos
	local part=$((mib / 4))
	# text: Go sources (compress ~4x)
	(cd "$(go env GOROOT)/src" && while :; do tar -cf - . 2>/dev/null || break; done) | head -c $((part << 20)) >"$dir/src/sources.tar" || true
	# binaries: system libraries (compress ~2-3x)
	find /usr/lib /usr/bin -type f -size +64k 2>/dev/null | sort | head -n 4000 |
		xargs cat 2>/dev/null | head -c $((part << 20)) >"$dir/lib/libs.bin" || true
	# documents: mostly gzip-compressed docs and text, cut to size
	(cd /usr/share && while :; do tar -cf - doc man 2>/dev/null || break; done) | head -c $((part << 20)) >"$dir/doc/docs.tar" || true
	# photos/archives: incompressible, split into 4 MiB "pictures"
	local i
	for ((i = 0; i < part / 4; i++)); do
		# openssl dies of SIGPIPE when head has its 4 MiB: not a failure
		# (pipefail would stop the script); the size is checked instead.
		{ openssl enc -aes-128-ctr -pass pass:"$seed$i" -nosalt -pbkdf2 </dev/zero 2>/dev/null || true; } |
			head -c $((4 << 20)) >"$dir/photos/img_$i.jpg"
		[[ $(stat -c %s "$dir/photos/img_$i.jpg") == $((4 << 20)) ]] || { log "openssl made no 4 MiB picture ($dir/photos/img_$i.jpg)"; exit 1; }
	done
}

prepare() {
	local name=$1
	case $name in
	real1g)
		[[ -s $BENCH/$HASH_REAL.img ]] && return
		log "building $BENCH/$HASH_REAL.img (1 GiB, fully allocated)"
		local d; d=$(mktemp -d "$BENCH/fill.XXXX")
		fill "$d" 720 real
		rm -f "$BENCH/tmp.img"
		truncate -s 1G "$BENCH/tmp.img"
		mkfs.ext4 -q -F -d "$d" "$BENCH/tmp.img"
		cp --sparse=never "$BENCH/tmp.img" "$BENCH/$HASH_REAL.img.part"
		rm -rf "$d" "$BENCH/tmp.img"
		printf '# Mapfile. Created by GNU ddrescue version 1.27\n0x00000000  +  1\n0x00000000  0x40000000  +\n' >"$BENCH/$HASH_REAL.map"
		mv "$BENCH/$HASH_REAL.img.part" "$BENCH/$HASH_REAL.img"
		;;
	sparse3g)
		[[ -s $BENCH/$HASH_SPARSE.img ]] && return
		log "building $BENCH/$HASH_SPARSE.img (3 GiB, sparse, ~1.5 GiB data)"
		local d; d=$(mktemp -d "$BENCH/fill.XXXX")
		fill "$d" 1480 sparse
		rm -f "$BENCH/$HASH_SPARSE.img.part"
		truncate -s 3G "$BENCH/$HASH_SPARSE.img.part"
		mkfs.ext4 -q -F -d "$d" "$BENCH/$HASH_SPARSE.img.part"
		rm -rf "$d"
		printf '# Mapfile. Created by GNU ddrescue version 1.27\n0x00000000  +  1\n0x00000000  0xC0000000  +\n' >"$BENCH/$HASH_SPARSE.map"
		mv "$BENCH/$HASH_SPARSE.img.part" "$BENCH/$HASH_SPARSE.img"
		;;
	*) log "unknown image $name"; exit 1 ;;
	esac
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# timed OUTFILE CMD...: run CMD, append "wall cpu" (seconds) to OUTFILE.
timed() {
	local out=$1; shift
	/usr/bin/time -f '%e %U %S' -o "$out.t" "$@" >/dev/null 2>"$out.err" || { cat "$out.err" >&2; exit 1; }
	awk '{printf "%s %.2f\n", $1, $2 + $3}' "$out.t" >>"$out"
}

bench_one() {
	local name=$1 out=$2 hash
	case $name in real1g) hash=$HASH_REAL ;; sparse3g) hash=$HASH_SPARSE ;; esac
	prepare "$name"
	local img=$BENCH/$hash.img
	rm -rf "$out"; mkdir -p "$out"
	local r=$out/.runs; rm -f "$r".*
	local i
	for ((i = 0; i < RUNS; i++)); do
		# same start for every contender: image in the page cache, no
		# write-back of an earlier run's output still going on
		rm -f "$out/tar.tar.zst" "$out/$hash.tar.zst"; sync
		((i > 0)) || warm_memory
		cat "$img" >/dev/null
		timed "$r.tar" bash -c "cd '$BENCH' && tar -I 'zstd -T0' -cf '$out/tar.tar.zst' '$hash.img' '$hash.map'"
		tar_size=$(stat -c %s "$out/tar.tar.zst")
		# for reference only: tar made as durable as ntt's archive (fsync)
		rm -f "$out/tar.tar.zst"; sync; cat "$img" >/dev/null
		timed "$r.tarsync" bash -c "cd '$BENCH' && tar -I 'zstd -T0' -cf '$out/tar.tar.zst' '$hash.img' '$hash.map' && sync '$out/tar.tar.zst'"
		rm -f "$out/tar.tar.zst"; sync; cat "$img" >/dev/null
		timed "$r.ntt" "$BIN" --no-catalog --keep-sources --images "$BENCH" --dest "$out" "$hash"
		ntt_size=$(stat -c %s "$out/$hash.tar.zst")
		rm -f "$out/$hash.tar.zst"; sync; cat "$img" >/dev/null
		timed "$r.sha" "$BIN" --no-catalog --keep-sources --sha256 --images "$BENCH" --dest "$out" "$hash"
		rm -f "$out/$hash.tar.zst"
	done
	local tw nw sw tc nc sc
	tw=$(cut -d' ' -f1 "$r.tar" | median); tc=$(cut -d' ' -f2 "$r.tar" | median)
	nw=$(cut -d' ' -f1 "$r.ntt" | median); nc=$(cut -d' ' -f2 "$r.ntt" | median)
	sw=$(cut -d' ' -f1 "$r.sha" | median); sc=$(cut -d' ' -f2 "$r.sha" | median)
	printf '%-9s %-22s tar %6.2fs  ntt %6.2fs  ratio %.2f (target <= 1.5) | ntt --sha256 %6.2fs ratio %.2f | cpu s: tar %.1f ntt %.1f sha %.1f\n' \
		"$name" "dest=$(df --output=fstype "$out" | tail -1)" "$tw" "$nw" "$(echo "$nw / $tw" | bc -l)" "$sw" "$(echo "$sw / $tw" | bc -l)" "$tc" "$nc" "$sc"
	printf '%-9s (reference: tar + fsync of its output %6.2fs, ntt/that %.2f)\n' \
		"$name" "$(cut -d' ' -f1 "$r.tarsync" | median)" "$(echo "$nw / $(cut -d' ' -f1 "$r.tarsync" | median)" | bc -l)"
	printf '%-9s size tar %d  ntt %d  ntt/tar %.4f (target within 3 %%)\n' \
		"$name" "$tar_size" "$ntt_size" "$(echo "$ntt_size / $tar_size" | bc -l)"
	log "  runs (wall,cpu): tar: $(tr ' \n' ', ' <"$r.tar") ntt: $(tr ' \n' ', ' <"$r.ntt") sha256: $(tr ' \n' ', ' <"$r.sha") load: $(cut -d' ' -f1-3 /proc/loadavg)"
	rm -rf "$out"
}

BIN=$BENCH/ntt-archiver
(cd "$ROOT" && go build -o "$BIN" ./examples/ntt-archiver)
log "machine: $(nproc) cores; $(zstd --version | head -1); $(tar --version | head -1); load: $(cut -d' ' -f1-3 /proc/loadavg)"
# OUT: where the archives go (both contenders). Default: a directory beside
# the images (the disk). Set OUT=/dev/shm/ntt-bench-out to take the disk
# out of the comparison (ntt fsyncs its archive, tar does not).
OUT=${OUT:-$BENCH/out}
for name in ${@:-real1g sparse3g}; do
	bench_one "$name" "$OUT"
done
