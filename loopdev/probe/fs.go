package probe

import (
	"bytes"
	"fmt"
	"strings"
)

// identify runs every content probe at off (length size) and returns the
// first match. Order matters where signatures can coexist: RAID and LVM
// members first (their payload may itself look like a filesystem), then
// filesystems whose magic is at a fixed spot, then the FAT family whose
// boot sector check is the loosest.
func identify(rd *reader, off, size int64) *Content {
	sub := &reader{r: sectionAt{rd, off}, size: size}
	defer func() {
		if sub.err != nil && rd.err == nil {
			rd.err = sub.err
		}
	}()
	for _, f := range []func(*reader) *Content{
		probeRAID, probeLVM2, probeLVM1,
		probeOptical, probeExt, probeXFS, probeBtrfs, probeSquashfs,
		probeHFS, probeNTFS, probeExFAT, probeFAT, probeSwap,
	} {
		if c := f(sub); c != nil {
			return c
		}
	}
	return nil
}

// sectionAt shifts reads of a reader by a base offset.
type sectionAt struct {
	rd  *reader
	off int64
}

func (s sectionAt) ReadAt(p []byte, off int64) (int, error) {
	return s.rd.r.ReadAt(p, s.off+off)
}

func fsc(typ string) *Content { return &Content{Type: typ, Usage: UsageFilesystem} }

// ext2/3/4: superblock at 1024, magic 0xEF53 at 0x38. Told apart like
// blkid: a journal makes ext3 unless features beyond ext3's set are on
// (extents, 64bit, flex_bg, huge_file, metadata_csum …), which make ext4.
func probeExt(rd *reader) *Content {
	sb := rd.at(1024, 1024)
	if sb == nil || le.Uint16(sb[0x38:]) != 0xef53 {
		return nil
	}
	compat := le.Uint32(sb[0x5c:])
	incompat := le.Uint32(sb[0x60:])
	roCompat := le.Uint32(sb[0x64:])
	const (
		compatHasJournal = 0x4
		incompatRecover  = 0x4
		incompatJDev     = 0x8
		// What ext2 and ext3 know; anything else is ext4.
		ext3Incompat = 0x2 | 0x4 | 0x10 // filetype, recover, meta_bg
		ext3RO       = 0x1 | 0x2 | 0x4  // sparse_super, large_file, btree_dir
	)
	if incompat&incompatJDev != 0 {
		c := &Content{Type: "jbd", Usage: UsageFilesystem}
		return c
	}
	var c *Content
	switch {
	case incompat&^ext3Incompat != 0 || roCompat&^ext3RO != 0:
		c = fsc("ext4")
	case compat&compatHasJournal != 0:
		c = fsc("ext3")
	default:
		c = fsc("ext2")
	}
	c.UUID = uuid(sb[0x68:0x78])
	c.Label = cstr(sb[0x78:0x88])
	c.NeedsRecovery = incompat&incompatRecover != 0
	return c
}

// probeXFS: "XFSB" at 0.
func probeXFS(rd *reader) *Content {
	b := rd.at(0, 512)
	if b == nil || string(b[:4]) != "XFSB" {
		return nil
	}
	c := fsc("xfs")
	c.UUID = uuid(b[32:48])
	c.Label = cstr(b[108:120])
	return c
}

// probeBtrfs: "_BHRfS_M" at 64 KiB + 64.
func probeBtrfs(rd *reader) *Content {
	b := rd.at(65536, 4096)
	if b == nil || string(b[64:72]) != "_BHRfS_M" {
		return nil
	}
	c := fsc("btrfs")
	c.UUID = uuid(b[32:48])
	c.Label = cstr(b[0x12b : 0x12b+256])
	return c
}

