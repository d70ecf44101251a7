package testimg

import (
	"fmt"
	"unicode/utf16"
	"unicode/utf8"
)

// hfsPlusName converts a UTF-8 name to the UTF-16 units HFS+ stores, as
// given (no normalization: the spec must say NFD if it means NFD). A name
// holds 1..255 units.
func hfsPlusName(name string) ([]uint16, error) {
	if !utf8.ValidString(name) {
		return nil, fmt.Errorf("name %q is not UTF-8 (HFS+ stores Unicode)", name)
	}
	u := utf16.Encode([]rune(name))
	if len(u) == 0 || len(u) > 255 {
		return nil, fmt.Errorf("name %q is %d UTF-16 units (1..255)", name, len(u))
	}
	return u, nil
}

// hfsPlusFold is TN1150's case folding (gLowerCaseTable) for
// FastUnicodeCompare, written as the ranges the table maps: NUL sorts last
// (0xFFFF), the ignorable format characters fold to 0 and are skipped,
// uppercase letters without a canonical decomposition (decomposed names
// never hold the precomposed ones) fold to lowercase; everything else is
// itself.
func hfsPlusFold(c uint16) uint16 {
	switch {
	case c == 0:
		return 0xFFFF
	case c >= 'A' && c <= 'Z':
		return c + 0x20
	case c < 0x80:
		return c
	case c == 0xC6 || c == 0xD0 || c == 0xD8 || c == 0xDE:
		return c + 0x20
	case c >= 0x100 && c < 0x200:
		if l, ok := latinExtFold[c]; ok {
			return l
		}
	case c >= 0x391 && c <= 0x3A9 && c != 0x3A2:
		return c + 0x20
	case c >= 0x3E2 && c <= 0x3EE && c%2 == 0:
		return c + 1
	case c == 0x402 || c >= 0x404 && c <= 0x406 || c >= 0x408 && c <= 0x40B || c == 0x40F:
		return c + 0x50
	case c >= 0x410 && c <= 0x42F:
		return c + 0x20
	case c >= 0x460 && c <= 0x480 && c%2 == 0 && c != 0x476,
		c >= 0x490 && c <= 0x4BE && c%2 == 0:
		return c + 1
	case c == 0x4C3 || c == 0x4C7 || c == 0x4CB:
		return c + 1
	case c >= 0x531 && c <= 0x556:
		return c + 0x30
	case c >= 0x10A0 && c <= 0x10C5:
		return c + 0x30
	case c >= 0x200C && c <= 0x200F, c >= 0x202A && c <= 0x202E, c >= 0x206A && c <= 0x206F, c == 0xFEFF:
		return 0
	case c >= 0x2160 && c <= 0x216F:
		return c + 0x10
	case c >= 0xFF21 && c <= 0xFF3A:
		return c + 0x20
	}
	return c
}

// latinExtFold: Latin Extended-A/B capitals TN1150 folds (those without a
// canonical decomposition).
var latinExtFold = map[uint16]uint16{
	0x110: 0x111, 0x126: 0x127, 0x132: 0x133, 0x13F: 0x140, 0x141: 0x142,
	0x14A: 0x14B, 0x152: 0x153, 0x166: 0x167, 0x181: 0x253, 0x182: 0x183,
	0x184: 0x185, 0x186: 0x254, 0x187: 0x188, 0x189: 0x256, 0x18A: 0x257,
	0x18B: 0x18C, 0x18E: 0x1DD, 0x18F: 0x259, 0x190: 0x25B, 0x191: 0x192,
	0x193: 0x260, 0x194: 0x263, 0x196: 0x269, 0x197: 0x268, 0x198: 0x199,
	0x19C: 0x26F, 0x19D: 0x272, 0x19F: 0x275, 0x1A2: 0x1A3, 0x1A4: 0x1A5,
	0x1A7: 0x1A8, 0x1A9: 0x283, 0x1AC: 0x1AD, 0x1AE: 0x288, 0x1B1: 0x28A,
	0x1B2: 0x28B, 0x1B3: 0x1B4, 0x1B5: 0x1B6, 0x1B7: 0x292, 0x1B8: 0x1B9,
	0x1BC: 0x1BD, 0x1C4: 0x1C6, 0x1C5: 0x1C6, 0x1C7: 0x1C9, 0x1C8: 0x1C9,
	0x1CA: 0x1CC, 0x1CB: 0x1CC, 0x1E4: 0x1E5, 0x1F1: 0x1F3, 0x1F2: 0x1F3,
}

// hfsPlusCompareFolded is TN1150's FastUnicodeCompare: ignorable
// characters skipped, the rest compared folded.
func hfsPlusCompareFolded(a, b []uint16) int {
	for {
		var c1, c2 uint16
		for len(a) > 0 && c1 == 0 {
			c1 = hfsPlusFold(a[0])
			a = a[1:]
		}
		for len(b) > 0 && c2 == 0 {
			c2 = hfsPlusFold(b[0])
			b = b[1:]
		}
		if c1 != c2 {
			if c1 < c2 {
				return -1
			}
			return 1
		}
		if c1 == 0 {
			return 0
		}
	}
}

// hfsPlusCompareBinary is HFSX's kHFSBinaryCompare: unit by unit, a prefix
// first.
func hfsPlusCompareBinary(a, b []uint16) int {
	for i := 0; i < len(a) && i < len(b); i++ {
		if a[i] != b[i] {
			if a[i] < b[i] {
				return -1
			}
			return 1
		}
	}
	switch {
	case len(a) < len(b):
		return -1
	case len(a) > len(b):
		return 1
	}
	return 0
}
