// Package testenv decides what a test does when the machine lacks something
// it needs (root, PostgreSQL, a kernel feature): on a developer's laptop the
// test is skipped with the reason; under CI (CI=true) it fails, so CI can
// never pass by skipping.
package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// InCI reports whether the tests run under CI (CI=true or CI=1).
func InCI() bool {
	v := os.Getenv("CI")
	return v == "true" || v == "1"
}

// SkipOrFail skips the test with reason, or fails it under CI.
func SkipOrFail(t testing.TB, reason string) {
	t.Helper()
	if InCI() {
		t.Fatalf("CI=true and this test cannot run: %s", reason)
	}
	t.Skip(reason)
}

// RequireRoot skips (or fails under CI) unless the test runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		SkipOrFail(t, "needs root (loop devices, mounts)")
	}
}

// Exclusive holds a machine-wide lock named name until the test ends, so
// that tests in different test binaries (go test runs packages in
// parallel) that share a global resource take turns. Loop devices are such
// a resource: a test that leaves a loop stale on purpose must not have it
// reaped by another package's test that reaps every stale loop.
func Exclusive(t testing.TB, name string) {
	t.Helper()
	lock(t, name, unix.LOCK_EX)
}

// Shared holds the lock named name shared until the test ends: any number
// of Shared holders run together, never alongside an Exclusive holder.
// Tests whose code reaps NTT's stale loops as a side effect (every
// loopdev.Mount does) take StaleLoops shared, so that they cannot reap the
// stale loop another test made on purpose. A test must not take both.
func Shared(t testing.TB, name string) {
	t.Helper()
	lock(t, name, unix.LOCK_SH)
}

func lock(t testing.TB, name string, how int) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(os.TempDir(), "ntt-test-"+name+".lock"), os.O_RDWR|os.O_CREATE, 0o666)
	if err != nil {
		t.Fatalf("testenv: lock %s: %v", name, err)
	}
	if err := unix.Flock(int(f.Fd()), how); err != nil {
		f.Close()
		t.Fatalf("testenv: lock %s: %v", name, err)
	}
	t.Cleanup(func() { f.Close() }) // closing releases the lock
}

// StaleLoops is the Exclusive name for tests that make stale loop devices
// or reap every stale loop on the machine, and the Shared name for tests
// that mount media (a mount reaps NTT's stale loops first).
const StaleLoops = "stale-loops"

var (
	binMu    sync.Mutex
	binPaths = map[string]string{}
	binDirs  []string
)

// Binary builds the program in the test's package directory (go build .)
// once per test binary and returns its path, so that tests can run, signal
// and kill the real program. RemoveBinaries deletes what it built.
func Binary(t testing.TB) string {
	t.Helper()
	return Program(t, ".")
}

// Program is Binary for the program in dir (relative to the test's package
// directory, e.g. "../ntt-loader"), for tests that run several programs
// in turn as the runbook does.
func Program(t testing.TB, dir string) string {
	t.Helper()
	binMu.Lock()
	defer binMu.Unlock()
	wd, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	if p, ok := binPaths[wd]; ok {
		return p
	}
	out, err := os.MkdirTemp("", "ntt-test-bin")
	if err != nil {
		t.Fatal(err)
	}
	binDirs = append(binDirs, out)
	p := filepath.Join(out, filepath.Base(wd))
	cmd := exec.Command("go", "build", "-o", p, ".")
	cmd.Dir = wd
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", wd, err, b)
	}
	binPaths[wd] = p
	return p
}

// RemoveBinaries removes the programs Binary built; TestMain calls it
// (pgtest.Main does) after the tests ran.
func RemoveBinaries() {
	binMu.Lock()
	defer binMu.Unlock()
	for _, d := range binDirs {
		os.RemoveAll(d)
	}
	binDirs, binPaths = nil, map[string]string{}
}
