# bench/lib.sh — shell functions the bench scripts share. Source it.

# staged_sql HASH ROOT TSV [IGNORE_REGEX] prints the reference load the
# bench scripts compare ntt-loader with, the way existing tools load: text
# COPY into a staging table, INSERT … SELECT DISTINCT ON into the medium's
# partition pair, UPDATEs for non-files (and, with IGNORE_REGEX, for
# excluded paths and inodes), the medium row, ANALYZE. Run it with psql -1.
# ROOT is the walk root the TSV's paths start with.
staged_sql() {
	local hash=$1 root=$2 tsv=$3 ignore=${4:-} rlen=$((${#2} + 1))
	cat <<-SQL
		CREATE UNLOGGED TABLE stage (type char(1), dev bigint, ino bigint, nlink bigint, size bigint, mtime bigint, path bytea);
		\copy stage FROM '$tsv'
		CREATE TABLE inode_p_$hash PARTITION OF inode FOR VALUES IN ('$hash');
		CREATE TABLE path_p_$hash PARTITION OF path FOR VALUES IN ('$hash');
		ALTER TABLE path_p_$hash ADD CONSTRAINT path_p_${hash}_fk FOREIGN KEY (medium_hash, dev, ino)
			REFERENCES inode_p_$hash (medium_hash, dev, ino) ON DELETE CASCADE;
		CREATE INDEX path_p_${hash}_fk_idx ON path_p_$hash (medium_hash, dev, ino);
		INSERT INTO inode (medium_hash, dev, ino, fs_type, nlink, size, mtime)
			SELECT DISTINCT ON (dev, ino) '$hash', dev, ino, type, nlink, size, mtime FROM stage ORDER BY dev, ino;
		INSERT INTO path (medium_hash, dev, ino, path)
			SELECT '$hash', dev, ino, CASE WHEN path = '$root'::bytea THEN '/'::bytea ELSE substring(path FROM $rlen) END FROM stage;
	SQL
	if [[ -n $ignore ]]; then
		cat <<-SQL
			UPDATE path SET exclude_reason = 'pattern_match' WHERE medium_hash = '$hash'
				AND encode(path, 'escape') ~ '$ignore';
		SQL
	fi
	cat <<-SQL
		UPDATE inode SET copied = true, claimed_by = 'NON_FILE', status = 'success' WHERE medium_hash = '$hash' AND fs_type <> 'f';
	SQL
	if [[ -n $ignore ]]; then
		cat <<-SQL
			UPDATE inode i SET copied = true, claimed_by = 'EXCLUDED', status = 'success' WHERE medium_hash = '$hash'
				AND NOT EXISTS (SELECT 1 FROM path p WHERE p.medium_hash = '$hash' AND p.dev = i.dev AND p.ino = i.ino AND p.exclude_reason IS NULL);
		SQL
	fi
	cat <<-SQL
		INSERT INTO medium (medium_hash, enum_root, enum_done) VALUES ('$hash', '$root'::bytea, now())
			ON CONFLICT (medium_hash) DO UPDATE SET enum_root = excluded.enum_root, enum_done = excluded.enum_done;
		ANALYZE inode_p_$hash, path_p_$hash;
		DROP TABLE stage;
	SQL
}

# warm_memory touches up to 8 GiB of memory (half of what is available at
# most), untimed: cold_start calls it before every timed run of
# bench/copy.sh and bench/pipeline.sh, bench/archive.sh before its first.
# The VM these scripts were measured on hands memory that stays free for a
# while back to its host (virtio-balloon free page reporting,
# /sys/module/page_reporting), and the first use of such memory is slow:
# on 2026-12-06 a cold cat of bench/copy.sh's 2 GiB file into a file took
# 4.12 s, then 0.53 s twice back to back, 2.22 s after a minute's sleep and
# 0.54 s right after that, and the first ntt-copier run of every
# bench/copy.sh invocation took 2-3x its others (its source, the loop's
# image and the store: about 6 GiB of page cache). Freed again, this
# memory is what the next allocations take (the kernel hands reported
# pages out last).
warm_memory() {
	local kib
	kib=$(awk '/^MemAvailable:/ {print int($2 / 2)}' /proc/meminfo)
	((kib <= 8 << 20)) || kib=$((8 << 20))
	dd if=/dev/zero of=/dev/null bs="${kib}K" count=1 iflag=fullblock status=none
}

# drop writes back what is dirty and empties the page cache: a cold start.
drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }

# cold_start is where bench/copy.sh and bench/pipeline.sh start each timed
# run: memory warmed, then the page cache empty.
cold_start() {
	warm_memory
	drop
}
