// Package copier copies the files of a medium (mounted, or read from its
// image) into NTT's content-addressed store, deduplicated, and records each
// one in the catalog: the seed's Phase 3 ("Copying").
//
// For every pending file inode of one medium, Run takes it in a batch
// (FOR UPDATE SKIP LOCKED, on the medium's partition only: a batch of
// small files is held by row lock while it is copied, one of large files
// claimed in claimed_by with a lease; see claim.go), opens one of its
// catalogued paths beneath the mount, checks that the opened file is the
// catalogued inode (number, type, size), reads it exactly once while
// hashing it with BLAKE3, stores it as <store>/by-hash/AA/BB/<blake3>
// unless that blob exists (deduplication), links every non-excluded path of
// the inode into <store>/archived/<hash>/…, and records the batch in one
// transaction. Any number of workers, processes and hosts may copy one
// medium into one shared store at once.
//
// # Mount or image
//
// The files are read beneath the medium's kernel mount, or, with
// Options.Image, straight from its image through package imagefs (FAT,
// ISO 9660 …, in user space: no root, no loop device, no mount). A medium
// is copied with the reader that enumerated it: the catalog's dev and ino
// are that reader's (for an image, the partition number and the
// filesystem's own id). From an image, each claimed file is found by its
// catalogued paths in an index of the medium made by one walk when the run
// starts, checked against the catalog (type, partition, id, size), and read
// from its byte runs; a batch is read in the image's byte order (each
// file's first run), so the medium is read close to sequentially. A read
// past the end of the image or through a structure that does not check out
// fails with an *ImageReadError naming the image offset; the file is never
// stored as if whole (diagpolicy classifies it at once, from the runs:
// beyond_eof, or io for a corrupt structure). With a mapfile, the runs ∩
// the unrescued ranges are the file's inode.damage (RunDamageMapper).
//
// A mounted ext2/3/4 medium is read, where it may be, straight from the
// mount's block device (extsource.go): when the filesystem is mounted at
// its root, read-only at its superblock, nothing mounted beneath it, and
// the ext reader's scan of it (internal/extfs, the one enumerate's direct
// walk uses) passes every check, the run scans it once at the start (inode
// tables and directories, about half a second for 300,000 entries cold) and
// reads each claimed file of up to 16 MiB by its extents or block map
// (small reads shared through a chunk cache), every catalogued name
// resolved in that scan as a lookup beneath the mount would resolve it (no
// symlink, the same filesystem, the catalogued inode, type and size).
// Anything it does not take exactly as the kernel would goes to the mount,
// whose errors are the ones recorded; larger files keep the mount's direct
// reads. Options.KernelOnly (ntt-copier --kernel-read) turns it off; it is
// off with a DamageMapper. Stats.FromDevice counts the files it read.
//
// # Concurrency
//
// Three things overlap, so that a cold medium of small files is read at
// its own speed rather than one request at a time:
//
//   - Read-ahead (ahead.go): each worker's batch is opened ahead of it by
//     32 opener goroutines, in the batch's order (inode number on a mount,
//     the first byte run's offset on an image), at most 128 files ahead,
//     and each opened file's first 4 MiB are asked for at once
//     (posix_fadvise WILLNEED, on the file or on the image's runs). The
//     worker then finds most of its reads done; it hashes, stores and
//     links while the medium works on the next ones.
//   - Finishing: a batch's syncfs and catalog commit run while its worker
//     claims and copies the next batch (one batch being finished per
//     worker at most).
//   - Workers: Options.Workers (default DefaultWorkers, 8) is an upper
//     bound. The run starts with 2 workers copying and moves that number
//     by hill climbing on the measured throughput (bytes read plus 32 KiB
//     per file, every 2 s): one more while it gains more than 5 %, back
//     when it loses as much, steady in between (tune.go). A worker above
//     the current number waits before claiming, holding no claim.
//     Options.FixedWorkers runs exactly Workers. Either way a run starts
//     no more workers than the medium has batches: on a floppy, a worker
//     with nothing to take costs catalog round trips and no gain.
//
// Measured on 2 shared cores (load average 7 to 21 from other work, so
// single runs, read as rough), cold caches, the second bench tree
// (bench/copy.sh SHAPES=deep: 253,553 files, 24,000 directories, three
// quarters duplicates): one worker without read-ahead 103.3 s, with it
// 71.0 s (the batch's reads took 41.0 s instead of 66.7 s); four fixed
// workers without read-ahead 51.7 s. At a quarter of that tree (63,200
// files): four fixed workers without read-ahead 35.4 s, one 41.2 s; the
// default of this design (read-ahead, finishing overlapped, 2 to 8
// workers by measurement) 21.0 s; cp -a 46.0 s. Back to back again, load 6
// to 11: this design 12.84 and 12.76 s; four fixed workers without
// read-ahead 24.61 and 31.36 s; one 29.93 and 14.32 s. At load 5 to 9, one
// run each: this design 13.29 s, one worker without read-ahead 20.09 s,
// four 16.06 s, cp -a 19.66 s (0.68: issue 16's 0.5 is not met when cp -a
// has the disk to itself; the copier's remaining time is mostly catalog
// and CPU: summed over its workers, claims 10.9 s, reading and hashing
// 27.8 s, commits 16.7 s, on 2 cores shared with PostgreSQL). Where a
// batch's time goes with one worker and no read-ahead (per 1000 small,
// mostly duplicate files: claim 63 ms, reads and hashing 463 ms, syncfs
// 32 ms, commit 56 ms) is why the finishing overlaps the next batch:
// the catalog costs one round trip to claim and one to commit per batch,
// not per file, and a duplicate costs no write (a tree link only).
//
// The parameters, measured on 2026-12-05 at a quarter of the deep tree
// (61,906 files; cold; cp -a 14.05 s), two alternating rounds, load
// average 1.6 to 13 from other work (so differences under ~10 % are
// noise): the defaults (32 openers, 128-file window, 4 MiB advice; tuner
// start 2, period 2 s) 7.66 and 7.54 s; 64 openers and a 256-file window
// 8.94 and 9.17 s; 16 and 64 8.20 and 8.33 s; 8 and 32 9.25 and 7.76 s;
// tuner start 4 8.88 and 8.22 s (5 to 7 workers, peak RSS 181 MiB
// against 92-127); tuner period 1 s 7.32 and 8.39 s. No change beat the
// defaults, which stay. The tuner settles on 1 to 4 workers there. The
// tuner's threshold (5 %) was not varied. Where the time goes (the
// defaults, perf over the whole machine): the copier's process 48 % of
// the CPU (a third of it in the kernel: opens, reads, links), PostgreSQL
// 31 % (claims and commits: summed over batches, 5.8 s claiming and
// 10.3 s committing against 17.6 s copying), idle 12 %: on 2 cores the
// deep tree is bound by CPU, the catalog's share of it included, not by
// the medium, so more reads in flight or more workers do not help; a
// cheaper catalog per file would.
//
// CPU, then (perf -a over a quarter deep tree, bench/copy.sh PERF=1): of
// the copier's samples, opening source files by their whole path took
// 15 % (the kernel resolving up to 10 components per file) and making
// tree directories by walking from the root (mkdir, stat, open per
// component) about 7 %. A source file is now opened by its last name in
// its directory, kept open (dircache.go), and a tree directory is made
// from its nearest existing ancestor: 8.18 -> 7.42 s on that tree (3 runs
// each, load 1.8-2.6); the full deep tree 32.74 s against cp -a 59.47 s
// (0.55, from 0.57-0.59). What is left is mostly the kernel's own work,
// which cp -a does too (a cold lookup per file, a link per path, a mkdir
// per store directory, a creat per new blob: 60 % of the copier's
// samples), and PostgreSQL, a third of the machine: per file a claim and
// a commit each rewrite the inode row and its index entries (about 40 us).
// The claim's share was measured apart (BenchmarkClaim's 1M rows, two
// partitions in one database, alternating): without the claimed index
// 6 % faster, with it dropped and fillfactor 80 12 %, fillfactor 50 27 %
// (HOT updates need room on the page for a claim's 100 new versions). A
// fillfactor that low doubles every medium's inode table for the claim's
// sake, and the claimed index spares the releases of a worker's claims
// and the lease checks a scan, so neither was taken. What was taken: a
// claim's commit does not wait for the WAL (it promises nothing durable,
// see claimBatch), 15-16 % off a claim on a durable cluster (2.34 -> 1.97
// and 2.92 -> 2.47 ms, interleaved).
// Measured again on 2026-12-06 with the commit's cost counted too (1M
// rows, 2000 claims of 100 each followed by their commit): fillfactor 50
// without the claimed index made 90 % of claims HOT, the claim 1.8-2.8 ms
// against 2.4-4.1 ms, but the commit that follows 1.7-2.8 ms against
// 1.3-2.2 ms; the pair 3.6-5.6 ms against 3.7-6.3 ms (three and four
// repeats, alternating, on a VM whose repeats moved 40 %): no clear gain
// for a quarter more table. Nor on a freshly loaded medium, the
// pipeline's case, where a table with no free space sends every rewritten
// row to a new page (2026-12-07, machine F: the loader's inode table at
// fillfactor 50, bench/pipeline.sh SKIP_REF=1, three pairs alternating):
// copy phase 12.90, 15.07 and 17.62 s against 14.11, 14.32 and 15.80 s at
// 100 (the table after the copy 150 MB against 159 MB). Where a claim's
// time goes (2026-12-07, machine E, BenchmarkClaim's medium, variants of
// claimSQL alternating 2000 times each on one connection, then reverted):
// with its row locks 1.83 ms, without FOR UPDATE SKIP LOCKED 1.76 ms;
// without the path join 1.84 against 1.90 ms; only finding the rows
// (peekSQL, no update) 0.91 ms against 1.89 ms. Half finding, half
// rewriting the rows; neither the lock nor the join is worth a change of
// design.
//
// bench/copy.sh PGSS=1 lists the copier's costliest statements. On the
// deep tree it showed the commit's "is any blob quarantined" check
// reading all of blobs at every batch (2.1 s of 25.7 s; see refusedSQL),
// now one index page: deep tree 0.48-0.56 of cp -a before, 0.40 after
// (median of 3, a different machine, so the fix is not all of it). On
// the wide tree (2026-12-06, perf -a) PostgreSQL is 43 % of the machine,
// the copier 41 %: claims 53 ms and commits 41 ms per 1000 files under
// that load, a quarter of it index insertion; per file a claim and a
// commit each rewrite the row, which the runbook's monitoring query
// (claimed_by on the inode row) requires.
//
// Two more changes were measured on 2026-12-06 20:00-21:00 UTC, on a
// machine whose system calls are dear (vmstat: 44-52 % of the CPU in the
// kernel during the wide copy), and not taken:
//   - Claims and commits both HOT (no pending or claimed index, the claim
//     scanning the primary key from its cursor, fillfactor 50). Alone, on
//     300k rows (psql, claim then commit of 1000 rows, 7 alternating
//     repeats) they cost 16.9-25.5 ms per 1000 against 22.6-35.7 ms. On the
//     wide bench tree the copy was no faster (20.92 and 22.76 s against
//     18.80-22.78 s): with no index of pending rows, a worker that reaches
//     the end of the medium looks for retries by walking every copied row
//     (claims of up to 1.3 s; 21.9 and 26.1 s of claiming in all against
//     17.9 s) and the orphan check reads the whole table (2.4 and 3.7 s). A
//     medium resumed 90 % done would pay that walk on its first claim. The
//     pending index needs copied in its predicate, which is what keeps the
//     commit from being HOT.
//   - Small files (up to 32 KiB) read whole by their opener instead of
//     advised and read by the worker, one system call less per file: 22.43,
//     24.01, 27.30 and 21.92 s against 18.80, 22.78, 18.86 and 22.02 s
//     (wide tree, alternating): slower. Not profiled; a likely cause is that
//     a read that blocks holds its opener's thread, where the advice
//     returns at once and lets the opener go on to the next file.
//   - The tuner starting at 5 workers instead of 2 (its log shows 2 to 6
//     taking 8 s of a 20 s copy): 23.53, 20.98, 22.09 and 22.31 s against
//     20.78 and 26.67 s, alternating: no gain beyond the noise.
//   - At most 4 workers by default instead of 8 (2026-12-07, machine E,
//     deep tree, bench/copy.sh AGAINST, 3 pairs in each order): 25.60,
//     26.72, 30.26 s against 29.45, 30.38, 32.05 s with 4 running first;
//     28.09, 31.52, 37.99 s against 34.89, 28.94, 31.00 s with 8 running
//     first. Medians of the six, 29.2 against 30.7 s: within the noise,
//     and the first of a pair tends to be the faster, so a bound a disk-
//     bound machine may need was not lowered. Again on machine F
//     (2026-12-07, wide tree, four pairs, 4 running first, bench/copy.sh
//     AGAINST=HEAD): 0.957 of the wall time and 0.932 of the machine's
//     busy CPU, where main against itself in that order gave 0.935 and
//     0.962.
//
// Where the time goes on a machine where both trees miss 0.5 (machine E
// of the README, 2026-12-07; bench/copy.sh PERF=1 SHAPES=deep, one run,
// perf -a): the copier's process 41.5 % of the samples (27.2 % in the
// kernel), PostgreSQL 24 %, kernel workers (writeback) 10 %, idle 22.6 %;
// vmstat during a run without perf: 37 % user, 46 % system, 5 % idle,
// 12 % waiting. Inside the copier (inclusive): the openers (openat2 by
// last name, fstat, fadvise) 11.7 %, reads and closes 3 %, new blobs
// written 8.1 %, tree links 7.0 %, tree directories 2.7 %, by-hash
// directories 2.1 %. bench/copy.sh PGSS=1 at a quarter of the deep tree:
// claims 68 us a row under that load (4249 ms for 62,499 rows; 792 bytes
// of WAL a row, mostly full-page images after the bench's CHECKPOINT),
// commits 46 us a row. The source side, a sixth of the machine, is the one
// part cp -a does not also pay for in kind: reading an ext medium's files
// by their extents straight from the image (the device the mount reads),
// as enumerate's direct scan already reads its inode tables and
// directories, would leave one large read per run of neighbouring files
// instead of five system calls and a cold inode per file. What it could
// gain at most, roughly: with every source file's pages, inode and dentry
// in memory before the run (all read once by cat, untimed; a one-off edit
// of bench/copy.sh, two runs of the same build), the deep tree took 21.68
// and 23.32 s against 24.60-30.22 s cold: a fifth, which would bring E's
// 0.62 near 0.5, not well under it. Built since (extsource.go, with the
// identity checks done in the scanned tree) and measured on machine F of
// the README (2026-12-07, bench/copy.sh RUNS=3 SKIP_BIG=1 SKIP_CLAIM=1
// AGAINST=HEAD, this checkout first in each pair): wide tree 23.91, 23.86,
// 19.96 s against 22.66, 25.34, 27.02 s (medians 0.94); deep tree 27.05,
// 31.62, 25.63 s against 33.36, 27.83, 36.26 s (0.81). In the other order
// (the commit before it run from a worktree with AGAINST set to this one,
// so the device reads second): wide 24.88, 27.73, 19.20 s against 20.42,
// 29.04, 19.22 s, deep 25.78, 29.63, 24.95 s against 26.78, 33.32,
// 26.51 s. Medians of the six: deep 26.4 against 30.6 s (0.86), wide 23.9
// against 24.0 s (no gain beyond the noise). The batches' copy
// time summed over the workers fell more than the wall time: 25-40 s
// against 48-70 s (wide), 44-49 s against 64-67 s (deep); the tuner then
// settles on fewer workers (2 to 4 against up to 8), the claims and
// commits, on the same 2 cores, being what is left. The scan is kept for
// the run, about 60 bytes an entry (a filesystem of more than 2M inodes in
// use is read through its mount); it took the deep tree's peak RSS from
// 200 to 252 MiB, of which most was not the scan: with 16 MiB of read
// buffer per worker counted as live (GODEBUG=gctrace=1: a live heap of
// 140-165 MB during the copy, the scan's share about 20 MB), the garbage
// collector lets the heap grow to twice that. A buffer grown by doubling
// with the files read instead (a throwaway change) took the live heap to
// about 50 MB and the peak RSS to 130 MiB in one run, but collected twice
// as often, and AGAINST=HEAD gave 30.10, 23.47, 28.67 s against 25.85,
// 24.00, 23.95 s on the deep tree: not taken while the RSS bound holds.
// It stopped holding (2026-12-07, machine F: 240-261 MiB on the deep tree),
// so the workers' buffers moved out of the Go heap (mem.go: anonymous
// mappings, resident only where a read touched them). bench/copy.sh
// RUNS=3 AGAINST=HEAD, this change first, then the other order (the
// commit before it from a worktree, AGAINST set to the change): peak RSS
// 84-99 MiB against 211-224 MiB (wide), 128-143 against 240-262 MiB
// (deep); medians of six, wide 16.46 against 17.63 s (0.93, 3 pairs of
// 6 won), deep 22.88 against 26.97 s (0.85, 5 of 6).
//
// System calls, counted (2026-12-07, machine F, strace -c -f wrapped
// around the copier of one wide-tree run of bench/copy.sh): for 279,809
// files, 534,298 preads (the inode read again and the content, one each
// per file), 303,257 links, 254,367 advices,
// 287,373 nanosleeps of the Go scheduler, 35,702 futex waits. On F a
// system call is dear (perf -a: 12 % of all samples were the hypervisor's
// interrupt enable on return from the copier's system calls). So the
// device's small reads go through a chunk cache (chunks.go): 128 KiB
// chunks, 64 of them kept, read with one pread each, advised once each.
// Measured with bench/copy.sh RUNS=3 SKIP_BIG=1 SKIP_CLAIM=1, in both
// orders (AGAINST=HEAD with the change uncommitted, then the base's
// checkout with AGAINST set to the change), medians of six: wide tree
// 17.50 against 20.92 s (0.84), deep tree 23.77 against 25.77 s (0.92);
// 10 of the 12 pairs went to the chunks. Measured and not taken in the
// same hour: one syncfs shared by the batches that finish together (group
// commit in Store.Sync): wide 20.91 against 19.89 s, deep 26.30 against
// 24.19 s (medians of 3, the change first): the batches' summed sync time
// did not fall (7.4-14.3 s against 5.6-13.8 s); the kernel already
// serialises them. Nor a floor of 2 workers for the tuner, whose limit
// fell to 1 for a period in every run of bench/copy.sh RUNS=3 that hour
// (AGAINST=HEAD, the floor first, load 3 to 4): wide 16.01, 16.94,
// 16.41 s against 15.95, 17.11, 16.20 s; deep 20.50, 26.16, 24.40 s
// against 24.41, 22.59, 28.62 s: medians 1.01 and 1.00.
//
// The run's serial ends (2026-12-07, machine F, the wide bench tree on a
// kept cluster, the phases read from the log's timestamps): before the
// first claim, the device scan 0.40 s, the copier's indexes 0.47 s, the
// worker lock and orphans 0.03 s, the count of files left 0.21 s; after
// the last batch, 0.85 s for the claim that goes back to the start of the
// medium (its pending index then a dead entry per copied row, each checked
// against the heap), 0.21 s counting the files left, 0.12-0.19 s asking
// whether any is failed, 0.2 s before the tree's listing's first row, then
// 0.3 s of directories and symlinks and the sync: about 2.3 s of a 19 s
// run with one core mostly idle. Now the scan runs while the catalog is
// prepared (extsource.go), the claim went back to the start only when
// something was known to be pending behind it (nextBatch; since batches of
// small files are held, not claimed, it goes back once after every pass
// that copied anything, at no measurable cost), one pass counts the
// files left and the failed ones, and the tree's listing is sent before
// that count (finish). The end phase (last batch to tree completed) took
// 1.14, 1.69 and 1.43 s against 2.45, 2.45 and 1.88 s, alternating; the
// start phase moved less than the noise of that hour (runs of the same
// build 20-27 s apart). Measured and not taken in that hour: no advice
// for the device's runs (the kernel's readahead on the device only),
// 22.16-24.77 s against 23.25-24.51 s, nothing clear; fixed numbers of
// workers against the tuner, whose limit wanders on 2 cores (2 to 6 and
// back to 1 in one run): fixed 3 23.5 s (median of 4) against the
// tuner's 25.0 s (4; 22.1-27.1 s in 8 runs), fixed 2, 4 and 5 20.6-27.7 s
// (2 to 5 runs each): within that hour's noise, so the tuner stays.
//
// One large file gains nothing from any of this: it is one worker's
// stream (worker.go) and its syncfs. On 2026-12-05 (load average 1 to 2),
// the copier before the read-ahead and the tuner (7a5990b, one worker)
// copied a 2 GiB file in 3.47-3.62 s and this design in 3.58-3.72 s,
// alternating, 3 runs each: no regression. What moved between sessions
// is the disk: that day a cold cat took 0.6-0.9 s, its sync 1.1-2.0 s;
// the copier's stream 1.2-2.3 s (read, BLAKE3 and write overlapped) and
// its syncfs 1.4-2.0 s. A durable copy costs at least the write of its
// bytes, so against cat without sync (issue 16's 90 %) it is bound by
// the disk's write speed, not by the copier. Measured again on 2026-12-06
// 18:00 UTC with the split printed by bench/copy.sh: cat 0.63-0.80 s
// (about 3 GB/s, into the page cache), its sync 1.2-1.8 s; the copier
// 3.51-4.05 s, of which stream 2.03 s and syncfs 1.30-1.46 s. The syncfs
// alone takes longer than cat: 90 % of cat cannot be had durably on this
// disk. The stream is three copies of every byte on 2 cores (kernel to
// user, BLAKE3 at 3.5 GB/s, user to page cache), about 2 s of CPU. Since
// then a file larger than 16 MiB is read with O_DIRECT (direct.go), one
// copy less: 10 % less CPU, the same wall time on this disk.
//
// # Invariants
//
//   - A blob is named by the BLAKE3 of its content, written once, never
//     modified, mode 0644 whatever the umask, and durable (one syncfs per
//     batch) before the catalog transaction that names it commits. A crash
//     between store and catalog leaves a blob that the retry reuses, never a
//     catalog row naming a missing blob; no temporary file is left (O_TMPFILE).
//   - A blob that fails verification (VerifyStore) is moved to
//     <store>/quarantine, never deleted, and marked in blobs; the inodes
//     naming it go back to pending. No inode is recorded as copied to a
//     marked blob by deduplication: the copy that writes the blob again
//     clears the mark (see verify.go).
//   - A source path is opened with openat2 RESOLVE_BENEATH |
//     RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV and O_NOFOLLOW, or, read from
//     an ext mount's device, resolved in the device's own tree with the
//     same rules and read from that filesystem's blocks only: nothing
//     outside the medium's mount is ever read, whatever the catalog says. A
//     multi-partition medium's paths (/p2/…) resolve beneath the partition's
//     own mount <root>/<hash>/p2. Catalog paths with an empty, "." or ".."
//     component are refused before use, on the source and in the tree; the
//     tree is written beneath its root without following symlinks.
//   - Inode states stay those of the design (pending, claimed, copied,
//     auto-skipped, gave up), so the seed's monitoring query (done /
//     pending / claimed) adds up during a run; a batch held by row lock
//     (see claim.go) counts as pending while it is copied, one claimed as
//     claimed. Only file inodes (fs_type 'f') with copied = false are ever
//     claimed or held: NON_FILE and EXCLUDED rows never.
//   - An inode is copied at most once per claim or hold: both are
//     exclusive, and a batch's catalog updates apply only to rows the
//     worker still holds (a hold taken again after a lost connection
//     leaves out the rows whose record did commit).
//
// # Claims and dead workers
//
// A batch held by row lock comes back by itself the moment its process or
// connection is gone (PostgreSQL ends the transaction). For claims:
// each process holds a PostgreSQL session advisory lock named after
// (medium, worker id) while it runs. A claim whose worker's lock is not held
// (process killed, connection lost) is released by the next worker that
// starts or runs out of work; a claim not renewed within the lease (default
// 5 minutes, renewed every lease/3) may be taken by anyone, for a host that
// vanished while its session lingers. Two processes cannot share a worker id.
// A process whose lock session is lost (a dropped connection) notices within
// seconds and takes its lock again (waiting out a catalog outage), or stops
// with ErrLockLost.
//
// # Failure model
//
// A file that cannot be read is not an error of the run: the Policy
// (package diagnose, through copier/diagpolicy) decides to retry it later,
// skip it (DIAGNOSTIC_SKIP:BEYOND_EOF, logged as "SKIPPED ino=X reason=…"
// after a "DIAGNOSTIC CHECKPOINT") or give up (failed_retryable or
// failed_permanent), and the batch records the error (the last 10 and a
// count), diagnostic_event rows and medium.problems flags
// (beyond_eof_detected, high_error_rate). Path problems (unclean path,
// symlink or mount in the way, not the catalogued file) are given up at once
// as failed_retryable; ResetFailed puts such rows back once the cause is
// fixed. Errors of the run itself (catalog, store, a medium that is not
// mounted) end Run with an error naming the medium; claims are then
// released. A worker stuck in one file longer than the stall timeout ends
// the run with ErrStalled, recorded as the problem copy_stalled. A failing
// store (full, read-only) is not the medium's fault: Run stops with a
// *StoreError and marks no inode failed. Nor is a dead source (its mount
// gone or unreadable, its device or image smaller than when the run
// started, as a SourceChecker policy sees it): the first failure that shows
// it ends the run with ErrSourceLost, recorded as the problem source_lost;
// its files stay retryable, and no failed_permanent decision is taken while
// the source is unhealthy. A catalog outage (restart, lost connection) is
// waited out for Options.DBRetry: the files being read are kept, the worker
// lock is taken again, and only a longer outage ends the run (wrapping
// dbconn.ErrUnavailable). Cancelling ctx finishes the files being read,
// commits, and releases the rest.
//
// The package never prints; it logs through Options.Logger and reports
// progress through Options.Progress.
package copier
