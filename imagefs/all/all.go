// Package all registers every image reader of imagefs: import it for its
// side effect (import _ "github.com/HRDAG/ntt/imagefs/all") and
// imagefs.Open, imagefs.OpenMedium and the programs read every filesystem
// NTT has a reader for. A new reader package is added here and nowhere else.
package all

import (
	_ "github.com/HRDAG/ntt/imagefs/fat"     // FAT12, FAT16, FAT32 with VFAT names
	_ "github.com/HRDAG/ntt/imagefs/hfs"     // classic HFS (Mac OS Standard)
	_ "github.com/HRDAG/ntt/imagefs/iso9660" // ISO 9660 with Rock Ridge and Joliet
	_ "github.com/HRDAG/ntt/imagefs/ntfs"    // NTFS with streams, sparse and compressed files
)
