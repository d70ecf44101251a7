package probe

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"hash/crc32"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/stretchr/testify/require"

	"github.com/HRDAG/ntt/internal/testenv"
)

// img is an in-memory image the tests write structures into.
type img []byte

func newImg(size int) img { return make(img, size) }

func (m img) put(off int, b []byte)      { copy(m[off:], b) }
func (m img) u16le(off int, v uint16)    { binary.LittleEndian.PutUint16(m[off:], v) }
func (m img) u32le(off int, v uint32)    { binary.LittleEndian.PutUint32(m[off:], v) }
func (m img) u64le(off int, v uint64)    { binary.LittleEndian.PutUint64(m[off:], v) }
func (m img) u16be(off int, v uint16)    { binary.BigEndian.PutUint16(m[off:], v) }
func (m img) u32be(off int, v uint32)    { binary.BigEndian.PutUint32(m[off:], v) }
func (m img) probe(t *testing.T) *Result { t.Helper(); return mustProbe(t, m, int64(len(m))) }
func (m img) identify(off int) *Content {
	return identify(&reader{r: bytes.NewReader(m), size: int64(len(m))}, int64(off), int64(len(m)-off))
}
func (m img) fill(off, n int, v byte) { copy(m[off:off+n], bytes.Repeat([]byte{v}, n)) }
func (m img) str(off int, s string)   { copy(m[off:], s) }
func mustProbe(t *testing.T, b []byte, size int64) *Result {
	t.Helper()
	r, err := Probe(bytes.NewReader(b), size)
	require.NoError(t, err)
	return r
}

// ---- filesystem writers (just enough bytes for each signature) ----

const (
	extCompatJournal  = 0x4
	extIncompatFType  = 0x2
	extIncompatRecov  = 0x4
	extIncompatExtent = 0x40
	extROSparse       = 0x1
	extROLargeFile    = 0x2
	extROHugeFile     = 0x8
)

func (m img) ext(off int, compat, incompat, ro uint32, label string) {
	sb := off + 1024
	m.u16le(sb+0x38, 0xef53)
	m.u32le(sb+0x5c, compat)
	m.u32le(sb+0x60, incompat)
	m.u32le(sb+0x64, ro)
	m.put(sb+0x68, []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16})
	m.str(sb+0x78, label)
}

// fat writes a BPB. FAT32 when fat32, with the size fields chosen to give
// the wanted cluster count.
func (m img) fat(off int, totalSectors uint32, spc byte, fatSz uint32, fat32 bool, label string) {
	m.put(off, []byte{0xeb, 0x3c, 0x90})
	m.str(off+3, "MSWIN4.1")
	m.u16le(off+11, 512)
	m[off+13] = spc
	m.u16le(off+14, 1)
	m[off+16] = 2
	m[off+21] = 0xf8
	ext := off + 36
	if fat32 {
		m.u16le(off+14, 32)
		m.u32le(off+36, fatSz)
		ext = off + 64
	} else {
		m.u16le(off+17, 512)
		m.u16le(off+22, uint16(fatSz))
	}
	if totalSectors < 0x10000 {
		m.u16le(off+19, uint16(totalSectors))
	} else {
		m.u32le(off+32, totalSectors)
	}
	m[ext+2] = 0x29
	m.u32le(ext+3, 0x1234abcd)
	m.str(ext+7, label)
	m[off+510], m[off+511] = 0x55, 0xaa
}

func (m img) iso(off int, label string) {
	pvd := off + 32768
	m[pvd] = 1
	m.str(pvd+1, "CD001")
	m[pvd+6] = 1
	m.str(pvd+40, label)
	term := pvd + 2048
	m[term] = 255
	m.str(term+1, "CD001")
}

func (m img) udfVRS(off int, afterISO bool) {
	d := off + 32768
	if afterISO {
		d += 2 * 2048
	}
	for _, id := range []string{"BEA01", "NSR03", "TEA01"} {
		m.str(d+1, id)
		d += 2048
	}
}

func (m img) mbrEntry(i int, boot, typ byte, startLBA, sectors uint32) {
	e := 446 + 16*i
	m[e] = boot
	m[e+4] = typ
	m.u32le(e+8, startLBA)
	m.u32le(e+12, sectors)
	m[510], m[511] = 0x55, 0xaa
}

