package hfs

import (
	"strconv"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/HRDAG/ntt/imagefs/hfs/macroman"
)

// DecodeName turns an HFS name (MacRoman bytes, at most 31) into the UTF-8
// name of an entry: '/' becomes ':' as Linux's hfs driver shows it (HFS's
// own separator is ':', so a Mac name may hold '/'), NUL becomes U+2400
// SYMBOL FOR NULL. It reports whether it had to change something other than
// the MacRoman decoding ('/' or NUL).
func DecodeName(raw []byte) (name []byte, changed bool) {
	out := make([]byte, 0, len(raw)*2)
	for _, c := range raw {
		switch {
		case c == '/':
			out = append(out, ':')
		case c == 0:
			out = utf8.AppendRune(out, '\u2400')
			changed = true
		case c < 0x80:
			out = append(out, c)
		default:
			out = utf8.AppendRune(out, macroman.Runes[c-0x80])
		}
	}
	return out, changed
}

// placeholderName names an entry whose stored name cannot be a name here
// (empty, "." or ".."): by its CNID, unique on the volume.
func placeholderName(cnid uint32) []byte {
	return []byte("_cnid_" + strconv.FormatUint(uint64(cnid), 10))
}

// EncodeName is DecodeName's inverse for names MacRoman can write: see
// macroman.Encode.
func EncodeName(name string) (raw []byte, ok bool) { return macroman.Encode(name) }

// DecodeUnicode turns an HFS+ name (UTF-16BE, as stored: Apple's
// decomposed form, which is kept) into UTF-8: '/' becomes ':' as Linux's
// hfsplus driver shows it (a Mac name may hold '/', the POSIX layer of
// macOS stores a ':' typed in a name as '/'), NUL becomes U+2400 SYMBOL FOR
// NULL and an unpaired surrogate U+FFFD. It reports whether it had to
// change something other than '/'.
func DecodeUnicode(raw []byte) (name []byte, changed bool) {
	out := make([]byte, 0, len(raw))
	for i := 0; i+1 < len(raw); i += 2 {
		r := rune(be.Uint16(raw[i:]))
		switch {
		case r == '/':
			r = ':'
		case r == 0:
			r, changed = '\u2400', true
		case utf16.IsSurrogate(r):
			r2 := utf8.RuneError
			if i+3 < len(raw) {
				r2 = utf16.DecodeRune(r, rune(be.Uint16(raw[i+2:])))
			}
			if r2 == utf8.RuneError {
				changed = true
			} else {
				i += 2
			}
			r = r2
		}
		out = utf8.AppendRune(out, r)
	}
	return out, changed
}
