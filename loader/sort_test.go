package loader

import (
	"context"
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/HRDAG/ntt/enumerate"
	"github.com/HRDAG/ntt/internal/pgtest"
)

// shuffledMedium is a medium whose records come in no particular order,
// with hardlinks (some links missing), exclusions and repeated paths.
func shuffledMedium(t *testing.T, n int) (raw []byte, ignore *enumerate.Matcher) {
	rng := rand.New(rand.NewPCG(7, 7))
	var recs []enumerate.Record
	for i := 0; i < n; i++ {
		dev := uint64(2049 + i%2)
		ino := uint64(10 + i/2)
		r := rec('f', dev, ino, 1, fmt.Sprintf("%s/p%d/d%03d/f%06d", rootA, dev-2048, rng.IntN(50), i))
		switch i % 17 {
		case 3: // three links, two of them in the input
			r.Nlink = 3
			l := r
			l.Path = []byte(fmt.Sprintf("%s/p%d/links/l%06d", rootA, dev-2048, i))
			recs = append(recs, l)
		case 5:
			r.Path = append(r.Path, ".tmp"...)
		case 7:
			r.Type = 'l'
		}
		recs = append(recs, r)
		if i%97 == 0 {
			recs = append(recs, r) // the same path again
		}
	}
	rng.Shuffle(len(recs), func(i, j int) { recs[i], recs[j] = recs[j], recs[i] })
	recs = append([]enumerate.Record{rec('d', 1, 2, 4, rootA)}, recs...)
	m, err := enumerate.NewMatcher([]string{`\.tmp$`})
	if err != nil {
		t.Fatal(err)
	}
	return rawOf(t, recs...), m
}

// Runs spilled to the spool and merged give exactly the rows of an
// in-memory sort, and the rows reach the tables in key order (what makes
// PostgreSQL's key builds cheap).
func TestSpilledRunsMatchInMemorySort(t *testing.T) {
	pool := pgtest.New(t)
	raw, ign := shuffledMedium(t, 5000)
	want := mustLoad(t, pool, hashA, raw, Options{Ignore: ign})
	if want.DuplicatePaths == 0 || want.ExcludedInodes == 0 || want.NonFiles == 0 {
		t.Fatalf("the medium lacks duplicates, exclusions or non-files: %+v", want)
	}

	defer func(p, i int) { pathRunBytes, inodeRunEntries = p, i }(pathRunBytes, inodeRunEntries)
	pathRunBytes, inodeRunEntries = 4096, 64
	got := mustLoad(t, pool, hashB, raw, Options{Ignore: ign, SpoolDir: t.TempDir()})
	got.Medium, got.Phases, got.Total = want.Medium, want.Phases, want.Total
	if !reflect.DeepEqual(got, want) {
		t.Errorf("stats with spilled runs:\n%+v\nin memory:\n%+v", got, want)
	}
	if a, b := pathsOf(t, pool, hashA), pathsOf(t, pool, hashB); !reflect.DeepEqual(a, b) {
		t.Errorf("paths differ between spilled and in-memory runs")
	}
	if a, b := inodesOf(t, pool, hashA), inodesOf(t, pool, hashB); !reflect.DeepEqual(a, b) {
		t.Errorf("inodes differ between spilled and in-memory runs")
	}
	for _, h := range []string{hashA, hashB} {
		var bad int64
		err := pool.QueryRow(context.Background(), fmt.Sprintf(`SELECT
			(SELECT count(*) FROM (SELECT path, lag(path) OVER (ORDER BY ctid) AS prev FROM path_p_%[1]s) s WHERE prev >= path) +
			(SELECT count(*) FROM (SELECT dev, ino, lag(dev) OVER w AS pdev, lag(ino) OVER w AS pino FROM inode_p_%[1]s WINDOW w AS (ORDER BY ctid)) s
			 WHERE (pdev, pino) >= (dev, ino))`, h)).Scan(&bad)
		if err != nil {
			t.Fatal(err)
		}
		if bad != 0 {
			t.Errorf("medium %s: %d rows out of key order in the tables", h, bad)
		}
	}
}

// A run's buffer grows with what it holds and never past its limit (or
// the one element larger than the limit), keeping what it held.
func TestRunBufferGrowsUpToItsLimit(t *testing.T) {
	const limit = 100_000
	var b []byte
	for i := 0; len(b)+7 <= limit; i++ {
		b = append(grown(b, 7, limit), "1234567"...)
		if cap(b) > limit {
			t.Fatalf("after %d bytes the buffer holds %d, past its limit %d", len(b), cap(b), limit)
		}
		if i == 0 && cap(b) > 1024 {
			t.Fatalf("a first record of 7 bytes took a buffer of %d", cap(b))
		}
	}
	if string(b[len(b)-14:]) != "12345671234567" || len(b) != limit/7*7 {
		t.Fatalf("the buffer lost bytes on the way: %d held", len(b))
	}
	big := grown(b[:0], 3*limit, limit)
	if cap(big) != 3*limit {
		t.Fatalf("a record of %d bytes got a buffer of %d", 3*limit, cap(big))
	}
}
