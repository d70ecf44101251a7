package probe

import (
	"bytes"
	"testing"
)

// FuzzProbe: no input makes Probe panic or report a partition it could not
// have read, and what it reports is consistent with the image size.
func FuzzProbe(f *testing.F) {
	const kb = 1 << 10
	seed := func(build func(m img)) {
		m := newImg(32 * kb)
		build(m)
		f.Add([]byte(m))
	}
	seed(func(m img) { // MBR: a FAT16 primary in slot 4 at sector 32 (a Zip disk)
		m.mbrEntry(3, 0x80, 0x06, 32, 32)
		m.fat(32*512, 32, 1, 1, false, "ZIPDISK")
	})
	seed(func(m img) { // MBR with an extended chain
		m.mbrEntry(0, 0, 0x83, 8, 16)
		m.mbrEntry(1, 0, 0x05, 32, 32)
		m.ebr(32*512, 8, 8, 0x83, 24)
		m.ebr(56*512, 2, 4, 0x83, 0) // logical 6 at sector 58
		m.ext(8*512, extCompatJournal, extIncompatExtent, 0, "p1")
	})
	seed(func(m img) { m.fat(0, 64, 1, 1, false, "FLOPPY") })      // whole-disk FAT
	seed(func(m img) { m.fat(0, 64, 1, 1, true, "FAT32VOL") })     // whole-disk FAT32
	seed(func(m img) { m.ext(0, extCompatJournal, 0, 0, "ext3") }) // whole-disk ext3
	seed(func(m img) { m.swap(0) })
	f.Add(bytes.Repeat([]byte{0xf6}, 8*kb)) // erased
	f.Add([]byte{})
	if iso := newImg(40 * 2048); true {
		iso.iso(0, "CDROM")
		f.Add([]byte(iso))
		// A hybrid disc's HFS side: its master directory block at 1024.
		iso.str(1024, "BD")
		iso.u32be(1024+0x14, 2048)
		f.Add([]byte(iso))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		size := int64(len(in))
		res, err := Probe(bytes.NewReader(in), size)
		if err != nil {
			t.Fatalf("an in-memory image gave an I/O error: %v", err)
		}
		if res.Size != size {
			t.Fatalf("size %d, want %d", res.Size, size)
		}
		for _, p := range res.Partitions {
			if p.Start < 0 || p.Size < 0 {
				t.Fatalf("partition %d has a negative extent: %+v", p.Num, p)
			}
			if !p.Truncated && (p.Start >= size || p.End() > size) {
				t.Fatalf("partition %d runs past the image but is not marked truncated: %+v", p.Num, p)
			}
			if p.Content != nil && p.Start >= size {
				t.Fatalf("partition %d has content but starts past the image", p.Num)
			}
		}
		if len(res.Partitions) > 1<<16 {
			t.Fatalf("%d partitions from %d bytes", len(res.Partitions), size)
		}
	})
}
