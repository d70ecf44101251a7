// Package testenv decides what a test does when the machine lacks something
// it needs (root, PostgreSQL, a kernel feature): on a developer's laptop the
// test is skipped with the reason; under CI (CI=true) it fails, so CI can
// never pass by skipping.
package testenv

import (
	"os"
	"testing"
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
