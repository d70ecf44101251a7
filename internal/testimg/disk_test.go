package testimg

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// tablePart is a partition as an independent reader of the table sees it.
type tablePart struct {
	Number      int
	Type        byte
	Start, Size int64
}

// readMBR parses sector 0 and follows the EBR chain of the first extended
// partition, the way the kernel's msdos parser does, without using the
// writer's code.
func readMBR(t *testing.T, disk []byte) []tablePart {
	t.Helper()
	if disk[510] != 0x55 || disk[511] != 0xAA {
		t.Fatalf("no MBR signature")
	}
	var parts []tablePart
	var extStart int64 = -1
	for i := range 4 {
		e := disk[446+16*i:]
		if e[4] == 0 {
			continue
		}
		p := tablePart{Number: i + 1, Type: e[4], Start: int64(le.Uint32(e[8:])) * 512, Size: int64(le.Uint32(e[12:])) * 512}
		parts = append(parts, p)
		if extStart < 0 && isExtended(e[4]) {
			extStart = p.Start
		}
	}
	for n, ebr := 5, extStart; ebr >= 0 && n < 64; n++ {
		if ebr+512 > int64(len(disk)) {
			break // the chain continues past the end of the image
		}
		s := disk[ebr:][:512]
		if s[510] != 0x55 || s[511] != 0xAA {
			t.Fatalf("EBR at %d: no signature", ebr)
		}
		parts = append(parts, tablePart{Number: n, Type: s[446+4],
			Start: ebr + int64(le.Uint32(s[446+8:]))*512, Size: int64(le.Uint32(s[446+12:])) * 512})
		if s[462+4] == 0 {
			break
		}
		ebr = extStart + int64(le.Uint32(s[462+8:]))*512
	}
	return parts
}

// readGPT checks both GPT headers (signature, CRCs, cross references) and
// returns the partitions of the primary table.
func readGPT(t *testing.T, disk []byte, wantBackup bool) []tablePart {
	t.Helper()
	last := int64(len(disk))/512 - 1
	if disk[446+4] != TypeGPTProt {
		t.Errorf("protective MBR type %#x", disk[446+4])
	}
	check := func(name string, lba, alt int64) []byte {
		h := disk[lba*512:][:512]
		if string(h[:8]) != "EFI PART" {
			t.Fatalf("%s header at LBA %d: no signature", name, lba)
		}
		if !crcOK(h) {
			t.Errorf("%s header CRC wrong", name)
		}
		if my, a := int64(le.Uint64(h[24:])), int64(le.Uint64(h[32:])); my != lba || a != alt {
			t.Errorf("%s header: my LBA %d alternate %d, want %d %d", name, my, a, lba, alt)
		}
		entryLBA := int64(le.Uint64(h[72:]))
		entries := disk[entryLBA*512:][:128*128]
		if crc := le.Uint32(h[88:]); crc != crcIEEE(entries) {
			t.Errorf("%s entries CRC %#x, want %#x", name, crc, crcIEEE(entries))
		}
		return entries
	}
	entries := check("primary", 1, last)
	if wantBackup {
		if backup := check("backup", last, 1); !bytes.Equal(backup, entries) {
			t.Error("backup entries differ from primary")
		}
	} else if string(disk[last*512:][:8]) == "EFI PART" {
		t.Error("backup header present with NoBackup")
	}
	var parts []tablePart
	for i := range 128 {
		e := entries[i*128:][:128]
		if bytes.Equal(e[:16], make([]byte, 16)) {
			continue
		}
		first, lastLBA := int64(le.Uint64(e[32:])), int64(le.Uint64(e[40:]))
		parts = append(parts, tablePart{Number: i + 1, Start: first * 512, Size: (lastLBA - first + 1) * 512})
	}
	return parts
}

func crcIEEE(b []byte) uint32 { return crc32IEEE(b) }

// partSpec builds a small image whose marker file names the partition.
func partSpec(fstype, marker string) Spec {
	return Spec{FSType: fstype, Size: 4 << 20, BlockSize: 1024, Label: marker, Entries: []Entry{
		{Path: "which", Kind: File, Data: []byte(marker + "\n")},
		{Path: "dir/seeded", Kind: File, Size: 30000, Seed: uint64(len(marker))},
	}}
}

