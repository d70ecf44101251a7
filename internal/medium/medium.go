// Package medium validates medium hashes and derives every name NTT builds
// from one: partition tables, the foreign-key index, mount paths, raw and
// archive file names.
//
// Invariant: a Hash value is 16–64 lowercase hex characters. It is turned
// into SQL identifiers and file names without escaping, so nothing else may
// ever reach those places. Parse is the only way to make a Hash from text;
// every public entry point of NTT calls it before doing any work.
package medium

import (
	"errors"
	"fmt"
	"path/filepath"
)

// Length limits of a medium hash in hex characters. The seed's media use 32
// (an MD5 of the image); longer hashes are allowed up to a SHA-256.
const (
	MinLen = 16
	MaxLen = 64
	// TableKeyLen is how many leading characters name the partition tables.
	// PostgreSQL truncates identifiers at 63 bytes, so "path_p_" + 64 hex +
	// "_fk_idx" would not fit; two hashes that share these 32 characters are
	// refused by the schema layer rather than merged.
	TableKeyLen = 32
)

// ErrInvalidHash is returned (wrapped) for any text that is not a medium hash.
var ErrInvalidHash = errors.New("invalid medium hash")

// Hash is a validated medium hash.
type Hash string

// Parse validates s as a medium hash. The error quotes s (with %q, so hostile
// bytes are shown escaped) and says what a hash must look like.
func Parse(s string) (Hash, error) {
	if len(s) < MinLen || len(s) > MaxLen {
		return "", fmt.Errorf("%w %q: must be %d to %d lowercase hex characters, got %d",
			ErrInvalidHash, s, MinLen, MaxLen, len(s))
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return "", fmt.Errorf("%w %q: byte %d (%q) is not lowercase hex [0-9a-f]",
				ErrInvalidHash, s, i, c)
		}
	}
	return Hash(s), nil
}

// MustParse is Parse for constants in tests and examples; it panics on error.
func MustParse(s string) Hash {
	h, err := Parse(s)
	if err != nil {
		panic(err)
	}
	return h
}

func (h Hash) String() string { return string(h) }

// TableKey is the part of the hash that names the medium's tables.
func (h Hash) TableKey() string {
	if len(h) > TableKeyLen {
		return string(h[:TableKeyLen])
	}
	return string(h)
}

// Short is the seed's HASH_SHORT: the first 8 characters, used for raw files.
func (h Hash) Short() string { return string(h[:8]) }

// InodeTable is the medium's partition of table inode: inode_p_<h>.
func (h Hash) InodeTable() string { return "inode_p_" + h.TableKey() }

// PathTable is the medium's partition of table path: path_p_<h>.
func (h Hash) PathTable() string { return "path_p_" + h.TableKey() }

// PathFKIndex is the index on the path partition's foreign key columns, by
// the name the seed's verification query looks for: path_p_<h>_fk_idx.
func (h Hash) PathFKIndex() string { return h.PathTable() + "_fk_idx" }

// MountPath is where the medium is mounted under root: <root>/<hash>.
func (h Hash) MountPath(root string) string { return filepath.Join(root, string(h)) }

// PartitionMountPath is where partition num is mounted when a medium has
// more than one mountable partition: <root>/<hash>/p<num>.
func (h Hash) PartitionMountPath(root string, num int) string {
	return filepath.Join(root, string(h), fmt.Sprintf("p%d", num))
}

// RawFileName is the seed's enumeration output name: <hash8>.raw.
func (h Hash) RawFileName() string { return h.Short() + ".raw" }

// ArchiveFileName is the sealed archive's name: <hash>.tar.zst.
func (h Hash) ArchiveFileName() string { return string(h) + ".tar.zst" }

// ImageFileName is the seed's image name: <hash>.img.
func (h Hash) ImageFileName() string { return string(h) + ".img" }

// MapFileName is the ddrescue mapfile beside the image: <hash>.map.
func (h Hash) MapFileName() string { return string(h) + ".map" }

// ImageMembers are the seed's explicit list of a medium's image files, in
// archive order: image, mapfile, its backups, and the ddrescue log.
func (h Hash) ImageMembers() []string {
	s := string(h)
	return []string{s + ".img", s + ".map", s + ".map.bak", s + ".map.stall", s + "-ddrescue.log"}
}

// LayoutRecordPath is where loopdev records the layout it mounted, beside
// the medium's lock file: <root>/.<hash>.layout.json. The copier trusts a
// partition mount only if this record names it.
func (h Hash) LayoutRecordPath(root string) string {
	return filepath.Join(root, "."+string(h)+".layout.json")
}
