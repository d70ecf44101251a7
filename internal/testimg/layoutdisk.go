package testimg

import "testing"

// CutDisk writes at path the disk a new user met in issue 17, small: an MBR
// disk whose partition 1 is ext4 with a dirty journal (MarkJournalDirty),
// partition 2 ext3, and partition 3 ext4 cut off by the end of the image
// (the file is truncated halfway into it). Each filesystem holds
// <name>/a.txt and <name>/b.bin (name: one, two, three). It returns where
// the partitions lie and the size the image was cut to.
func CutDisk(t testing.TB, path string) (parts []Placed, imageSize int64) {
	t.Helper()
	part := func(fstype, name string) Spec {
		return Spec{FSType: fstype, Size: 8 << 20, Entries: []Entry{
			{Path: name + "/a.txt", Kind: File, Data: []byte("partition " + name + "\n")},
			{Path: name + "/b.bin", Kind: File, Size: 40 << 10, Seed: uint64(len(name))},
		}}
	}
	dirty := Build(t, part("ext4", "one"))
	if err := MarkJournalDirty(dirty); err != nil {
		t.Fatal(err)
	}
	parts, err := ComposeDisk(path, Disk{Table: "mbr", Parts: []DiskPart{
		{Image: dirty}, {Image: Build(t, part("ext3", "two"))}, {Image: Build(t, part("ext4", "three"))},
	}})
	if err != nil {
		t.Fatal(err)
	}
	imageSize = parts[2].Start + parts[2].Size/2
	if err := Truncate(path, imageSize); err != nil {
		t.Fatal(err)
	}
	return parts, imageSize
}
