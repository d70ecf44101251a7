// Package imagefstest holds the checks every image reader's fuzz target
// and tests run on an opened filesystem, so that each reader is held to the
// same invariants of package imagefs: names, runs, typed read errors, and
// two walks that agree. It is for tests only.
package imagefstest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"testing"

	"github.com/HRDAG/ntt/imagefs"
)

// Bounds on the work of one check, so that a hostile input cannot make a
// fuzz run slow: entries per walk, directories entered per walk, and bytes
// read in all (each read also costs 512 against it).
const (
	MaxEntries = 5000
	MaxDirs    = 200
	ReadBudget = 4 << 20
)

var errEnough = errors.New("enough entries")

// CheckWalks walks fsys twice and returns the number of entries seen. It
// fails t when an entry other than the first (the root) has an empty name,
// ".", "..", or a name holding '/' or NUL; when its type is not in types;
// when a file's runs are empty, out of order or (unless the file is
// Encoded) longer than its size (holes are allowed: sparse files); when a
// walk fails; when reading a file fails with anything but an
// *imagefs.ReadError; or when the two walks differ.
func CheckWalks(t testing.TB, fsys imagefs.FS, opts *imagefs.Options, types string) int {
	t.Helper()
	budget := int64(ReadBudget)
	buf := make([]byte, 64<<10)
	var ids []uint64
	walk := func() {
		ids = ids[:0]
		dirs := 0
		err := imagefs.Walk(context.Background(), fsys, opts, func(p []byte, e *imagefs.Entry) error {
			if len(ids) >= MaxEntries {
				return errEnough
			}
			ids = append(ids, e.ID)
			if e.IsDir() {
				if dirs++; dirs > MaxDirs {
					return imagefs.SkipDir
				}
			}
			if len(ids) > 1 && (len(e.Name) == 0 || bytes.IndexByte(e.Name, '/') >= 0 || bytes.IndexByte(e.Name, 0) >= 0 ||
				string(e.Name) == "." || string(e.Name) == "..") {
				t.Fatalf("bad name %q at %q", e.Name, p)
			}
			if bytes.IndexByte([]byte(types), e.Type) < 0 {
				t.Fatalf("%q: type %q", p, e.Type)
			}
			if e.Type == 'f' {
				checkFile(t, fsys, p, e, buf, &budget)
			}
			return nil
		})
		if err != nil && err != errEnough {
			t.Fatalf("Walk: %v", err)
		}
	}
	walk()
	first := append([]uint64(nil), ids...)
	walk()
	if len(first) != len(ids) {
		t.Fatalf("two walks: %d and %d entries", len(first), len(ids))
	}
	for i := range ids {
		if ids[i] != first[i] {
			t.Fatalf("two walks differ at entry %d: %d, %d", i, first[i], ids[i])
		}
	}
	return len(ids)
}

// checkFile checks a file's runs and reads it within the budget.
func checkFile(t testing.TB, fsys imagefs.FS, p []byte, e *imagefs.Entry, buf []byte, budget *int64) {
	var logical int64
	for _, r := range e.Runs {
		if r.Length <= 0 || r.Logical != logical {
			t.Fatalf("%q: bad run %+v", p, r)
		}
		logical += r.Length
	}
	if logical > e.Size && !e.Encoded {
		t.Fatalf("%q: runs of %d bytes for a file of %d", p, logical, e.Size)
	}
	r, err := fsys.Open(e)
	if err != nil {
		t.Fatalf("Open %q: %v", p, err)
	}
	for off := int64(0); off < e.Size && *budget > 0; {
		n, err := r.ReadAt(buf[:min(int64(len(buf)), e.Size-off)], off)
		off += int64(n)
		*budget -= int64(n) + 512
		if err != nil && err != io.EOF {
			var re *imagefs.ReadError
			if !errors.As(err, &re) {
				t.Fatalf("read %q: not a ReadError: %v", p, err)
			}
			return
		}
		if n == 0 {
			return
		}
	}
}

// BenchWalk opens the image at path with open and walks it whole, b.N
// times, as enumeration does (every entry, no content), failing unless
// each walk sees want entries; it reports entries/s.
func BenchWalk(b *testing.B, path string, open func(r io.ReaderAt, size int64) (imagefs.FS, error), want int) {
	b.Helper()
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		fsys, err := open(f, st.Size())
		if err != nil {
			b.Fatal(err)
		}
		n := 0
		err = imagefs.Walk(context.Background(), fsys, nil, func([]byte, *imagefs.Entry) error { n++; return nil })
		if err != nil || n != want {
			b.Fatalf("walk: %d entries, want %d: %v", n, want, err)
		}
	}
	b.ReportMetric(float64(want*b.N)/b.Elapsed().Seconds(), "entries/s")
}

// ReadWalk walks fsys whole, reads every file (forks included) to its
// size, and calls visit with each path, its entry and what reading it gave
// (nil for a non-file). It fails t when Open fails, when a path is walked
// twice, or when the walk fails; a read error is the caller's to judge.
func ReadWalk(t testing.TB, fsys imagefs.FS, opts *imagefs.Options, visit func(p string, e *imagefs.Entry, data []byte, err error)) {
	t.Helper()
	seen := map[string]bool{}
	err := imagefs.Walk(context.Background(), fsys, opts, func(p []byte, e *imagefs.Entry) error {
		var data []byte
		var rerr error
		if e.Type == 'f' {
			r, err := fsys.Open(e)
			if err != nil {
				t.Fatalf("Open %q: %v", p, err)
			}
			data, rerr = io.ReadAll(io.NewSectionReader(r, 0, e.Size))
		}
		if seen[string(p)] {
			t.Errorf("%q walked twice", p)
		}
		seen[string(p)] = true
		visit(string(p), e, data, rerr)
		return nil
	})
	if err != nil {
		t.Fatalf("Walk: %v", err)
	}
}
