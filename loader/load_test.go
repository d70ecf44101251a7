package loader

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"testing"

	"github.com/HRDAG/ntt/enumerate"
	"github.com/HRDAG/ntt/internal/medium"
	"github.com/HRDAG/ntt/internal/pgtest"
	"github.com/HRDAG/ntt/internal/schema"
)

// A small medium with every kind of entry: the catalog holds what the
// design says, and the log has the runbook's dedupe line.
func TestLoadBasic(t *testing.T) { onBothLoadPaths(t, loadBasic) }

func loadBasic(t *testing.T) {
	pool := pgtest.New(t)
	raw := rawOf(t,
		rec('d', 2049, 2, 3, rootA),
		rec('f', 2049, 12, 1, rootA+"/a.txt"),
		rec('d', 2049, 13, 2, rootA+"/sub"),
		rec('l', 2049, 14, 1, rootA+"/sub/link"),
		rec('p', 2049, 15, 1, rootA+"/sub/fifo"),
		rec('c', 2049, 16, 1, rootA+"/sub/null"),
		rec('b', 2049, 17, 1, rootA+"/sub/disk"),
		rec('s', 2049, 18, 1, rootA+"/sub/sock"),
		rec('f', 2049, 19, 1, rootA+"/sub/b.bin"),
	)
	var logBuf bytes.Buffer
	st := mustLoad(t, pool, hashA, raw, Options{Logger: slog.New(slog.NewJSONHandler(&logBuf, nil)), ImagePath: "/data/fast/img/x.img"})
	if st.Records != 9 || st.Inodes != 9 || st.Paths != 9 || st.NonFiles != 7 || st.DuplicatePaths != 0 {
		t.Errorf("stats = %+v", st)
	}
	if st.Root != rootA {
		t.Errorf("root = %q", st.Root)
	}
	if !strings.Contains(logBuf.String(), `"msg":"Deduplication completed in `) {
		t.Errorf("log lacks the dedupe line:\n%s", logBuf.String())
	}
	for _, ph := range []string{PhasePrepare, PhaseCopy, PhaseDedupe, PhaseAnalyze, PhaseIndex, PhaseAttach, PhaseCommit} {
		if !strings.Contains(logBuf.String(), `"phase":"`+ph+`"`) {
			t.Errorf("log lacks phase %s", ph)
		}
	}
	ps := pathsOf(t, pool, hashA)
	want := map[string]int64{"/": 2, "/a.txt": 12, "/sub": 13, "/sub/link": 14, "/sub/fifo": 15, "/sub/null": 16,
		"/sub/disk": 17, "/sub/sock": 18, "/sub/b.bin": 19}
	if len(ps) != len(want) {
		t.Errorf("paths = %v", ps)
	}
	for p, ino := range want {
		r, ok := ps[p]
		if !ok || r.Ino != ino || r.Dev != 2049 || r.Exclude != nil {
			t.Errorf("path %q = %+v (present %v), want ino %d", p, r, ok, ino)
		}
	}
	ins := inodesOf(t, pool, hashA)
	for k, r := range ins {
		wantType := map[int64]string{2: "d", 12: "f", 13: "d", 14: "l", 15: "p", 16: "c", 17: "b", 18: "s", 19: "f"}[k[1]]
		if r.Type != wantType || r.Size != k[1]*10 || r.Mtime != 1700000000+k[1] {
			t.Errorf("inode %v = %+v", k, r)
		}
		if r.Type == "f" {
			if r.Copied || r.ClaimedBy != nil || r.Status != "pending" {
				t.Errorf("file inode %v = %+v, want pending", k, r)
			}
		} else if !r.Copied || r.claimed() != ClaimedNonFile || r.Status != "success" {
			t.Errorf("non-file inode %v = %+v, want NON_FILE", k, r)
		}
	}
	var root []byte
	var image *string
	var done bool
	if err := pool.QueryRow(context.Background(), `SELECT enum_root, image_path, enum_done IS NOT NULL FROM medium WHERE medium_hash = $1`, hashA).
		Scan(&root, &image, &done); err != nil {
		t.Fatal(err)
	}
	if string(root) != rootA || image == nil || *image != "/data/fast/img/x.img" || !done {
		t.Errorf("medium row: root %q image %v done %v", root, image, done)
	}
	if err := schema.CheckAttached(context.Background(), pool, medium.MustParse(hashA)); err != nil {
		t.Error(err)
	}
	// Both partitions were analyzed.
	var n int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_user_tables
		WHERE relname IN ($1, $2) AND (last_analyze IS NOT NULL OR analyze_count > 0)`,
		"inode_p_"+hashA, "path_p_"+hashA).Scan(&n); err != nil {
		t.Fatal(err)
	}
	var stats int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM pg_stats WHERE tablename IN ($1, $2)`,
		"inode_p_"+hashA, "path_p_"+hashA).Scan(&stats); err != nil {
		t.Fatal(err)
	}
	if stats == 0 {
		t.Errorf("no planner statistics for the partitions: ANALYZE did not run")
	}
}

