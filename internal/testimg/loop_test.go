package testimg

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/HRDAG/ntt/internal/testenv"
)

// childEnv selects what TestCleanupChild does when the test binary runs
// itself; unset, TestCleanupChild does nothing.
const childEnv = "TESTIMG_CLEANUP_CHILD"

// TestCleanupChild is the body run in a child test binary by
// TestCleanupOnFailure: it mounts an image, reports the loop device and
// mount point on stdout, then fails, panics or waits to be killed.
func TestCleanupChild(t *testing.T) {
	mode := os.Getenv(childEnv)
	if mode == "" {
		return
	}
	img := Build(t, partSpec("ext4", "child"))
	var dev, dir string
	if mode == "kill" {
		dev = AttachLoop(t, img, 0, 0).Path
	} else {
		l := AttachLoop(t, img, 0, 0)
		dev, dir = l.Path, Mount(t, l.Path, "ext4", "")
	}
	fmt.Printf("CHILD dev=%s dir=%s img=%s\n", dev, dir, img)
	os.Stdout.Sync()
	switch mode {
	case "fatal":
		t.Fatal("deliberate failure after mounting")
	case "panic":
		panic("deliberate panic after mounting")
	case "kill":
		time.Sleep(time.Minute)
	}
}

// TestCleanupOnFailure runs TestCleanupChild in a child process that fails
// with t.Fatal, panics, or is killed with SIGKILL after attaching, and
// proves that afterwards its mount is gone and its loop device no longer
// holds its image (autoclear frees it even when the process is killed).
func TestCleanupOnFailure(t *testing.T) {
	RequireRoot(t)
	for _, mode := range []string{"fatal", "panic", "kill"} {
		t.Run(mode, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestCleanupChild$", "-test.count=1")
			cmd.Env = append(os.Environ(), childEnv+"="+mode, "TMPDIR="+t.TempDir())
			var out testenv.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			var dev, dir, img string
			if mode == "kill" {
				// Wait for the child to report, then kill it.
				deadline := time.Now().Add(30 * time.Second)
				for dev == "" && time.Now().Before(deadline) {
					time.Sleep(20 * time.Millisecond)
					dev, dir, img = parseChild(out.String())
				}
				cmd.Process.Signal(syscall.SIGKILL)
			}
			err := cmd.Wait()
			if err == nil {
				t.Fatalf("child succeeded, want a failure:\n%s", out.String())
			}
			if dev == "" {
				dev, dir, img = parseChild(out.String())
			}
			if dev == "" {
				t.Fatalf("child did not report its loop device:\n%s", out.String())
			}
			if dir != "" {
				if m, err := Mounted(dir); err != nil || m {
					t.Errorf("mount %s left behind (%v)", dir, err)
				}
			}
			// The kernel frees an autoclear loop when its last user goes;
			// give it time, but it must happen.
			deadline := time.Now().Add(10 * time.Second)
			for loopHolds(dev, img) && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			if loopHolds(dev, img) {
				t.Errorf("%s still backed by %s after the child ended", dev, img)
			}
		})
	}
}

func parseChild(out string) (dev, dir, img string) {
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "CHILD "); ok {
			for _, f := range strings.Fields(rest) {
				k, v, _ := strings.Cut(f, "=")
				switch k {
				case "dev":
					dev = v
				case "dir":
					dir = v
				case "img":
					img = v
				}
			}
		}
	}
	return dev, dir, img
}

// loopHolds reports whether loop device dev is attached to image, from sysfs.
func loopHolds(dev, image string) bool {
	b, err := os.ReadFile(filepath.Join("/sys/block", filepath.Base(dev), "loop", "backing_file"))
	if err != nil {
		return false
	}
	f := strings.TrimSuffix(strings.TrimSpace(string(b)), " (deleted)")
	return f == image
}

// TestMountCleanup: after a subtest that mounted ends, its mount point is
// no longer mounted and its loop device is free of the image.
func TestMountCleanup(t *testing.T) {
	RequireRoot(t)
	var dev, dir, img string
	t.Run("mount", func(t *testing.T) {
		img = Build(t, partSpec("ext4", "cleanup"))
		l := AttachLoop(t, img, 0, 0)
		dev, dir = l.Path, Mount(t, l.Path, "ext4", "")
		if m, err := Mounted(dir); err != nil || !m {
			t.Fatalf("Mounted(%s) = %v, %v right after mounting", dir, m, err)
		}
		if !loopHolds(dev, img) {
			t.Fatalf("%s not backed by %s", dev, img)
		}
	})
	if m, err := Mounted(dir); err != nil || m {
		t.Errorf("mount %s left behind (%v)", dir, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for loopHolds(dev, img) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if loopHolds(dev, img) {
		t.Errorf("%s still holds %s", dev, img)
	}
}