// mountPart mounts a partition through an offset loop and checks its tree.
func mountPart(t *testing.T, disk string, p tablePart, spec Spec) {
	t.Helper()
	dir := MountImage(t, disk, p.Start, p.Size, spec.fsType())
	if err := Check(dir, spec); err != nil {
		t.Errorf("partition %d: %v", p.Number, err)
	}
}

// TestMBRPrimaries: a disk with an ext4 and an ext2 primary partition;
// each is found by an independent table reader and mounts through an
// offset loop.
func TestMBRPrimaries(t *testing.T) {
	RequireRoot(t)
	a, b := partSpec("ext4", "first"), partSpec("ext2", "second")
	disk := filepath.Join(t.TempDir(), "disk.img")
	placed, err := ComposeDisk(disk, Disk{Table: "mbr", Parts: []DiskPart{{Image: Build(t, a)}, {Image: Build(t, b)}}})
	if err != nil {
		t.Fatal(err)
	}
	parts := readMBR(t, readAll(t, disk))
	if len(parts) != 2 {
		t.Fatalf("table has %d partitions: %+v", len(parts), parts)
	}
	for i, p := range parts {
		if p.Type != TypeLinux || p.Start != placed[i].Start || p.Size != placed[i].Size || p.Number != placed[i].Number {
			t.Errorf("partition %d: table %+v, ComposeDisk said %+v", i+1, p, placed[i])
		}
	}
	if parts[0].Start != 1<<20 {
		t.Errorf("first partition at %d, want 1 MiB", parts[0].Start)
	}
	mountPart(t, disk, parts[0], a)
	mountPart(t, disk, parts[1], b)
}

// TestMBRLogical: a primary plus an extended partition holding two
// logical partitions (an EBR chain); the logical ones mount through offset
// loops at the offsets the chain gives.
func TestMBRLogical(t *testing.T) {
	RequireRoot(t)
	specs := []Spec{partSpec("ext4", "primary"), partSpec("ext4", "logical5"), partSpec("ext3", "logical6")}
	disk := filepath.Join(t.TempDir(), "disk.img")
	placed, err := ComposeDisk(disk, Disk{Table: "mbr", Parts: []DiskPart{
		{Image: Build(t, specs[0])},
		{Image: Build(t, specs[1]), Logical: true},
		{Image: Build(t, specs[2]), Logical: true},
	}})
	if err != nil {
		t.Fatal(err)
	}
	parts := readMBR(t, readAll(t, disk))
	var nums []int
	for _, p := range parts {
		nums = append(nums, p.Number)
	}
	if fmt.Sprint(nums) != "[1 2 5 6]" || !isExtended(parts[1].Type) {
		t.Fatalf("partitions %+v, want 1, extended 2, logical 5 and 6", parts)
	}
	if ext := parts[1]; ext.Start > parts[2].Start || ext.Start+ext.Size < parts[3].Start+parts[3].Size {
		t.Errorf("extended %+v does not contain the logical partitions %+v %+v", ext, parts[2], parts[3])
	}
	for i, p := range []tablePart{parts[0], parts[2], parts[3]} {
		if p.Start != placed[i].Start || p.Size != placed[i].Size || p.Number != placed[i].Number {
			t.Errorf("table %+v, ComposeDisk said %+v", p, placed[i])
		}
		mountPart(t, disk, p, specs[i])
	}
}

// TestGPT: two partitions behind a GPT with correct CRCs and backup; both
// mount through offset loops. Without the backup, the primary still reads.
func TestGPT(t *testing.T) {
	RequireRoot(t)
	a, b := partSpec("ext4", "gpt-one"), partSpec("ext3", "gpt-two")
	disk := filepath.Join(t.TempDir(), "disk.img")
	placed, err := ComposeDisk(disk, Disk{Table: "gpt", Parts: []DiskPart{{Image: Build(t, a), Name: "one"}, {Image: Build(t, b), Name: "twö"}}})
	if err != nil {
		t.Fatal(err)
	}
	raw := readAll(t, disk)
	parts := readGPT(t, raw, true)
	if len(parts) != 2 {
		t.Fatalf("GPT has %d partitions", len(parts))
	}
	for i, p := range parts {
		if p.Start != placed[i].Start || p.Size != placed[i].Size {
			t.Errorf("table %+v, ComposeDisk said %+v", p, placed[i])
		}
	}
	name := raw[2*512+128+56:][:8]
	if want := []byte{'t', 0, 'w', 0, 0xF6, 0, 0, 0}; !bytes.Equal(name, want) {
		t.Errorf("second name bytes % x, want UTF-16LE of \"twö\"", name)
	}
	mountPart(t, disk, parts[0], a)
	mountPart(t, disk, parts[1], b)

	if err := WriteGPT(disk, GPT{Partitions: []GPTPartition{{Start: parts[0].Start, Size: parts[0].Size}}, NoBackup: true}); err != nil {
		t.Fatal(err)
	}
	if err := Zero(disk, int64(len(raw))-512, 512); err != nil {
		t.Fatal(err)
	}
	if p := readGPT(t, readAll(t, disk), false); len(p) != 1 || p[0].Start != parts[0].Start {
		t.Errorf("rewritten GPT: %+v", p)
	}
}