// Names with the field separator, newlines, CRs, backslashes, quotes and
// invalid UTF-8 round-trip byte for byte.
func TestHostileNamesRoundTrip(t *testing.T) {
	pool := pgtest.New(t)
	names := []string{
		"sep\x1cin\x1cname", "new\nline", "car\rriage", `back\slash`, `\x41`, "inval\xff\xfeid", "quote'\"",
		"tab\there", "\x01\x02\x7f", "ünïcødé", "-leading-dash", " space ", "%s%n", "\\\\", "\x1c", "a\x1c\x1c\x1c\x1c\x1c\x1cz",
	}
	recs := []enumerate.Record{rec('d', 7, 1, 2, rootA)}
	for i, n := range names {
		recs = append(recs, rec('f', 7, uint64(100+i), 1, rootA+"/"+n))
	}
	// A directory whose name holds every byte 1..255 but '/'.
	var all []byte
	for c := 1; c < 256; c++ {
		if c != '/' {
			all = append(all, byte(c))
		}
	}
	recs = append(recs, rec('d', 7, 500, 2, rootA+"/"+string(all)), rec('f', 7, 501, 1, rootA+"/"+string(all)+"/\x1c\n"))
	st := mustLoad(t, pool, hashA, rawOf(t, recs...), Options{})
	if st.Paths != int64(len(recs)) {
		t.Fatalf("paths = %d, want %d", st.Paths, len(recs))
	}
	ps := pathsOf(t, pool, hashA)
	for _, r := range recs[1:] {
		want := strings.TrimPrefix(string(r.Path), rootA)
		got, ok := ps[want]
		if !ok {
			t.Errorf("path %q missing", want)
			continue
		}
		if !bytes.Equal(got.Path, []byte(want)) || got.Ino != int64(r.Ino) {
			t.Errorf("path %q came back as %q (ino %d)", want, got.Path, got.Ino)
		}
	}
	// The bytes are the bytes: compare in SQL too, with a bytea literal.
	var n int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM path WHERE medium_hash = $1 AND path = $2::bytea`,
		hashA, []byte("/inval\xff\xfeid")).Scan(&n); err != nil || n != 1 {
		t.Errorf("invalid UTF-8 path lookup: n=%d err=%v", n, err)
	}
}

// Hardlinks give one inode and many paths; the same inode number on two
// devices (two partitions) gives two inodes.
func TestHardlinksAndDevices(t *testing.T) { onBothLoadPaths(t, hardlinksAndDevices) }

func hardlinksAndDevices(t *testing.T) {
	pool := pgtest.New(t)
	root := "/mnt/ntt/" + hashA
	raw := rawOf(t,
		rec('d', 1, 2, 4, root),
		rec('d', 2049, 2, 3, root+"/p1"),
		rec('f', 2049, 12, 3, root+"/p1/a"),
		rec('d', 2050, 2, 3, root+"/p2"),
		rec('f', 2050, 12, 1, root+"/p2/a"), // same ino, other partition
		rec('f', 2049, 12, 3, root+"/p1/b"),
		rec('f', 2049, 13, 2, root+"/p1/c"), // second link outside the walk
		rec('f', 2049, 12, 3, root+"/p1/d"),
	)
	st := mustLoad(t, pool, hashA, raw, Options{})
	if st.Inodes != 6 || st.Paths != 8 {
		t.Errorf("stats = %+v, want 6 inodes, 8 paths", st)
	}
	ins := inodesOf(t, pool, hashA)
	if len(ins) != 6 {
		t.Fatalf("inodes = %v", ins)
	}
	for _, k := range [][2]int64{{1, 2}, {2049, 2}, {2050, 2}, {2049, 12}, {2050, 12}, {2049, 13}} {
		if _, ok := ins[k]; !ok {
			t.Errorf("inode %v missing", k)
		}
	}
	if ins[[2]int64{2049, 12}].Nlink != 3 || ins[[2]int64{2050, 12}].Nlink != 1 {
		t.Errorf("nlink wrong: %+v %+v", ins[[2]int64{2049, 12}], ins[[2]int64{2050, 12}])
	}
	ps := pathsOf(t, pool, hashA)
	for _, p := range []string{"/p1/a", "/p1/b", "/p1/d"} {
		if r := ps[p]; r.Dev != 2049 || r.Ino != 12 {
			t.Errorf("%s -> %+v", p, r)
		}
	}
	if r := ps["/p2/a"]; r.Dev != 2050 || r.Ino != 12 {
		t.Errorf("/p2/a -> %+v", r)
	}
	if r := ps["/"]; r.Dev != 1 {
		t.Errorf("/ -> %+v", r)
	}
}

// Ignore patterns mark paths; an inode whose every path is excluded is
// EXCLUDED, one with a path left is not.
func TestIgnoreAndExcluded(t *testing.T) {
	pool := pgtest.New(t)
	m, err := enumerate.LoadIgnore(strings.NewReader("# comment\n\\.DS_Store$\n/Trash/\n"))
	if err != nil {
		t.Fatal(err)
	}
	raw := rawOf(t,
		rec('d', 5, 2, 4, rootA),
		rec('f', 5, 10, 1, rootA+"/.DS_Store"),           // excluded, only path
		rec('d', 5, 11, 2, rootA+"/Trash"),               // the directory itself does not match "/Trash/"
		rec('f', 5, 12, 1, rootA+"/Trash/old.doc"),       // excluded
		rec('f', 5, 13, 2, rootA+"/Trash/hard"),          // excluded link ...
		rec('f', 5, 13, 2, rootA+"/keep/hard"),           // ... and a kept one
		rec('f', 5, 14, 2, rootA+"/Trash/both1"),         // both links excluded
		rec('f', 5, 14, 2, rootA+"/x/.DS_Store"),         //
		rec('l', 5, 15, 1, rootA+"/Trash/link"),          // excluded non-file: EXCLUDED wins
		rec('f', 5, 16, 1, rootA+"/doc.DS_Store.txt"),    // does not match
		rec('f', 5, 17, 3, rootA+"/Trash/partial-links"), // 1 of 3 links seen, excluded
	)
	st := mustLoad(t, pool, hashA, raw, Options{Ignore: m})
	if st.ExcludedPaths != 7 || st.ExcludedInodes != 5 {
		t.Errorf("stats = %+v, want 7 excluded paths, 5 excluded inodes", st)
	}
	ps := pathsOf(t, pool, hashA)
	excluded := map[string]bool{"/.DS_Store": true, "/Trash/old.doc": true, "/Trash/hard": true, "/Trash/both1": true,
		"/x/.DS_Store": true, "/Trash/link": true, "/Trash/partial-links": true}
	for p, r := range ps {
		got := r.Exclude != nil
		if got != excluded[p] || (got && *r.Exclude != ExcludePatternMatch) {
			t.Errorf("path %s exclude_reason %v, want excluded=%v", p, r.Exclude, excluded[p])
		}
	}
	ins := inodesOf(t, pool, hashA)
	wantClaim := map[int64]string{2: ClaimedNonFile, 10: ClaimedExcluded, 11: ClaimedNonFile, 12: ClaimedExcluded,
		13: "", 14: ClaimedExcluded, 15: ClaimedExcluded, 16: "", 17: ClaimedExcluded}
	for ino, want := range wantClaim {
		r := ins[[2]int64{5, ino}]
		if r.claimed() != want {
			t.Errorf("inode %d claimed_by %q, want %q", ino, r.claimed(), want)
		}
		if want == "" && (r.Copied || r.Status != "pending") {
			t.Errorf("inode %d = %+v, want pending", ino, r)
		}
		if want != "" && (!r.Copied || r.Status != "success") {
			t.Errorf("inode %d = %+v, want copied/success", ino, r)
		}
	}
}

// A path twice in the input is stored once and counted; when the second
// record names another inode, that inode (left without a path) is dropped.
func TestDuplicatePaths(t *testing.T) { onBothLoadPaths(t, duplicatePaths) }

func duplicatePaths(t *testing.T) {
	pool := pgtest.New(t)
	raw := rawOf(t,
		rec('d', 5, 2, 3, rootA),
		rec('f', 5, 10, 1, rootA+"/a"),
		rec('f', 5, 11, 1, rootA+"/b"),
		rec('f', 5, 10, 1, rootA+"/a"), // exact repeat
		rec('f', 5, 12, 1, rootA+"/b"), // same path, another inode
		rec('f', 5, 13, 1, rootA+"/c"),
		rec('f', 5, 10, 1, rootA+"/a"),
	)
	var logBuf bytes.Buffer
	st := mustLoad(t, pool, hashA, raw, Options{Logger: slog.New(slog.NewTextHandler(&logBuf, nil))})
	if st.DuplicatePaths != 3 || st.Paths != 4 || st.Inodes != 4 || st.Records != 7 {
		t.Errorf("stats = %+v, want 3 duplicates, 4 paths, 4 inodes", st)
	}
	ps := pathsOf(t, pool, hashA)
	if len(ps) != 4 || ps["/b"].Ino != 11 || ps["/a"].Ino != 10 {
		t.Errorf("paths = %+v", ps)
	}
	ins := inodesOf(t, pool, hashA)
	if _, ok := ins[[2]int64{5, 12}]; ok || len(ins) != 4 {
		t.Errorf("inodes = %+v, want 4 without the orphan 12", ins)
	}
	if !strings.Contains(logBuf.String(), "duplicate path") || !strings.Contains(logBuf.String(), `/a`) {
		t.Errorf("duplicates not logged:\n%s", logBuf.String())
	}
}

// A malformed record fails the load, naming its index and offset, and
// leaves the database exactly as it was (also in replace mode).
func TestMalformedRecordChangesNothing(t *testing.T) {
	pool := pgtest.New(t)
	mustLoad(t, pool, hashB, rawOf(t, rec('d', 5, 2, 2, "/r"), rec('f', 5, 3, 1, "/r/x")), Options{})
	good := rawOf(t, rec('d', 5, 2, 2, rootA), rec('f', 5, 3, 1, rootA+"/a"), rec('f', 5, 4, 1, rootA+"/b"),
		rec('f', 5, 5, 1, rootA+"/c"), rec('f', 5, 6, 1, rootA+"/d"))
	bad := append(append([]byte(nil), good...), []byte("f\x1c5\x1cNaN\x1c1\x1c0\x1c0\x1c"+rootA+"/e\x00")...)
	off := int64(len(good))
	bad = append(bad, rawOf(t, rec('f', 5, 7, 1, rootA+"/f"))...)

	for _, mode := range []Mode{Refuse, Replace} {
		before := dbState(t, pool)
		_, err := tryLoad(t, pool, hashA, bad, Options{Mode: mode})
		if err == nil {
			t.Fatalf("mode %v: malformed record accepted", mode)
		}
		var re *RecordError
		var ere *enumerate.RecordError
		if !errors.As(err, &re) || !errors.As(err, &ere) || re.Index != 5 || re.Offset != off || !errors.Is(err, enumerate.ErrBadNumber) {
			t.Fatalf("mode %v: error %v does not name record 5 at byte %d", mode, err, off)
		}
		if want := "record 5 at byte " + strconv.FormatInt(off, 10); !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), hashA) {
			t.Errorf("error %q lacks %q or the medium", err, want)
		}
		if after := dbState(t, pool); after != before {
			t.Errorf("mode %v: database changed by a failed load:\n%s\n---\n%s", mode, before, after)
		}
		mustLoad(t, pool, hashA, good, Options{Mode: Replace}) // second round: replace over existing rows
	}
	// A truncated last record and an empty file are named too.
	for name, raw := range map[string][]byte{"truncated": good[:len(good)-3], "empty": nil} {
		_, err := tryLoad(t, pool, hashB, raw, Options{Mode: Replace})
		var re *RecordError
		if !errors.As(err, &re) {
			t.Errorf("%s: error %v is not a RecordError", name, err)
		}
	}
}