// probeSquashfs: "hsqs" (little endian) or "sqsh" at 0.
func probeSquashfs(rd *reader) *Content {
	b := rd.at(0, 96)
	if b == nil {
		return nil
	}
	switch string(b[:4]) {
	case "hsqs":
		c := fsc("squashfs")
		c.Version = fmt.Sprintf("%d.%d", le.Uint16(b[28:]), le.Uint16(b[30:]))
		return c
	case "sqsh":
		c := fsc("squashfs")
		c.Version = fmt.Sprintf("%d.%d", be.Uint16(b[28:]), be.Uint16(b[30:]))
		return c
	}
	return nil
}

// probeHFS: the volume header at 1024 is "BD" (HFS), "H+" (HFS+) or "HX"
// (HFSX). An HFS wrapper embedding an HFS+ volume ("H+" at drEmbedSigWord)
// is reported as hfsplus, as the kernel mounts the embedded volume.
func probeHFS(rd *reader) *Content {
	b := rd.at(1024, 512)
	if b == nil {
		return nil
	}
	switch string(b[:2]) {
	case "BD":
		// drNmAlBlks, drAlBlkSiz must be sane to rule out random "BD".
		if be.Uint32(b[0x14:]) == 0 || be.Uint32(b[0x14:])%512 != 0 {
			return nil
		}
		if string(b[0x7c:0x7e]) == "H+" {
			return fsc("hfsplus")
		}
		c := fsc("hfs")
		if n := int(b[0x24]); n > 0 && n <= 27 {
			c.Label = string(b[0x25 : 0x25+n])
		}
		return c
	case "H+", "HX":
		v := be.Uint16(b[2:])
		if v != 4 && v != 5 {
			return nil
		}
		return fsc("hfsplus")
	}
	return nil
}

// probeNTFS: OEM id "NTFS    " at 3 and a sane bytes-per-sector.
func probeNTFS(rd *reader) *Content {
	b := rd.at(0, 512)
	if b == nil || string(b[3:11]) != "NTFS    " {
		return nil
	}
	if bps := le.Uint16(b[11:]); bps < 256 || bps > 4096 || bps&(bps-1) != 0 {
		return nil
	}
	c := fsc("ntfs")
	c.UUID = fmt.Sprintf("%016X", le.Uint64(b[0x48:]))
	return c
}

// probeExFAT: "EXFAT   " at 3.
func probeExFAT(rd *reader) *Content {
	b := rd.at(0, 512)
	if b == nil || string(b[3:11]) != "EXFAT   " {
		return nil
	}
	c := fsc("exfat")
	c.UUID = fmt.Sprintf("%04X-%04X", le.Uint16(b[0x66:]), le.Uint16(b[0x64:]))
	return c
}

// probeFAT checks a BIOS parameter block strictly (so MBR boot code is not
// taken for one) and tells FAT12/16/32 apart by the cluster count, as the
// FAT specification defines them.
func probeFAT(rd *reader) *Content {
	b := rd.at(0, 512)
	if b == nil {
		return nil
	}
	if b[0] != 0xeb && b[0] != 0xe9 { // x86 jump to the boot code
		return nil
	}
	bps := int64(le.Uint16(b[11:]))
	spc := int64(b[13])
	reserved := int64(le.Uint16(b[14:]))
	nfats := int64(b[16])
	rootEnts := int64(le.Uint16(b[17:]))
	total := int64(le.Uint16(b[19:]))
	media := b[21]
	fatSz := int64(le.Uint16(b[22:]))
	if bps < 512 || bps > 4096 || bps&(bps-1) != 0 || spc == 0 || spc&(spc-1) != 0 ||
		reserved == 0 || nfats < 1 || nfats > 2 || !(media == 0xf0 || media >= 0xf8) {
		return nil
	}
	if total == 0 {
		total = int64(le.Uint32(b[32:]))
	}
	fat32 := fatSz == 0
	if fat32 {
		fatSz = int64(le.Uint32(b[36:]))
	}
	if total == 0 || fatSz == 0 {
		return nil
	}
	rootSecs := (rootEnts*32 + bps - 1) / bps
	data := total - reserved - nfats*fatSz - rootSecs
	if data <= 0 {
		return nil
	}
	clusters := data / spc
	c := fsc("vfat")
	ext := b[36:]
	switch {
	case fat32: // no 16-bit FAT size: the FAT32 BPB layout
		c.Version = "FAT32"
		ext = b[64:]
	case clusters < 4085:
		c.Version = "FAT12"
	default:
		c.Version = "FAT16"
	}
	if ext[2] == 0x29 { // extended boot signature: serial and label present
		c.UUID = fmt.Sprintf("%04X-%04X", le.Uint16(ext[5:]), le.Uint16(ext[3:]))
		if l := strings.TrimRight(string(ext[7:18]), " "); l != "NO NAME" {
			c.Label = l
		}
	}
	return c
}

