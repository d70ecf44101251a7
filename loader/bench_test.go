package loader

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"testing"

	"github.com/HRDAG/ntt/enumerate"
)

// benchRaw is a raw file of n records like bench/cmd/genraw's (set
// NTT_BENCH_RAW to use one of its files instead).
func benchRaw(b *testing.B, n int) []byte {
	if p := os.Getenv("NTT_BENCH_RAW"); p != "" {
		raw, err := os.ReadFile(p)
		if err != nil {
			b.Fatal(err)
		}
		return raw
	}
	var buf bytes.Buffer
	w := enumerate.NewWriter(&buf)
	r := enumerate.Record{Type: 'd', Dev: 1, Ino: 2, Nlink: 2, Path: []byte(rootA)}
	w.Write(&r)
	for i := 0; i < n; i++ {
		r = enumerate.Record{Type: 'f', Dev: 2049, Ino: uint64(10 + i), Nlink: 1, Size: int64(i), Mtime: 1e9,
			Path: []byte(fmt.Sprintf("%s/p1/report %04d/letter interview %05d.doc", rootA, i/50, i))}
		w.Write(&r)
	}
	w.Flush()
	return buf.Bytes()
}

// BenchmarkReadSortStream measures the Go side of a load: parse, check,
// match ignore patterns, sort, deduplicate and encode both COPY streams,
// for a floppy's worth of records and for a large medium.
func BenchmarkReadSortStream(b *testing.B) {
	ign, err := enumerate.NewMatcher([]string{`/\.DS_Store$`, `/Thumbs\.db$`, `/\._[^/]*$`, `/\.Trash-1000/`})
	if err != nil {
		b.Fatal(err)
	}
	for _, n := range []int{33, 300000} {
		b.Run(fmt.Sprintf("records=%d", n), func(b *testing.B) {
			raw := benchRaw(b, n)
			b.SetBytes(int64(len(raw)))
			b.ReportAllocs()
			for b.Loop() {
				readSortStream(b, raw, ign)
			}
		})
	}
}

func readSortStream(b *testing.B, raw []byte, ign *enumerate.Matcher) {
	var st Stats
	size := int64(len(raw))
	ps, is := newPathSorter("", &st, size), newInodeSorter("", &st, size)
	defer ps.close()
	defer is.close()
	r := &recordReader{rd: enumerate.NewReader(bytes.NewReader(raw)), ignore: newIgnoreFilter(ign), links: map[inodeKey]*pendingLinks{},
		paths: ps, inodes: is, st: &st}
	if err := r.readAll(context.Background()); err != nil {
		b.Fatal(err)
	}
	for _, f := range []func() (io.Reader, error){ps.stream, is.stream} {
		s, err := f()
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, s); err != nil {
			b.Fatal(err)
		}
	}
}
