package testimg

import "encoding/binary"

// AppleDouble returns an AppleDouble header file, as macOS writes ._name
// beside a file on a disk without forks, holding a resource fork and the
// Finder info's type and creator: genisoimage --osx-double takes it as the
// forks of the file it sits beside on a hybrid disc's HFS side.
func AppleDouble(rsrc []byte, typ, creator string) []byte {
	const head = 26 + 2*12 // header, then two entry descriptors
	b := make([]byte, head+32+len(rsrc))
	binary.BigEndian.PutUint32(b[0:], 0x00051607) // AppleDouble magic
	binary.BigEndian.PutUint32(b[4:], 0x00020000) // version 2
	binary.BigEndian.PutUint16(b[24:], 2)         // entries
	// Entry descriptors: Finder info (9), then the resource fork (2).
	for i, e := range [][3]uint32{{9, head, 32}, {2, head + 32, uint32(len(rsrc))}} {
		binary.BigEndian.PutUint32(b[26+12*i:], e[0])
		binary.BigEndian.PutUint32(b[30+12*i:], e[1])
		binary.BigEndian.PutUint32(b[34+12*i:], e[2])
	}
	copy(b[head:], typ+creator)
	copy(b[head+32:], rsrc)
	return b
}