// probeOptical reads the ISO9660/ECMA-167 volume recognition sequence from
// byte 32768 in 2048-byte descriptors. "CD001" is ISO9660 (the primary
// volume descriptor has type 1); "BEA01"…"NSR02"/"NSR03" is UDF. A disc with
// both is a bridge: UDF first, ISO9660 as the alternate.
func probeOptical(rd *reader) *Content {
	iso, udf := false, false
	label := ""
	for i := int64(0); i < 64; i++ {
		d := rd.at(32768+i*2048, 2048)
		if d == nil {
			break
		}
		id := string(d[1:6])
		switch {
		case id == "CD001":
			if d[0] == 1 && label == "" {
				label = cstr(d[40:72])
			}
			iso = true
		case id == "BEA01" || id == "TEA01" || id == "BOOT2" || id == "CDW02":
		case id == "NSR02" || id == "NSR03":
			udf = true
		default:
			i = 64 // end of the recognition sequence
		}
	}
	switch {
	case udf:
		c := fsc("udf")
		c.Label = label
		if iso {
			c.Alternates = []string{"iso9660"}
		}
		return c
	case iso:
		c := fsc("iso9660")
		c.Label = label
		return c
	}
	return nil
}

// probeSwap: "SWAPSPACE2"/"SWAP-SPACE" (or a hibernation image signature)
// in the last 10 bytes of the first page, for the usual page sizes.
func probeSwap(rd *reader) *Content {
	for _, ps := range []int64{4096, 8192, 16384, 65536} {
		b := rd.at(ps-10, 10)
		if b == nil {
			return nil
		}
		s := string(b)
		switch {
		case s == "SWAPSPACE2" || s == "SWAP-SPACE":
			c := &Content{Type: "swap", Usage: UsageSwap}
			if s == "SWAPSPACE2" {
				c.Version = "1"
				if h := rd.at(1024, 1024); h != nil {
					c.UUID = uuid(h[12:28])
					c.Label = cstr(h[28:44])
				}
			}
			return c
		case strings.HasPrefix(s, "S1SUSPEND") || strings.HasPrefix(s, "S2SUSPEND") ||
			strings.HasPrefix(s, "ULSUSPEND") || strings.HasPrefix(s, "LINHIB0001"):
			return &Content{Type: "swsuspend", Usage: UsageSwap}
		}
	}
	return nil
}

// probeRAID finds an md superblock: v1.1 at 0, v1.2 at 4096, v0.90 in the
// last 64 KiB-aligned 64 KiB, v1.0 8 KiB from the end (4 KiB aligned).
func probeRAID(rd *reader) *Content {
	const magic = 0xa92b4efc
	check := func(off int64, v string) *Content {
		b := rd.at(off, 256)
		if b == nil || le.Uint32(b) != magic {
			return nil
		}
		c := &Content{Type: "linux_raid_member", Usage: UsageRAID, Version: v}
		if v != "0.90" {
			c.UUID = uuid(b[16:32])
			c.Label = cstr(b[32:64])
		} else if le.Uint32(b[4:]) != 0 {
			c.Version = fmt.Sprintf("%d.%d", le.Uint32(b[4:]), le.Uint32(b[8:]))
		}
		return c
	}
	if c := check(0, "1.1"); c != nil {
		return c
	}
	if c := check(4096, "1.2"); c != nil {
		return c
	}
	size := rd.size
	if size >= 128<<10 {
		if c := check((size&^(64<<10-1))-64<<10, "0.90"); c != nil {
			return c
		}
	}
	if size >= 12<<10 {
		if c := check(((size>>9)-16)&^7<<9, "1.0"); c != nil {
			return c
		}
	}
	return nil
}