// ebr writes an extended boot record at byte off.
func (m img) ebr(off int, relStart, sectors uint32, typ byte, nextRel uint32) {
	m.put(off+446, bytes.Repeat([]byte{0}, 64))
	e := off + 446
	m[e+4] = typ
	m.u32le(e+8, relStart)
	m.u32le(e+12, sectors)
	if nextRel != 0 {
		m[e+16+4] = 0x05
		m.u32le(e+16+8, nextRel)
		m.u32le(e+16+12, 100)
	}
	m[off+510], m[off+511] = 0x55, 0xaa
}

func (m img) swap(off int) { m.str(off+4096-10, "SWAPSPACE2"); m.str(off+1024+28, "swaplabel") }

// ---- tests ----

func TestArchiveMagic(t *testing.T) {
	var tarBuf bytes.Buffer
	tw := tar.NewWriter(&tarBuf)
	require.NoError(t, tw.WriteHeader(&tar.Header{Name: "a.txt", Mode: 0644, Size: 3}))
	_, _ = tw.Write([]byte("abc"))
	require.NoError(t, tw.Close())

	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write([]byte("hello"))
	require.NoError(t, zw.Close())

	var zs bytes.Buffer
	enc, err := zstd.NewWriter(&zs)
	require.NoError(t, err)
	_, _ = enc.Write([]byte("hello"))
	require.NoError(t, enc.Close())

	var zb bytes.Buffer
	zwr := zip.NewWriter(&zb)
	f, _ := zwr.Create("a")
	_, _ = f.Write([]byte("x"))
	require.NoError(t, zwr.Close())

	// A bzip2 stream header: "BZh9" then the block magic pi.
	bz := append([]byte("BZh91AY&SY"), make([]byte, 600)...)
	xz := append([]byte{0xfd, '7', 'z', 'X', 'Z', 0, 0, 4}, make([]byte, 600)...)

	for name, b := range map[string][]byte{
		"tar": tarBuf.Bytes(), "gzip": gz.Bytes(), "zstd": zs.Bytes(), "zip": zb.Bytes(),
		"bzip2": bz, "xz": xz,
	} {
		r := mustProbe(t, b, int64(len(b)))
		require.Equal(t, KindArchive, r.Kind, name)
		require.Equal(t, name, r.Archive)
	}
	// "BZh" alone (e.g. boot code) is not bzip2.
	notBz := newImg(4096)
	notBz.str(0, "BZh9xxxxxx")
	require.Equal(t, KindDisk, notBz.probe(t).Kind)
}

// A tar.bz2 renamed to .img, as happened in production: built with the
// real tar and bzip2 when present.
func TestTarBz2NamedImg(t *testing.T) {
	if _, err := exec.LookPath("bzip2"); err != nil {
		testenv.SkipOrFail(t, "bzip2 not installed")
	}
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "f.txt"), bytes.Repeat([]byte("data "), 1000), 0o644))
	out := filepath.Join(dir, "c9894f1681b5b542eb3a4b75967e9aea.img")
	cmd := exec.Command("tar", "-cjf", out, "-C", dir, "f.txt")
	b, err := cmd.CombinedOutput()
	require.NoError(t, err, string(b))
	data, err := os.ReadFile(out)
	require.NoError(t, err)
	r := mustProbe(t, data, int64(len(data)))
	require.Equal(t, KindArchive, r.Kind)
	require.Equal(t, "bzip2", r.Archive)
}

func TestErased(t *testing.T) {
	z := newImg(1 << 20)
	r := z.probe(t)
	require.Equal(t, KindErased, r.Kind)
	require.Equal(t, byte(0), r.ErasedByte)

	ff := newImg(1 << 20)
	ff.fill(0, len(ff), 0xff)
	r = ff.probe(t)
	require.Equal(t, KindErased, r.Kind)
	require.Equal(t, byte(0xff), r.ErasedByte)

	// One byte of data in a sampled area: not erased, just unknown.
	d := newImg(1 << 20)
	d[len(d)/2+7] = 0x42
	r = d.probe(t)
	require.Equal(t, KindDisk, r.Kind)
	require.Nil(t, r.Whole)
	require.Empty(t, r.Table)

	require.Equal(t, KindEmpty, mustProbe(t, nil, 0).Kind)
}

