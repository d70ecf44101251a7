package ntfs

import "fmt"

// LZNT1 is the compression of NTFS's compressed files: a compression unit
// (16 clusters) is stored as a sequence of chunks, each the compressed form
// of up to 4096 bytes. A chunk starts with a 16-bit header: bits 0–11 are
// its length minus 3 (header included), bit 15 says it is compressed. An
// uncompressed chunk holds its 4096 bytes as they are. A compressed chunk
// is groups of a flag byte and eight tokens: a literal byte (flag bit 0) or
// a 16-bit back-reference (bit 1) whose split between offset and length
// depends on how far into the chunk it stands. A header of 0 ends the unit.

// chunkSize is the uncompressed size of one LZNT1 chunk.
const chunkSize = 4096

// DecompressLZNT1 decodes src, the stored clusters of one compression unit,
// into dst (the unit's size) and returns how many bytes it produced: chunk
// i fills dst[4096·i:], a chunk that decodes to fewer than 4096 bytes is
// followed by zeros up to its 4096, and what the chunks do not reach is
// left as it is. It never reads or writes outside src and dst; a chunk
// whose length, back-reference or output does not fit is an error naming
// its position in src.
func DecompressLZNT1(dst, src []byte) (int, error) {
	out := 0
	for p := 0; p+2 <= len(src); {
		h := int(src[p]) | int(src[p+1])<<8
		if h == 0 {
			break
		}
		size := h&0x0FFF + 3
		if p+size > len(src) {
			return out, fmt.Errorf("LZNT1 chunk at byte %d: %d bytes, past the %d stored", p, size, len(src))
		}
		if out >= len(dst) {
			return out, fmt.Errorf("LZNT1 chunk at byte %d: past the %d-byte unit", p, len(dst))
		}
		chunk := src[p+2 : p+size]
		end := min(out+chunkSize, len(dst))
		if h&0x8000 == 0 {
			if len(chunk) > end-out {
				return out, fmt.Errorf("LZNT1 chunk at byte %d: %d uncompressed bytes, more than %d", p, len(chunk), chunkSize)
			}
			copy(dst[out:], chunk)
			clear(dst[out+len(chunk) : end])
			out = end
			p += size
			continue
		}
		n, err := decodeChunk(dst[out:end], chunk)
		if err != nil {
			return out, fmt.Errorf("LZNT1 chunk at byte %d: %w", p, err)
		}
		clear(dst[out+n : end])
		out = end
		p += size
	}
	return out, nil
}

// decodeChunk decodes one compressed chunk into dst (at most 4096 bytes).
func decodeChunk(dst, src []byte) (int, error) {
	o := 0
	for p := 0; p < len(src); {
		flags := src[p]
		p++
		for bit := 0; bit < 8 && p < len(src); bit++ {
			if flags&(1<<bit) == 0 {
				if o >= len(dst) {
					return o, fmt.Errorf("a literal past %d bytes", len(dst))
				}
				dst[o] = src[p]
				o++
				p++
				continue
			}
			if p+2 > len(src) {
				return o, fmt.Errorf("a back-reference cut off at byte %d", p)
			}
			tok := int(src[p]) | int(src[p+1])<<8
			p += 2
			// The further into the chunk, the more bits the offset takes:
			// 4 bits up to position 16, one more at each doubling.
			lenBits := 12
			for i := o - 1; i >= 0x10; i >>= 1 {
				lenBits--
			}
			length := tok&(1<<lenBits-1) + 3
			back := tok>>lenBits + 1
			if back > o {
				return o, fmt.Errorf("a back-reference %d bytes back at output byte %d", back, o)
			}
			if o+length > len(dst) {
				return o, fmt.Errorf("a back-reference of %d bytes past %d", length, len(dst))
			}
			for i := 0; i < length; i++ { // may overlap itself: byte by byte
				dst[o] = dst[o-back]
				o++
			}
		}
	}
	return o, nil
}
