package diagnose

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func pathErr(op string, e error) error { return &fs.PathError{Op: op, Path: "/mnt/ntt/x/f", Err: e} }

func TestClassifyErrnoAndTypes(t *testing.T) {
	cases := []struct {
		err  error
		want Class
	}{
		{pathErr("read", unix.EIO), ClassIO},
		{fmt.Errorf("copy: %w", pathErr("read", unix.EIO)), ClassIO},
		{pathErr("read", unix.EUCLEAN), ClassIO},
		{pathErr("read", unix.EBADMSG), ClassIO},
		{fmt.Errorf("%w: %w", ErrBeyondEOF, pathErr("read", unix.EIO)), ClassBeyondEOF},
		{fmt.Errorf("copy: %w: FAT chain ends early", ErrCorrupt), ClassCorrupt},
		{fmt.Errorf("%w: %w", ErrCorrupt, pathErr("read", unix.EUCLEAN)), ClassCorrupt},
		{pathErr("open", unix.ENOENT), ClassMissing},
		{pathErr("openat2", unix.ELOOP), ClassMissing},
		{pathErr("openat2", unix.EXDEV), ClassMissing},
		{fs.ErrNotExist, ClassMissing},
		{pathErr("open", unix.EACCES), ClassPermission},
		{pathErr("open", unix.EPERM), ClassPermission},
		{fs.ErrPermission, ClassPermission},
		{pathErr("open", unix.ENAMETOOLONG), ClassPathTooLong},
		{pathErr("read", unix.ESTALE), ClassStaleMount},
		{pathErr("read", unix.ENOTCONN), ClassStaleMount},
		{fmt.Errorf("mount of x: %w", ErrStaleMount), ClassStaleMount},
		{pathErr("read", unix.EINTR), ClassTransient},
		{pathErr("open", unix.EMFILE), ClassTransient},
		{pathErr("read", unix.ENOMEM), ClassTransient},
		{context.DeadlineExceeded, ClassTransient},
		{fmt.Errorf("no progress: %w", os.ErrDeadlineExceeded), ClassTransient},
		{errors.Join(errors.New("closing"), pathErr("read", unix.EIO)), ClassIO},
		{errors.New("input/output error"), ClassUnknown}, // text is never read
		{pathErr("read", unix.EOVERFLOW), ClassUnknown},
		{nil, ClassUnknown},
	}
	for _, c := range cases {
		assert.Equal(t, c.want, Classify(c.err), "Classify(%v)", c.err)
	}
}

func TestClassifyRealErrors(t *testing.T) {
	dir := t.TempDir()
	_, err := os.Open(filepath.Join(dir, "absent"))
	assert.Equal(t, ClassMissing, Classify(err))

	_, err = os.Open(filepath.Join(dir, strings.Repeat("n", 300)))
	assert.Equal(t, ClassPathTooLong, Classify(err))

	f := filepath.Join(dir, "file")
	require.NoError(t, os.WriteFile(f, []byte("x"), 0o644))
	_, err = os.Open(filepath.Join(f, "below"))
	assert.Equal(t, ClassMissing, Classify(err), "ENOTDIR")
}

func TestClassMapping(t *testing.T) {
	cases := []struct {
		c          Class
		name, et   string
		retryable  bool
		skipReason string
	}{
		{ClassIO, "io", ErrorTypeIO, false, "DIAGNOSTIC_SKIP:IO"},
		{ClassBeyondEOF, "beyond_eof", ErrorTypeIO, false, "DIAGNOSTIC_SKIP:BEYOND_EOF"},
		{ClassMissing, "missing", ErrorTypePath, true, "DIAGNOSTIC_SKIP:MISSING"},
		{ClassPermission, "permission", ErrorTypePermission, true, "DIAGNOSTIC_SKIP:PERMISSION"},
		{ClassPathTooLong, "path_too_long", ErrorTypePath, true, "DIAGNOSTIC_SKIP:PATH_TOO_LONG"},
		{ClassStaleMount, "stale_mount", ErrorTypePath, true, "DIAGNOSTIC_SKIP:STALE_MOUNT"},
		{ClassTransient, "transient", ErrorTypeIO, true, "DIAGNOSTIC_SKIP:TRANSIENT"},
		{ClassCorrupt, "corrupt", ErrorTypeIO, false, "DIAGNOSTIC_SKIP:CORRUPT"},
		{ClassUnknown, "unknown", ErrorTypeUnknown, true, "DIAGNOSTIC_SKIP:UNKNOWN"},
	}
	for _, c := range cases {
		assert.Equal(t, c.name, c.c.String())
		assert.Equal(t, c.et, c.c.ErrorType(), c.name)
		assert.Equal(t, c.retryable, c.c.Retryable(), c.name)
		assert.Equal(t, c.skipReason, c.c.SkipReason())
		want := StatusFailedPermanent
		if c.retryable {
			want = StatusFailedRetryable
		}
		assert.Equal(t, want, c.c.FinalStatus(), c.name)
		back, ok := ParseClass(c.name)
		assert.True(t, ok)
		assert.Equal(t, c.c, back)
	}
	assert.Equal(t, "unknown", Class(200).String())
}

func TestClassifyDoesNotAllocate(t *testing.T) {
	errs := []error{
		fmt.Errorf("copying ino 12: %w", pathErr("read", unix.EIO)),
		fmt.Errorf("%w: %w", ErrBeyondEOF, pathErr("read", unix.EIO)),
		pathErr("open", unix.ENOENT),
		context.DeadlineExceeded,
		errors.New("opaque"),
	}
	for _, e := range errs {
		n := testing.AllocsPerRun(1000, func() { _ = Classify(e) })
		assert.Zero(t, n, "Classify(%v) allocates", e)
	}
}

func BenchmarkClassify(b *testing.B) {
	err := fmt.Errorf("copying ino 12: %w", pathErr("read", unix.EIO))
	b.ReportAllocs()
	for b.Loop() {
		if Classify(err) != ClassIO {
			b.Fatal("wrong class")
		}
	}
}