func TestExtVariants(t *testing.T) {
	for _, tc := range []struct {
		name                 string
		compat, incompat, ro uint32
		want                 string
		recovery             bool
	}{
		{"ext2", 0, extIncompatFType, extROSparse | extROLargeFile, "ext2", false},
		{"ext3", extCompatJournal, extIncompatFType, extROSparse | extROLargeFile, "ext3", false},
		{"ext3 dirty", extCompatJournal, extIncompatFType | extIncompatRecov, extROSparse, "ext3", true},
		{"ext4 extents", extCompatJournal, extIncompatFType | extIncompatExtent, extROSparse, "ext4", false},
		{"ext4 no journal", 0, extIncompatFType | extIncompatExtent, extROSparse, "ext4", false},
		{"ext4 huge_file only", extCompatJournal, extIncompatFType, extROHugeFile, "ext4", false},
		{"ext4 dirty", extCompatJournal, extIncompatExtent | extIncompatRecov, 0, "ext4", true},
	} {
		m := newImg(64 << 10)
		m.ext(0, tc.compat, tc.incompat, tc.ro, "lbl")
		r := m.probe(t)
		require.NotNil(t, r.Whole, tc.name)
		require.Equal(t, tc.want, r.Whole.Type, tc.name)
		require.Equal(t, tc.recovery, r.Whole.NeedsRecovery, tc.name)
		require.Equal(t, "lbl", r.Whole.Label, tc.name)
		require.Equal(t, UsageFilesystem, r.Whole.Usage)
	}
}

// Real mkfs output, no root needed: the flags mkfs sets are what we key on.
func TestExtFromMkfs(t *testing.T) {
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		testenv.SkipOrFail(t, "mkfs.ext4 not installed")
	}
	for _, typ := range []string{"ext2", "ext3", "ext4"} {
		p := filepath.Join(t.TempDir(), typ+".img")
		require.NoError(t, os.WriteFile(p, nil, 0o644))
		require.NoError(t, os.Truncate(p, 8<<20))
		out, err := exec.Command("mkfs."+typ, "-q", "-F", "-L", "t"+typ, p).CombinedOutput()
		require.NoError(t, err, string(out))
		f, err := os.Open(p)
		require.NoError(t, err)
		r, err := Probe(f, 8<<20)
		f.Close()
		require.NoError(t, err)
		require.NotNil(t, r.Whole)
		require.Equal(t, typ, r.Whole.Type)
		require.Equal(t, "t"+typ, r.Whole.Label)
		require.Empty(t, r.Table, "an ext filesystem at 0 is no partition table")
	}
}

func TestFATVariants(t *testing.T) {
	// 1.44 MB floppy: 2880 sectors, 1 sector/cluster, 9-sector FATs → FAT12.
	f12 := newImg(2880 * 512)
	f12.fat(0, 2880, 1, 9, false, "FLOPPY     ")
	r := f12.probe(t)
	require.Equal(t, "vfat", r.Whole.Type)
	require.Equal(t, "FAT12", r.Whole.Version)
	require.Equal(t, "FLOPPY", r.Whole.Label)
	require.Equal(t, "1234-ABCD", r.Whole.UUID)
	require.Empty(t, r.Table, "a FAT boot sector's 55AA is not an MBR")

	// 64 MiB with 4-sector clusters → ~32k clusters → FAT16.
	f16 := newImg(1 << 20)
	f16.fat(0, 131072, 4, 128, false, "NO NAME    ")
	r = mustProbe(t, f16, 64<<20)
	require.Equal(t, "FAT16", r.Whole.Version)
	require.Empty(t, r.Whole.Label)

	f32 := newImg(1 << 20)
	f32.fat(0, 1048576, 1, 8192, true, "BIG        ")
	r = mustProbe(t, f32, 512<<20)
	require.Equal(t, "FAT32", r.Whole.Version)
	require.Equal(t, "BIG", r.Whole.Label)

	// GRUB-style boot code starting with a jump but no BPB is not FAT.
	grub := newImg(2 << 20)
	grub.put(0, []byte{0xeb, 0x63, 0x90})
	grub.mbrEntry(0, 0x80, 0x83, 2048, 2048)
	grub.ext(2048*512, 0, extIncompatFType, 0, "")
	r = grub.probe(t)
	require.Nil(t, r.Whole)
	require.Equal(t, "mbr", r.Table)
	require.Equal(t, "ext2", r.Partitions[0].Content.Type)
}