// probeLVM2 finds "LABELONE" in one of the first four sectors with type
// "LVM2 001", then reads the PV header and the first metadata area's text
// to record the PV UUID and the volume group name.
func probeLVM2(rd *reader) *Content {
	for s := int64(0); s < 4; s++ {
		l := rd.at(s*sector, sector)
		if l == nil {
			return nil
		}
		if string(l[:8]) != "LABELONE" || string(l[24:32]) != "LVM2 001" {
			continue
		}
		c := &Content{Type: "LVM2_member", Usage: UsageLVM, Version: "LVM2 001", LVM: &LVM{}}
		pvOff := int64(le.Uint32(l[20:]))
		if pvOff < 32 || pvOff+40 > sector {
			return c
		}
		pv := l[pvOff:]
		c.LVM.PVUUID = lvmUUID(pv[:32])
		c.UUID = c.LVM.PVUUID
		// Data area list, then metadata area list, each ended by a zero entry.
		p := pv[40:]
		skipList := func() bool {
			for len(p) >= 16 {
				o := le.Uint64(p)
				p = p[16:]
				if o == 0 {
					return true
				}
			}
			return false
		}
		if !skipList() || len(p) < 16 {
			return c
		}
		mdaOff := int64(le.Uint64(p))
		if mdaOff == 0 {
			return c
		}
		h := rd.at(mdaOff, 512)
		if h == nil || string(h[4:20]) != " LVM2 x[5A%r0N*>" {
			return c
		}
		txtOff := int64(le.Uint64(h[40:]))
		txtLen := int64(le.Uint64(h[48:]))
		if txtOff == 0 || txtLen == 0 {
			return c
		}
		if txtLen > 4096 {
			txtLen = 4096
		}
		t := rd.at(mdaOff+txtOff, int(txtLen))
		if t == nil {
			return c
		}
		t = bytes.TrimRight(t, "\x00")
		c.LVM.Metadata = string(t)
		if i := bytes.Index(t, []byte(" {")); i > 0 {
			name := string(bytes.TrimSpace(t[:i]))
			if !strings.ContainsAny(name, "\n#") {
				c.LVM.VGName = name
				c.Label = name
			}
		}
		return c
	}
	return nil
}

// lvmUUID prints LVM's 32-character id in its 6-4-4-4-4-4-6 grouping.
func lvmUUID(b []byte) string {
	s := string(b)
	if len(s) != 32 {
		return s
	}
	return s[0:6] + "-" + s[6:10] + "-" + s[10:14] + "-" + s[14:18] + "-" + s[18:22] + "-" + s[22:26] + "-" + s[26:32]
}

// probeLVM1: "HM" at 0 with version 1 or 2 (as blkid).
func probeLVM1(rd *reader) *Content {
	b := rd.at(0, 512)
	if b == nil || string(b[:2]) != "HM" {
		return nil
	}
	v := le.Uint16(b[2:])
	if v != 1 && v != 2 {
		return nil
	}
	c := &Content{Type: "LVM1_member", Usage: UsageLVM, Version: fmt.Sprint(v), LVM: &LVM{}}
	// pv_uuid at 0x2c (128 bytes), vg_name at 0xac (128 bytes).
	c.LVM.PVUUID = cstr(b[0x2c : 0x2c+128])
	c.LVM.VGName = cstr(b[0xac : 0xac+128])
	c.UUID, c.Label = c.LVM.PVUUID, c.LVM.VGName
	return c
}

func uuid(b []byte) string {
	if allZero(b) {
		return ""
	}
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
