package probe

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"strings"
	"unicode/utf16"
)

const sector = 512

var (
	le = binary.LittleEndian
	be = binary.BigEndian
)

// maxLogical bounds the EBR chain walk: a damaged chain may loop.
const maxLogical = 128

// probeMBR parses a DOS partition table with its extended chain.
func probeMBR(rd *reader, res *Result) bool {
	b := rd.at(0, sector)
	if b == nil || b[510] != 0x55 || b[511] != 0xaa {
		return false
	}
	type ent struct {
		boot, typ  byte
		start, cnt uint32
	}
	var ents [4]ent
	any := false
	for i := range ents {
		e := b[446+16*i : 446+16*(i+1)]
		if e[0] != 0 && e[0] != 0x80 {
			return false // boot flag must be 0x00 or 0x80: not a table
		}
		ents[i] = ent{e[0], e[4], le.Uint32(e[8:]), le.Uint32(e[12:])}
		if e[4] != 0 {
			if ents[i].start == 0 || ents[i].cnt == 0 {
				return false
			}
			any = true
		}
	}
	if !any {
		return false
	}
	res.Table = "mbr"
	for i, e := range ents {
		if e.typ == 0 {
			continue
		}
		p := Partition{
			Num:      i + 1,
			Start:    int64(e.start) * sector,
			Size:     int64(e.cnt) * sector,
			Type:     fmt.Sprintf("0x%02x", e.typ),
			Bootable: e.boot == 0x80,
			Extended: isExtended(e.typ),
		}
		res.Partitions = append(res.Partitions, p)
	}
	// Logical partitions follow the primaries, numbered from 5.
	for _, p := range res.Partitions {
		if p.Extended {
			walkEBR(rd, res, p.Start)
			break // the kernel follows only the first extended container
		}
	}
	return true
}

func isExtended(t byte) bool { return t == 0x05 || t == 0x0f || t == 0x85 }

// walkEBR follows the chain of extended boot records. Each EBR holds the
// logical partition (start relative to this EBR) and a link to the next EBR
// (start relative to the extended container).
func walkEBR(rd *reader, res *Result, extStart int64) {
	num := 5
	cur := extStart
	seen := map[int64]bool{}
	for i := 0; i < maxLogical; i++ {
		if seen[cur] {
			res.Notes = append(res.Notes, fmt.Sprintf("extended partition chain loops at byte %d", cur))
			return
		}
		seen[cur] = true
		b := rd.at(cur, sector)
		if b == nil {
			res.Notes = append(res.Notes, fmt.Sprintf("extended boot record at byte %d is past the end of the image", cur))
			return
		}
		if b[510] != 0x55 || b[511] != 0xaa {
			res.Notes = append(res.Notes, fmt.Sprintf("extended boot record at byte %d has no 55AA signature", cur))
			return
		}
		e1, e2 := b[446:462], b[462:478]
		if t := e1[4]; t != 0 && !isExtended(t) && le.Uint32(e1[12:]) != 0 {
			res.Partitions = append(res.Partitions, Partition{
				Num:      num,
				Start:    cur + int64(le.Uint32(e1[8:]))*sector,
				Size:     int64(le.Uint32(e1[12:])) * sector,
				Type:     fmt.Sprintf("0x%02x", t),
				Bootable: e1[0] == 0x80,
				Logical:  true,
			})
			num++
		}
		if !isExtended(e2[4]) || le.Uint32(e2[8:]) == 0 {
			return
		}
		cur = extStart + int64(le.Uint32(e2[8:]))*sector
	}
	res.Notes = append(res.Notes, fmt.Sprintf("more than %d logical partitions; stopped", maxLogical))
}