func TestOtherFilesystems(t *testing.T) {
	cases := map[string]func(m img){
		"exfat": func(m img) { m.put(0, []byte{0xeb, 0x76, 0x90}); m.str(3, "EXFAT   ") },
		"ntfs": func(m img) {
			m.put(0, []byte{0xeb, 0x52, 0x90})
			m.str(3, "NTFS    ")
			m.u16le(11, 512)
		},
		"iso9660":  func(m img) { m.iso(0, "CDROM") },
		"udf":      func(m img) { m.udfVRS(0, false) },
		"xfs":      func(m img) { m.str(0, "XFSB"); m.str(108, "xlabel") },
		"btrfs":    func(m img) { m.str(65536+64, "_BHRfS_M") },
		"squashfs": func(m img) { m.str(0, "hsqs"); m.u16le(28, 4) },
		"swap":     func(m img) { m.swap(0) },
		"hfs": func(m img) {
			m.str(1024, "BD")
			m.u32be(1024+0x14, 4096)
			m[1024+0x24] = 5
			m.str(1024+0x25, "MacHD")
		},
		"hfsplus": func(m img) { m.str(1024, "H+"); m.u16be(1026, 4) },
	}
	for want, build := range cases {
		m := newImg(256 << 10)
		build(m)
		r := m.probe(t)
		require.NotNil(t, r.Whole, want)
		require.Equal(t, want, r.Whole.Type)
	}
	// HFS wrapper around HFS+ mounts as hfsplus.
	w := newImg(64 << 10)
	w.str(1024, "BD")
	w.u32be(1024+0x14, 512)
	w.str(1024+0x7c, "H+")
	require.Equal(t, "hfsplus", w.probe(t).Whole.Type)

	// An ISO9660/UDF bridge is UDF with ISO9660 as the alternate.
	b := newImg(128 << 10)
	b.iso(0, "BRIDGE")
	b.udfVRS(0, true)
	r := b.probe(t)
	require.Equal(t, "udf", r.Whole.Type)
	require.Equal(t, []string{"iso9660"}, r.Whole.Alternates)
	require.Equal(t, "BRIDGE", r.Whole.Label)

	iso := newImg(128 << 10)
	iso.iso(0, "PLAIN")
	require.Equal(t, "PLAIN", iso.probe(t).Whole.Label)

	sw := newImg(64 << 10)
	sw.swap(0)
	c := sw.probe(t).Whole
	require.Equal(t, UsageSwap, c.Usage)
	require.Equal(t, "swaplabel", c.Label)
}

func TestRAIDMembers(t *testing.T) {
	for _, tc := range []struct {
		ver string
		off func(size int) int
	}{
		{"1.1", func(int) int { return 0 }},
		{"1.2", func(int) int { return 4096 }},
		{"0.90", func(size int) int { return size&^(64<<10-1) - 64<<10 }},
		{"1.0", func(size int) int { return ((size >> 9) - 16) &^ 7 << 9 }},
	} {
		size := 1<<20 + 7*512
		m := newImg(size)
		o := tc.off(size)
		m.u32le(o, 0xa92b4efc)
		if tc.ver != "0.90" {
			m.u32le(o+4, 1)
			m.str(o+32, "host:md0")
		}
		r := m.probe(t)
		require.NotNil(t, r.Whole, tc.ver)
		require.Equal(t, "linux_raid_member", r.Whole.Type)
		require.Equal(t, UsageRAID, r.Whole.Usage)
		require.Equal(t, tc.ver, r.Whole.Version)
	}
}

