package loopdev

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/HRDAG/ntt/internal/testenv"
	"github.com/HRDAG/ntt/loopdev/probe"
)

// benchImage returns a cached 64 MiB ext4 image with a few files, under
// NTT_BENCH_DIR (default /var/tmp/ntt-bench).
func benchImage(b *testing.B) string {
	dir := os.Getenv("NTT_BENCH_DIR")
	if dir == "" {
		dir = "/var/tmp/ntt-bench"
	}
	img := filepath.Join(dir, "mount-ext4-64m.img")
	if _, err := os.Stat(img); err == nil {
		return img
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	stage := b.TempDir()
	for i := 0; i < 100; i++ {
		if err := os.WriteFile(filepath.Join(stage, fmt.Sprintf("f%03d", i)), make([]byte, 64<<10), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	tmp := img + ".tmp"
	if err := os.WriteFile(tmp, nil, 0o644); err != nil {
		b.Fatal(err)
	}
	if err := os.Truncate(tmp, 64<<20); err != nil {
		b.Fatal(err)
	}
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-d", stage, tmp).CombinedOutput(); err != nil {
		b.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	if err := os.Rename(tmp, img); err != nil {
		b.Fatal(err)
	}
	return img
}

// BenchmarkMountUnmount: one Mount and one Unmount of a single-partition
// image (target: median ≤ 100 ms).
func BenchmarkMountUnmount(b *testing.B) {
	testenv.RequireRoot(b)
	img := benchImage(b)
	root := b.TempDir()
	ctx := context.Background()
	for b.Loop() {
		if _, err := Mount(ctx, MountSpec{Medium: h1, Image: img, Root: root}); err != nil {
			b.Fatal(err)
		}
		if _, err := Unmount(ctx, h1, root, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReap64: Reap with 64 loop devices attached to deleted images,
// all of which it detaches (target ≤ 1 s).
func BenchmarkReap64(b *testing.B) {
	testenv.Exclusive(b, testenv.StaleLoops) // it reaps or makes stale loops
	testenv.RequireRoot(b)
	dir := b.TempDir()
	ctx := context.Background()
	for b.Loop() {
		b.StopTimer()
		var mine []Loop
		for i := 0; i < 64; i++ {
			p := filepath.Join(dir, fmt.Sprintf("gone%02d.img", i))
			if err := os.WriteFile(p, nil, 0o644); err != nil {
				b.Fatal(err)
			}
			if err := os.Truncate(p, 1<<20); err != nil {
				b.Fatal(err)
			}
			a, err := Attach(ctx, p, AttachParams{})
			if err != nil {
				b.Fatal(err)
			}
			mine = append(mine, a.Loop)
			a.Close()
			os.Remove(p)
		}
		b.StartTimer()
		rep, err := Reap(ctx, ReapOptions{ImagesDirs: []string{dir}})
		b.StopTimer()
		if err != nil {
			b.Fatal(err)
		}
		got := map[string]bool{}
		for _, r := range rep.Reaped {
			got[r.Device] = true
		}
		for _, l := range mine {
			if !got[l.Device] {
				b.Fatalf("%s not reaped", l.Device)
			}
		}
		b.StartTimer()
	}
}

// BenchmarkProbe: probing the bench image (what Mount reads first).
func BenchmarkProbe(b *testing.B) {
	img := benchImage(b)
	f, err := os.Open(img)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	for b.Loop() {
		if _, err := probe.Probe(f, st.Size()); err != nil {
			b.Fatal(err)
		}
	}
}