// probeGPT finds a GPT header at LBA 1 for 512- or 4096-byte sectors,
// falling back to the backup header at the last LBA when the primary's
// checksum is wrong.
func probeGPT(rd *reader, res *Result) bool {
	for _, ss := range []int64{512, 4096} {
		h := gptHeader(rd, ss, ss)
		if h == nil && rd.size >= 2*ss {
			if b := rd.at(ss, 8); b != nil && string(b) == "EFI PART" {
				res.Notes = append(res.Notes, "primary GPT header checksum is wrong; using the backup")
			}
			h = gptHeader(rd, (rd.size/ss-1)*ss, ss)
		}
		if h == nil {
			continue
		}
		entLBA := int64(le.Uint64(h[72:]))
		n := int64(le.Uint32(h[80:]))
		esz := int64(le.Uint32(h[84:]))
		if esz < 128 || n > 4096 {
			continue
		}
		res.Table = "gpt"
		ents := rd.at(entLBA*ss, int(n*esz))
		if ents == nil {
			res.Notes = append(res.Notes, "GPT partition entries are past the end of the image")
			return true
		}
		if crc32.ChecksumIEEE(ents) != le.Uint32(h[88:]) {
			res.Notes = append(res.Notes, "GPT partition entry array checksum is wrong")
		}
		for i := int64(0); i < n; i++ {
			e := ents[i*esz : (i+1)*esz]
			if allZero(e[:16]) {
				continue
			}
			first, last := int64(le.Uint64(e[32:])), int64(le.Uint64(e[40:]))
			if last < first {
				res.Notes = append(res.Notes, fmt.Sprintf("GPT entry %d ends before it starts", i+1))
				continue
			}
			res.Partitions = append(res.Partitions, Partition{
				Num:   int(i) + 1,
				Start: first * ss,
				Size:  (last - first + 1) * ss,
				Type:  guid(e[:16]),
				Name:  utf16z(e[56:128]),
			})
		}
		return true
	}
	return false
}

// gptHeader returns the header at off if its signature and CRC are right.
func gptHeader(rd *reader, off, ss int64) []byte {
	h := rd.at(off, int(ss))
	if h == nil || string(h[:8]) != "EFI PART" {
		return nil
	}
	hs := le.Uint32(h[12:])
	if hs < 92 || int64(hs) > ss {
		return nil
	}
	c := make([]byte, hs)
	copy(c, h[:hs])
	le.PutUint32(c[16:], 0)
	if crc32.ChecksumIEEE(c) != le.Uint32(h[16:]) {
		return nil
	}
	return h
}

// guid formats a mixed-endian GPT GUID the way gdisk and blkid print it.
func guid(b []byte) string {
	return fmt.Sprintf("%08x-%04x-%04x-%x-%x",
		le.Uint32(b[0:]), le.Uint16(b[4:]), le.Uint16(b[6:]), b[8:10], b[10:16])
}

func utf16z(b []byte) string {
	u := make([]uint16, 0, len(b)/2)
	for i := 0; i+1 < len(b); i += 2 {
		c := le.Uint16(b[i:])
		if c == 0 {
			break
		}
		u = append(u, c)
	}
	return string(utf16.Decode(u))
}

// probeAPM parses an Apple Partition Map: a driver descriptor ("ER") at
// block 0 and map entries ("PM") from block 1. Entries sit at multiples of
// the descriptor's block size (2048 on many CDs); when none is found there,
// 512 is tried, as on most hybrids.
func probeAPM(rd *reader, res *Result) bool {
	b := rd.at(0, sector)
	if b == nil || string(b[:2]) != "ER" {
		return false
	}
	sizes := []int64{int64(be.Uint16(b[2:]))}
	if sizes[0] != 512 {
		sizes = append(sizes, 512)
	}
	for _, bs := range sizes {
		if bs < 512 || bs > 65536 {
			continue
		}
		e := rd.at(bs, sector)
		if e == nil || string(e[:2]) != "PM" {
			continue
		}
		count := int64(be.Uint32(e[4:]))
		if count == 0 || count > 256 {
			continue
		}
		res.Table = "apm"
		for i := int64(1); i <= count; i++ {
			e := rd.at(i*bs, sector)
			if e == nil || string(e[:2]) != "PM" {
				res.Notes = append(res.Notes, fmt.Sprintf("APM entry %d missing", i))
				break
			}
			res.Partitions = append(res.Partitions, Partition{
				Num:   int(i),
				Start: int64(be.Uint32(e[8:])) * bs,
				Size:  int64(be.Uint32(e[12:])) * bs,
				Name:  cstr(e[16:48]),
				Type:  cstr(e[48:80]),
			})
		}
		return true
	}
	return false
}

func cstr(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return strings.TrimRight(string(b), " ")
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// Well-known GPT partition type GUIDs, for reasons in layouts.
const (
	GUIDLinuxSwap = "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f"
	GUIDLinuxRAID = "a19d880f-05fc-4d3b-a006-743f0f84911e"
	GUIDLinuxLVM  = "e6d6d379-f507-44c2-a23c-238f2a3df928"
	GUIDLinuxFS   = "0fc63daf-8483-4772-8e79-3d69d8477de4"
	GUIDBasicData = "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7"
	GUIDEFI       = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
)
