// Package ntt is the root of NTT, a library (and thin example programs) that
// takes rescued disk images — floppies, CDs, hard disks imaged with GNU
// ddrescue — through a careful, resumable pipeline into a deduplicated,
// catalogued, verified archive.
//
// The pipeline and the package that owns each phase:
//
//	image.img (+ .map ddrescue mapfile)
//	  │ loopdev    attach read-only loop devices, probe partitions, mount
//	  │            read-only with a timeout, reap stale loops, undo everything
//	  ▼ /mnt/ntt/<hash>[/pN]
//	  │ enumerate  parallel walk, one record per directory entry, raw file
//	  ▼ <hash8>.raw   (0x1C-separated fields, NUL-terminated records)
//	  │ loader     per-medium partitions, bulk COPY, inode dedupe,
//	  │            exclusions, FK index, ANALYZE — all or nothing
//	  ▼ PostgreSQL: medium, inode_p_<hash>, path_p_<hash>, blobs
//	  │ copier     claim batches, read each file once, BLAKE3, store
//	  │            by-hash/AA/BB/<blake3>, hardlink tree archived/<hash>/…
//	  │ diagnose   classify errors, retry checkpoints, kernel log, ddrescue
//	  │            map, file extents vs bad sectors, medium health
//	  ▼
//	  │ archive    seal image + map + logs into <hash>.tar.zst, verify by
//	  │            read-back against a manifest, then remove the sources
//
// Each package is importable on its own. They meet only through small
// interfaces: the loader reads enumerate records, the copier takes a
// diagnose policy. What they share but is not API — schema migrations,
// medium-hash validation and naming, PostgreSQL clusters, test harnesses —
// lives under internal/. The programs under examples/ are thin: flags,
// wiring, progress display and exit codes.
//
// The invariants every package keeps: never lose or silently alter data
// (destructive operations need an explicit flag; every write is
// crash-safe); never hang on a bad disk (timeouts and stall detection);
// say exactly what failed, naming the medium, file or record.
package ntt