// TestTablesPointPastTheEnd: entries may point beyond the end of the
// (truncated) image, as on a rescue that stopped early.
func TestTablesPointPastTheEnd(t *testing.T) {
	dir := t.TempDir()
	disk := filepath.Join(dir, "mbr.img")
	if err := Truncate(disk, 0); err == nil {
		t.Fatal("Truncate of a missing file succeeded")
	}
	if err := os.WriteFile(disk, make([]byte, 2<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	err := WriteMBR(disk, MBR{Signature: 0xDEADBEEF, Primary: []MBRPartition{
		{Type: TypeLinux, Start: 1 << 20, Size: 100 << 20, Bootable: true},
		{},
		{Type: TypeExtended, Start: 20 << 20, Size: 50 << 20},
	}, Logical: []MBRPartition{{Type: TypeLinux, Start: 21 << 20, Size: 10 << 20, EBR: 20 << 20}}})
	if err != nil { // the EBR lies past the end: the file grows to hold it
		t.Fatal(err)
	}
	raw := readAll(t, disk)
	parts := readMBR(t, raw)
	want := []tablePart{{1, TypeLinux, 1 << 20, 100 << 20}, {3, TypeExtended, 20 << 20, 50 << 20}, {5, TypeLinux, 21 << 20, 10 << 20}}
	if fmt.Sprint(parts) != fmt.Sprint(want) {
		t.Errorf("parts %v, want %v", parts, want)
	}
	if raw[446] != 0x80 || le.Uint32(raw[440:]) != 0xDEADBEEF {
		t.Errorf("boot flag %#x signature %#x", raw[446], le.Uint32(raw[440:]))
	}
	if err := Truncate(disk, 2<<20); err != nil {
		t.Fatal(err)
	}
	if p := readMBR(t, readAll(t, disk)); p[0].Start+p[0].Size <= 2<<20 {
		t.Errorf("entry does not point past the end: %+v", p[0])
	}

	gdisk := filepath.Join(dir, "gpt.img")
	if err := Truncate(gdisk, 0); err == nil {
		t.Fatal("Truncate created a file")
	}
	if err := os.WriteFile(gdisk, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Truncate(gdisk, 4<<20); err != nil {
		t.Fatal(err)
	}
	if err := WriteGPT(gdisk, GPT{Partitions: []GPTPartition{{Start: 1 << 20, Size: 1 << 30}}}); err != nil {
		t.Fatal(err)
	}
	if p := readGPT(t, readAll(t, gdisk), true); len(p) != 1 || p[0].Size != 1<<30 {
		t.Errorf("GPT entry %+v", p)
	}
	// Errors: bad alignment, too many primaries, logical without extended.
	for name, m := range map[string]MBR{
		"unaligned": {Primary: []MBRPartition{{Type: TypeLinux, Start: 1000, Size: 512}}},
		"five":      {Primary: make([]MBRPartition, 5)},
		"orphan":    {Logical: []MBRPartition{{Type: TypeLinux, Start: 1 << 20, Size: 512}}},
		"too big":   {Primary: []MBRPartition{{Type: TypeLinux, Start: 512, Size: 1 << 42}}},
	} {
		if err := WriteMBR(disk, m); err == nil {
			t.Errorf("%s: WriteMBR accepted it", name)
		}
	}
}

// TestZipDiskOffset: a filesystem at byte 16384 does not mount at 0 but
// mounts through a loop at offset 16384.
func TestZipDiskOffset(t *testing.T) {
	RequireRoot(t)
	spec := partSpec("ext4", "zip")
	disk := filepath.Join(t.TempDir(), "zip.img")
	if err := Place(disk, 16384, Build(t, spec)); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(disk)
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() != 16384+4<<20 {
		t.Errorf("disk is %d bytes, want %d", st.Size(), 16384+4<<20)
	}
	l := AttachLoop(t, disk, 0, 0)
	if err := TryMount(l.Path, t.TempDir(), "ext4", "noload"); err == nil {
		t.Fatal("the disk mounted at offset 0")
	}
	dir := MountImage(t, disk, 16384, 0, "ext4")
	if err := Check(dir, spec); err != nil {
		t.Fatal(err)
	}
}

// TestPlaceKeepsHolesAndOverwrites: Place over existing data leaves the
// source's holes reading as zeros.
func TestPlaceKeepsHolesAndOverwrites(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	f, err := os.Create(src)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("head"), 0)
	f.WriteAt([]byte("tail"), 1<<20)
	f.Close()
	disk := filepath.Join(dir, "disk")
	if err := os.WriteFile(disk, bytes.Repeat([]byte{0xAA}, 3<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Place(disk, 4096, src); err != nil {
		t.Fatal(err)
	}
	got := readAll(t, disk)
	want := bytes.Repeat([]byte{0xAA}, 3<<20)
	copy(want[4096:], make([]byte, 1<<20+4))
	copy(want[4096:], "head")
	copy(want[4096+1<<20:], "tail")
	if !bytes.Equal(got, want) {
		t.Error("placed bytes differ from the source")
	}
}

// TestDirtyJournal: after MarkJournalDirty a plain read-only mount of a
// read-only loop fails (recovery needed, no write access) while
// ro,noload mounts and shows the whole tree.
func TestDirtyJournal(t *testing.T) {
	RequireRoot(t)
	for _, fstype := range []string{"ext4", "ext3"} {
		t.Run(fstype, func(t *testing.T) {
			spec := partSpec(fstype, "dirty")
			img := Build(t, spec)
			l := AttachLoop(t, img, 0, 0)
			mp := t.TempDir()
			if err := TryMount(l.Path, mp, fstype, ""); err != nil {
				t.Fatalf("clean image does not mount plain ro: %v", err)
			}
			if err := unmount(mp); err != nil {
				t.Fatal(err)
			}
			if err := MarkJournalDirty(img); err != nil {
				t.Fatal(err)
			}
			raw := readAll(t, img)
			if le.Uint32(raw[1024+96:])&0x4 == 0 {
				t.Error("needs_recovery is not set")
			}
			if out, err := exec.Command("debugfs", "-R", "logdump", img).CombinedOutput(); err != nil || !bytes.Contains(out, []byte("(commit block)")) {
				t.Errorf("journal holds no committed transaction: %v\n%s", err, out)
			}
			before := fileHash(t, img)
			l2 := AttachLoop(t, img, 0, 0)
			err := TryMount(l2.Path, mp, fstype, "")
			if err == nil {
				unmount(mp)
				t.Fatal("plain read-only mount of a dirty journal succeeded")
			}
			if !errors.Is(err, unix.EROFS) {
				t.Errorf("plain mount error %v, want EROFS (recovery needs write access)", err)
			}
			dir := Mount(t, l2.Path, fstype, "")
			if err := Check(dir, spec); err != nil {
				t.Error(err)
			}
			if fileHash(t, img) != before {
				t.Error("mounting changed the image")
			}
		})
	}
	t.Run("ext2", func(t *testing.T) {
		if err := MarkJournalDirty(Build(t, partSpec("ext2", "x"))); !errors.Is(err, ErrNoJournal) {
			t.Errorf("ext2: %v, want ErrNoJournal", err)
		}
	})
}

func TestTruncateAndZero(t *testing.T) {
	RequireRoot(t)
	img := Build(t, partSpec("ext4", "cut"))
	if err := Truncate(img, 1<<20); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(img)
	if err != nil || st.Size() != 1<<20 {
		t.Fatalf("size after truncate: %v %v", st, err)
	}
	if err := Zero(img, 1024, 1024); err != nil {
		t.Fatal(err)
	}
	raw := readAll(t, img)
	if !bytes.Equal(raw[1024:2048], make([]byte, 1024)) {
		t.Error("superblock not zeroed")
	}
	if len(raw) != 1<<20 {
		t.Errorf("Zero changed the size to %d", len(raw))
	}
}