func TestLVMMembers(t *testing.T) {
	m := newImg(2 << 20)
	l := 512 // label in sector 1, as pvcreate writes it
	m.str(l, "LABELONE")
	m.u64le(l+8, 1)
	m.u32le(l+20, 32)
	m.str(l+24, "LVM2 001")
	pv := l + 32
	m.str(pv, "abcdefghijklmnopqrstuvwxyzABCDEF")
	m.u64le(pv+32, 2<<20)
	m.u64le(pv+40, 1<<20) // data area at 1 MiB
	m.u64le(pv+48, 0)
	// zero terminator at pv+56..72, then the metadata area at 4096
	m.u64le(pv+72, 4096)
	m.u64le(pv+80, 1<<20-4096)
	mda := 4096
	m.str(mda+4, " LVM2 x[5A%r0N*>")
	m.u32le(mda+20, 1)
	m.u64le(mda+40, 512)
	txt := "archive_vg {\nid = \"x\"\nseqno = 1\n}\n"
	m.u64le(mda+48, uint64(len(txt)))
	m.str(mda+512, txt)
	r := m.probe(t)
	require.Equal(t, "LVM2_member", r.Whole.Type)
	require.Equal(t, UsageLVM, r.Whole.Usage)
	require.Equal(t, "abcdef-ghij-klmn-opqr-stuv-wxyz-ABCDEF", r.Whole.LVM.PVUUID)
	require.Equal(t, "archive_vg", r.Whole.LVM.VGName)
	require.Contains(t, r.Whole.LVM.Metadata, "seqno = 1")

	m1 := newImg(64 << 10)
	m1.str(0, "HM")
	m1.u16le(2, 2)
	m1.str(0x2c, "oldpvuuid")
	m1.str(0xac, "oldvg")
	r = m1.probe(t)
	require.Equal(t, "LVM1_member", r.Whole.Type)
	require.Equal(t, "oldvg", r.Whole.LVM.VGName)
}

func TestMBRExtendedLogical(t *testing.T) {
	const mb = 1 << 20
	m := newImg(16 * mb)
	m.mbrEntry(0, 0x80, 0x83, 2048, 2048) // p1 ext4 at 1 MiB, 1 MiB
	m.mbrEntry(1, 0, 0x82, 4096, 2048)    // p2 swap at 2 MiB
	m.mbrEntry(2, 0, 0x05, 8192, 8*2048)  // p3 extended at 4 MiB, 8 MiB
	m.ext(1*mb, extCompatJournal, extIncompatExtent, 0, "root")
	m.swap(2 * mb)
	ext := 4 * mb
	// logical 5 at ext+1MiB (rel 2048 sectors from its EBR), 1 MiB long;
	// next EBR at ext+3 MiB, logical 6 at ext+4MiB.
	m.ebr(ext, 2048, 2048, 0x83, 6144)
	m.ebr(ext+3*mb, 2048, 2048, 0x83, 0)
	m.ext(ext+1*mb, 0, extIncompatFType, 0, "l5")
	m.ext(ext+4*mb, 0, extIncompatFType, 0, "l6")

	r := m.probe(t)
	require.Equal(t, "mbr", r.Table)
	require.Nil(t, r.Whole)
	nums := []int{}
	for _, p := range r.Partitions {
		nums = append(nums, p.Num)
	}
	require.Equal(t, []int{1, 2, 3, 5, 6}, nums)
	byNum := map[int]Partition{}
	for _, p := range r.Partitions {
		byNum[p.Num] = p
	}
	require.True(t, byNum[1].Bootable)
	require.Equal(t, "ext4", byNum[1].Content.Type)
	require.Equal(t, "swap", byNum[2].Content.Type)
	require.True(t, byNum[3].Extended)
	require.Nil(t, byNum[3].Content)
	require.True(t, byNum[5].Logical)
	require.Equal(t, int64(ext+mb), byNum[5].Start)
	require.Equal(t, "l5", byNum[5].Content.Label)
	require.Equal(t, int64(ext+4*mb), byNum[6].Start)
	require.Equal(t, "ext2", byNum[6].Content.Type)
	require.Equal(t, "l6", byNum[6].Content.Label)
	for _, p := range r.Partitions {
		require.False(t, p.Truncated)
	}
}

func TestMBRChainLoopAndTruncation(t *testing.T) {
	const mb = 1 << 20
	m := newImg(4 * mb)
	m.mbrEntry(0, 0, 0x0f, 2048, 4096)
	m.ebr(mb, 100, 100, 0x83, 0)
	m.mbrEntry(1, 0, 0x83, 6144, 4096) // 3 MiB + 2 MiB: past the 4 MiB end
	r := m.probe(t)
	require.Len(t, r.Partitions, 3)
	for _, p := range r.Partitions {
		require.Equal(t, p.Num == 2, p.Truncated, "partition %d", p.Num)
	}

	// A damaged chain that loops: A → B → C → B.
	l := newImg(8 * mb)
	l.mbrEntry(0, 0, 0x05, 2048, 3*2048)
	l.ebr(mb, 10, 10, 0x83, 2048)
	l.ebr(2*mb, 10, 10, 0x83, 4096)
	l.ebr(3*mb, 10, 10, 0x83, 2048)
	r = l.probe(t)
	require.Len(t, r.Partitions, 4, "extended + three logicals, each once")
	require.Contains(t, r.Notes[0], "loops")

	// A partition starting past the end.
	s := newImg(mb)
	s.mbrEntry(0, 0, 0x83, 2048, 2048)
	s.mbrEntry(1, 0, 0x83, 1<<22, 2048)
	r = s.probe(t)
	for _, p := range r.Partitions {
		require.True(t, p.Truncated, "partition %d", p.Num)
		if p.Num == 2 {
			require.Nil(t, p.Content)
		}
	}
}

