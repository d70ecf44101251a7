// Command imgread reads the content of every regular file of a medium
// through package imagefs, in image-offset order (as the copier's image
// source reads a batch), and prints the bytes read, the seconds it took and
// the reading throughput in MB/s (file bytes over the time spent reading
// them; the walk that finds the files is timed apart, as "listing"). It is bench/imagefs.sh's measure of the readers'
// content path, without the copier's hashing, store or catalog.
//
// Usage: imgread IMAGE MEDIUM_HASH
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"sort"
	"time"

	"github.com/HRDAG/ntt/imagefs"
	_ "github.com/HRDAG/ntt/imagefs/all"
)

type file struct {
	vol   *imagefs.Volume
	entry *imagefs.Entry
	first int64
}

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: imgread IMAGE MEDIUM_HASH")
		os.Exit(2)
	}
	if err := run(context.Background(), os.Args[1], os.Args[2]); err != nil {
		fmt.Fprintln(os.Stderr, "imgread:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, img, hash string) error {
	start := time.Now()
	m, err := imagefs.OpenMediumFile(ctx, img, imagefs.MediumOptions{Medium: hash})
	if err != nil {
		return err
	}
	defer m.Close()
	var files []file
	seen := map[[2]uint64]bool{}
	for _, v := range m.Volumes {
		err := m.Walk(ctx, v, func(_ []byte, e *imagefs.Entry) error {
			k := [2]uint64{uint64(v.Num), e.ID}
			if e.Type != 'f' || seen[k] {
				return nil
			}
			seen[k] = true
			f := file{vol: v, entry: e, first: -1}
			for _, r := range e.Runs {
				if r.Offset >= 0 {
					f.first = v.Offset + r.Offset
					break
				}
			}
			files = append(files, f)
			return nil
		})
		if err != nil {
			return err
		}
	}
	sort.Slice(files, func(i, j int) bool { return files[i].first < files[j].first })
	listed := time.Since(start)
	buf := make([]byte, 128<<10) // cat's size: a buffer that stays in the CPU cache
	var total int64
	for _, f := range files {
		r, err := f.vol.FS.Open(f.entry)
		if err != nil {
			return fmt.Errorf("%s: %w", f.entry.Name, err)
		}
		// ReadAt in 1 MiB pieces (io.Copy to io.Discard would read 8 KiB
		// at a time through its own buffer).
		for off := int64(0); off < f.entry.Size; {
			n, err := r.ReadAt(buf[:min(int64(len(buf)), f.entry.Size-off)], off)
			off += int64(n)
			total += int64(n)
			if err != nil && !(err == io.EOF && off == f.entry.Size) {
				return fmt.Errorf("%s: %w", f.entry.Name, err)
			}
		}
	}
	secs := time.Since(start).Seconds()
	reading := secs - listed.Seconds()
	fmt.Printf("%d files %d bytes %.3f seconds (listing %.3f, reading %.3f) %.1f MB/s\n", len(files), total, secs, listed.Seconds(), reading, float64(total)/reading/1e6)
	return nil
}
