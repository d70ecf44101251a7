package copier

import (
	"bytes"
	"errors"
	"fmt"
)

// ErrBadPath says that a catalogued path is not a clean path relative to the
// medium root: it must start with "/", and no component may be empty, "."
// or "..", nor hold a NUL byte. Such a path is never used, on the source or
// in the tree.
var ErrBadPath = errors.New("catalog path is not a clean path under the medium root")

// PathError is a failure tied to one catalogued path of an inode: a path
// that is not clean, one whose resolution would leave the mount (a
// symlink, "..", another filesystem), or a file that is not the one the
// catalog describes. Retrying cannot help until the catalog or the mount is
// fixed, so the copier gives up on the inode at once as failed_retryable
// with error_type path_error (see ResetFailed).
type PathError struct {
	Op   string // "check", "open", "verify", "tree"
	Path []byte // the catalogued path, raw bytes
	Err  error
}

func (e *PathError) Error() string {
	return fmt.Sprintf("%s %q: %v", e.Op, e.Path, e.Err)
}

func (e *PathError) Unwrap() error { return e.Err }

// relPath checks a catalogued path and returns it relative to the medium
// root, without the leading "/" ("" for the root itself).
func relPath(p []byte) (string, error) {
	if len(p) == 0 || p[0] != '/' {
		return "", &PathError{Op: "check", Path: p, Err: fmt.Errorf("%w: no leading /", ErrBadPath)}
	}
	if len(p) == 1 {
		return "", nil
	}
	rest := p[1:]
	if bytes.IndexByte(rest, 0) >= 0 {
		return "", &PathError{Op: "check", Path: p, Err: fmt.Errorf("%w: NUL byte", ErrBadPath)}
	}
	for c := range bytes.SplitSeq(rest, []byte{'/'}) {
		switch string(c) {
		case "":
			return "", &PathError{Op: "check", Path: p, Err: fmt.Errorf("%w: empty component", ErrBadPath)}
		case ".", "..":
			return "", &PathError{Op: "check", Path: p, Err: fmt.Errorf("%w: component %q", ErrBadPath, c)}
		}
	}
	return string(rest), nil
}

// splitRel splits a relative path into its parent ("" for the root) and
// its last component.
func splitRel(rel string) (parent, leaf string) {
	for i := len(rel) - 1; i >= 0; i-- {
		if rel[i] == '/' {
			return rel[:i], rel[i+1:]
		}
	}
	return "", rel
}

// firstComponent splits a relative path into its first component and the rest.
func firstComponent(rel string) (first, rest string) {
	for i := 0; i < len(rel); i++ {
		if rel[i] == '/' {
			return rel[:i], rel[i+1:]
		}
	}
	return rel, ""
}