func gptImage(size int, parts [][3]any) img {
	m := newImg(size)
	m.mbrEntry(0, 0, 0xee, 1, uint32(size/512-1))
	ents := make([]byte, 128*128)
	for i, p := range parts {
		e := ents[i*128:]
		copy(e, guidBytes(p[0].(string)))
		e[16] = byte(i + 1)
		binary.LittleEndian.PutUint64(e[32:], uint64(p[1].(int)))
		binary.LittleEndian.PutUint64(e[40:], uint64(p[2].(int)))
		for j, c := range "part" {
			binary.LittleEndian.PutUint16(e[56+2*j:], uint16(c))
		}
	}
	m.put(2*512, ents)
	h := make([]byte, 92)
	copy(h, "EFI PART")
	binary.LittleEndian.PutUint32(h[8:], 0x10000)
	binary.LittleEndian.PutUint32(h[12:], 92)
	binary.LittleEndian.PutUint64(h[24:], 1)
	binary.LittleEndian.PutUint64(h[72:], 2)
	binary.LittleEndian.PutUint32(h[80:], 128)
	binary.LittleEndian.PutUint32(h[84:], 128)
	binary.LittleEndian.PutUint32(h[88:], crc32.ChecksumIEEE(ents))
	binary.LittleEndian.PutUint32(h[16:], crc32.ChecksumIEEE(h))
	m.put(512, h)
	return m
}

func guidBytes(s string) []byte {
	var hex []byte
	for i := 0; i < len(s); i++ {
		if s[i] != '-' {
			hex = append(hex, s[i])
		}
	}
	b := make([]byte, 16)
	for i := range b {
		var v byte
		for _, c := range hex[2*i : 2*i+2] {
			v <<= 4
			switch {
			case c >= '0' && c <= '9':
				v |= c - '0'
			default:
				v |= c - 'a' + 10
			}
		}
		b[i] = v
	}
	// mixed endian: first three groups little endian
	b[0], b[1], b[2], b[3] = b[3], b[2], b[1], b[0]
	b[4], b[5] = b[5], b[4]
	b[6], b[7] = b[7], b[6]
	return b
}

func TestGPT(t *testing.T) {
	const mb = 1 << 20
	m := gptImage(8*mb, [][3]any{
		{GUIDLinuxFS, 2048, 4095},
		{GUIDLinuxSwap, 4096, 6143},
		{GUIDLinuxFS, 6144, 20479}, // runs past 8 MiB
	})
	m.ext(mb, extCompatJournal, extIncompatExtent, 0, "g1")
	m.swap(2 * mb)
	r := m.probe(t)
	require.Equal(t, "gpt", r.Table)
	require.Len(t, r.Partitions, 3)
	require.Equal(t, GUIDLinuxFS, r.Partitions[0].Type)
	require.Equal(t, "part", r.Partitions[0].Name)
	require.Equal(t, int64(mb), r.Partitions[0].Start)
	require.Equal(t, int64(mb), r.Partitions[0].Size)
	require.Equal(t, "ext4", r.Partitions[0].Content.Type)
	require.Equal(t, "swap", r.Partitions[1].Content.Type)
	require.True(t, r.Partitions[2].Truncated)
	require.Empty(t, r.Notes)

	// A corrupt primary header with no backup (truncated disk): not GPT; the
	// protective MBR entry is all that remains.
	m[512+20] ^= 0xff
	r = m.probe(t)
	require.Equal(t, "mbr", r.Table)
	require.Equal(t, "0xee", r.Partitions[0].Type)
	require.NotEmpty(t, r.Notes)
}

