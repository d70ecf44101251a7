package diagnose

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// Class is what kind of failure an error is, as far as copying a file is
// concerned. It is decided from errno values and error types, never from
// message text, so it survives wrapping and translation.
type Class uint8

// The classes. ClassUnknown is the zero value.
const (
	ClassUnknown     Class = iota
	ClassIO                // EIO, EUCLEAN/EBADMSG (fs corruption): the bytes could not be read
	ClassBeyondEOF         // the file's data lies past the end of the image (ErrBeyondEOF)
	ClassMissing           // ENOENT, ENOTDIR, ELOOP, EXDEV: the catalogued path does not lead to the file
	ClassPermission        // EACCES, EPERM
	ClassPathTooLong       // ENAMETOOLONG
	ClassStaleMount        // ESTALE, ENOTCONN, ENODEV, ENXIO or ErrStaleMount: the mount went away
	ClassTransient         // EINTR, EAGAIN, ENOMEM, EMFILE, ENFILE, EBUSY, ETIMEDOUT, deadlines
	ClassCorrupt           // a structure the file's data depends on does not check out (ErrCorrupt)
	numClasses
)

// The schema's inode.error_type values.
const (
	ErrorTypePath       = "path_error"
	ErrorTypeIO         = "io_error"
	ErrorTypeHash       = "hash_error" // not produced by Classify: the copier's content checks
	ErrorTypePermission = "permission_error"
	ErrorTypeUnknown    = "unknown"
)

// The schema's inode.status values for an inode that failed for good.
const (
	StatusFailedRetryable = "failed_retryable"
	StatusFailedPermanent = "failed_permanent"
)

// ErrBeyondEOF says that a file's data lies past the end of its image (a
// truncated image). Reads of such data fail with EIO, or succeed with zeros;
// the checks in this package wrap it when they prove it.
var ErrBeyondEOF = errors.New("file data lies beyond the end of the image")

// ErrCorrupt says that a structure the file's data depends on (a FAT
// chain, a directory record, an extent) does not check out, so its bytes
// cannot be located, let alone read. A user-space image reader proves it
// from the structure itself, without a kernel log; the image reader's own
// sentinel is wrapped with this one by the caller that knows both
// (copier/diagpolicy).
var ErrCorrupt = errors.New("file data lies in a corrupt filesystem structure")

// ErrStaleMount says that the medium's mount point is no longer a readable
// mount of the expected device.
var ErrStaleMount = errors.New("mount is stale")

var classInfo = [numClasses]struct {
	name, upper, errorType string
	retryable              bool
}{
	ClassUnknown:     {"unknown", "UNKNOWN", ErrorTypeUnknown, true},
	ClassIO:          {"io", "IO", ErrorTypeIO, false},
	ClassBeyondEOF:   {"beyond_eof", "BEYOND_EOF", ErrorTypeIO, false},
	ClassMissing:     {"missing", "MISSING", ErrorTypePath, true},
	ClassPermission:  {"permission", "PERMISSION", ErrorTypePermission, true},
	ClassPathTooLong: {"path_too_long", "PATH_TOO_LONG", ErrorTypePath, true},
	ClassStaleMount:  {"stale_mount", "STALE_MOUNT", ErrorTypePath, true},
	ClassTransient:   {"transient", "TRANSIENT", ErrorTypeIO, true},
	// A corrupt structure is a read failure (io_error: the schema has no
	// finer type, and the bytes are as unreadable as after an EIO); it is a
	// property of the image, so not retryable.
	ClassCorrupt: {"corrupt", "CORRUPT", ErrorTypeIO, false},
}

func (c Class) info() int {
	if c >= numClasses {
		return int(ClassUnknown)
	}
	return int(c)
}

// String is the class's lower-case name (io, beyond_eof, missing, …).
func (c Class) String() string { return classInfo[c.info()].name }

// Upper is the name used in skip reasons: BEYOND_EOF, IO, …
func (c Class) Upper() string { return classInfo[c.info()].upper }

// ErrorType is the schema's inode.error_type for this class.
func (c Class) ErrorType() string { return classInfo[c.info()].errorType }

// Retryable reports whether a later run could succeed without the medium
// changing: path, permission, mount and transient problems are fixable (the
// rows can be reset), while read errors and data past the end of the image
// and corrupt structures are properties of the image.
func (c Class) Retryable() bool { return classInfo[c.info()].retryable }

// FinalStatus is the inode status for giving up on a failure of this class.
func (c Class) FinalStatus() string {
	if c.Retryable() {
		return StatusFailedRetryable
	}
	return StatusFailedPermanent
}

// SkipReason is the claimed_by value of an inode skipped for this class:
// DIAGNOSTIC_SKIP:<CLASS>.
func (c Class) SkipReason() string { return SkipPrefix + c.Upper() }

// MarshalText makes a Class read as its name in JSON.
func (c Class) MarshalText() ([]byte, error) { return []byte(c.String()), nil }

// UnmarshalText is the inverse of MarshalText.
func (c *Class) UnmarshalText(b []byte) error {
	v, ok := ParseClass(string(b))
	if !ok {
		return fmt.Errorf("unknown error class %q", b)
	}
	*c = v
	return nil
}

// ParseClass is the inverse of String.
func ParseClass(s string) (Class, bool) {
	s = strings.ToLower(s)
	for c := Class(0); c < numClasses; c++ {
		if classInfo[c].name == s {
			return c, true
		}
	}
	return ClassUnknown, false
}

// Classify says what kind of failure err is. It looks only at error
// identities (errors.Is) and errno values (errors.AsType), so any wrapping
// (os.PathError, fmt.Errorf("%w")) is seen through, and it does not
// allocate. A nil error is ClassUnknown.
func Classify(err error) Class {
	if err == nil {
		return ClassUnknown
	}
	// Our own sentinels first: a check that proved the cause wraps the
	// original errno together with one of them.
	if errors.Is(err, ErrBeyondEOF) {
		return ClassBeyondEOF
	}
	if errors.Is(err, ErrCorrupt) {
		return ClassCorrupt
	}
	if errors.Is(err, ErrStaleMount) {
		return ClassStaleMount
	}
	if errno, ok := errors.AsType[unix.Errno](err); ok {
		return classifyErrno(errno)
	}
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return ClassMissing
	case errors.Is(err, fs.ErrPermission):
		return ClassPermission
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return ClassTransient
	}
	return ClassUnknown
}

func classifyErrno(e unix.Errno) Class {
	switch e {
	case unix.EIO, unix.EUCLEAN, unix.EBADMSG, unix.ENODATA:
		// EUCLEAN and EBADMSG are how ext4/xfs report corrupt metadata and
		// checksum failures; ENODATA is what some filesystems return for an
		// unreadable block.
		return ClassIO
	case unix.ENOENT, unix.ENOTDIR, unix.ELOOP, unix.EXDEV, unix.EISDIR:
		return ClassMissing
	case unix.EACCES, unix.EPERM:
		return ClassPermission
	case unix.ENAMETOOLONG:
		return ClassPathTooLong
	case unix.ESTALE, unix.ENOTCONN, unix.ENODEV, unix.ENXIO, unix.ESHUTDOWN:
		return ClassStaleMount
	case unix.EINTR, unix.EAGAIN, unix.ENOMEM, unix.ENOBUFS, unix.EMFILE, unix.ENFILE,
		unix.EBUSY, unix.ETIMEDOUT:
		return ClassTransient
	}
	return ClassUnknown
}
