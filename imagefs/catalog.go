package imagefs

import "fmt"

// CatalogIno turns an Entry.ID into the catalog's ino, a PostgreSQL bigint
// (at most 2^63-1). IDs below 2^63 are kept as they are. A reader that
// tags a kind of ID with bit 63 (iso9660 does, for hardlink groups by
// Rock Ridge serial number) has it folded onto bit 61, which is free in the
// readers' ID spaces (byte offsets stay below 2^44); an ID with bit 61 or
// 62 also set cannot be folded without a collision and is an error. The
// enumeration and the copier both use it, so the catalog's ino and the
// copier's check agree.
func CatalogIno(id uint64) (uint64, error) {
	const bit63, bit62, bit61 = 1 << 63, 1 << 62, 1 << 61
	if id < bit63 {
		return id, nil
	}
	if id&(bit62|bit61) != 0 {
		return 0, fmt.Errorf("entry id %#x does not fit a catalog ino", id)
	}
	return id&^bit63 | bit61, nil
}