func TestAPMHybridISO(t *testing.T) {
	m := newImg(1 << 20)
	m.str(0, "ER")
	m.u16be(2, 2048)
	entry := func(i int, start, count uint32, name, typ string) {
		o := i * 2048
		m.str(o, "PM")
		m.u32be(o+4, 2)
		m.u32be(o+8, start)
		m.u32be(o+12, count)
		m.str(o+16, name)
		m.str(o+48, typ)
	}
	entry(1, 1, 2, "Apple", "Apple_partition_map")
	entry(2, 16, 400, "Disc", "Apple_HFS")
	m.iso(0, "HYBRID")
	r := m.probe(t)
	require.Equal(t, "apm", r.Table)
	require.Len(t, r.Partitions, 2)
	require.Equal(t, "Apple_partition_map", r.Partitions[0].Type)
	require.Equal(t, "Apple_HFS", r.Partitions[1].Type)
	require.Equal(t, int64(16*2048), r.Partitions[1].Start)
	require.NotNil(t, r.Whole)
	require.Equal(t, "iso9660", r.Whole.Type)
	require.Equal(t, "HYBRID", r.Whole.Label)

	// APM with 512-byte entries and an HFS volume in partition 2.
	a := newImg(1 << 20)
	a.str(0, "ER")
	a.u16be(2, 512)
	for i, e := range []struct {
		start, n uint32
		typ      string
	}{{1, 63, "Apple_partition_map"}, {64, 1000, "Apple_HFS"}} {
		o := (i + 1) * 512
		a.str(o, "PM")
		a.u32be(o+4, 2)
		a.u32be(o+8, e.start)
		a.u32be(o+12, e.n)
		a.str(o+48, e.typ)
	}
	a.str(64*512+1024, "H+")
	a.u16be(64*512+1026, 4)
	r = a.probe(t)
	require.Equal(t, "apm", r.Table)
	require.Nil(t, r.Whole)
	require.Equal(t, "hfsplus", r.Partitions[1].Content.Type)
}

// A hybrid disc mastered without a partition map (genisoimage -hfs): the
// HFS master directory block sits at byte 1024 of the disc, in the ISO
// 9660 system area. The whole disc is ISO 9660 and Hybrid is its HFS side;
// an HFS signature beside no optical filesystem is the whole disk itself,
// and a plain CD has no Hybrid.
func TestHybridHFSWithoutMap(t *testing.T) {
	hfsMDB := func(m img) {
		m.str(1024, "BD")
		m.u32be(1024+0x14, 2048)
		m[1024+0x24] = 6
		m.str(1024+0x25, "HYBRID")
	}
	m := newImg(128 << 10)
	m.iso(0, "HYBRID")
	hfsMDB(m)
	r := m.probe(t)
	require.Equal(t, "iso9660", r.Whole.Type)
	require.NotNil(t, r.Hybrid)
	require.Equal(t, "hfs", r.Hybrid.Type)
	require.Equal(t, "HYBRID", r.Hybrid.Label)
	require.Empty(t, r.Table)

	b := newImg(128 << 10)
	b.iso(0, "BRIDGE")
	b.udfVRS(0, true)
	hfsMDB(b)
	r = b.probe(t)
	require.Equal(t, "udf", r.Whole.Type)
	require.Equal(t, "hfs", r.Hybrid.Type, "a UDF bridge disc can carry an HFS side too")

	h := newImg(128 << 10)
	hfsMDB(h)
	r = h.probe(t)
	require.Equal(t, "hfs", r.Whole.Type)
	require.Nil(t, r.Hybrid)

	c := newImg(128 << 10)
	c.iso(0, "PLAIN")
	require.Nil(t, c.probe(t).Hybrid)
}

func TestFilesystemAt16384(t *testing.T) {
	// Zip disks: the filesystem begins at byte 16384 with nothing at 0.
	m := newImg(2 << 20)
	m.fat(16384, 4000, 1, 12, false, "ZIPDISK    ")
	r := m.probe(t)
	require.Nil(t, r.Whole)
	require.Equal(t, KindDisk, r.Kind)
	c, err := Identify(bytes.NewReader(m), 16384, int64(len(m)-16384))
	require.NoError(t, err)
	require.Equal(t, "vfat", c.Type)
	require.Equal(t, "ZIPDISK", c.Label)
	require.Equal(t, "vfat", m.identify(16384).Type)
}

type failingReader struct{}

func (failingReader) ReadAt([]byte, int64) (int, error) { return 0, os.ErrPermission }

func TestReadErrorIsReturned(t *testing.T) {
	_, err := Probe(failingReader{}, 1<<20)
	require.ErrorIs(t, err, os.ErrPermission)
}
