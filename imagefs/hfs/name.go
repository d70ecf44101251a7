package hfs

import (
	"strconv"
	"unicode/utf8"
)

// macRoman maps the bytes 0x80–0xFF of Mac OS Roman to Unicode, as Apple's
// ROMAN.TXT mapping has it (0xDB is the euro sign since Mac OS 8.5; 0xF0,
// the Apple logo, is the private-use U+F8FF). Bytes below 0x80 are ASCII.
var macRoman = [128]rune{
	'Ä', 'Å', 'Ç', 'É', 'Ñ', 'Ö', 'Ü', 'á', 'à', 'â', 'ä', 'ã', 'å', 'ç', 'é', 'è', // 0x80
	'ê', 'ë', 'í', 'ì', 'î', 'ï', 'ñ', 'ó', 'ò', 'ô', 'ö', 'õ', 'ú', 'ù', 'û', 'ü', // 0x90
	'†', '°', '¢', '£', '§', '•', '¶', 'ß', '®', '©', '™', '´', '¨', '≠', 'Æ', 'Ø', // 0xA0
	'∞', '±', '≤', '≥', '¥', 'µ', '∂', '∑', '∏', 'π', '∫', 'ª', 'º', 'Ω', 'æ', 'ø', // 0xB0
	'¿', '¡', '¬', '√', 'ƒ', '≈', '∆', '«', '»', '…', '\u00a0', 'À', 'Ã', 'Õ', 'Œ', 'œ', // 0xC0
	'–', '—', '“', '”', '‘', '’', '÷', '◊', 'ÿ', 'Ÿ', '⁄', '€', '‹', '›', 'ﬁ', 'ﬂ', // 0xD0
	'‡', '·', '‚', '„', '‰', 'Â', 'Ê', 'Á', 'Ë', 'È', 'Í', 'Î', 'Ï', 'Ì', 'Ó', 'Ô', // 0xE0
	'\uf8ff', 'Ò', 'Ú', 'Û', 'Ù', 'ı', 'ˆ', '˜', '¯', '˘', '˙', '˚', '¸', '˝', '˛', 'ˇ', // 0xF0
}

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
			out = utf8.AppendRune(out, macRoman[c-0x80])
		}
	}
	return out, changed
}

// EncodeName is DecodeName's inverse for names that MacRoman can write
// (tests build media with it); ok is false if a rune has no MacRoman byte.
func EncodeName(name string) (raw []byte, ok bool) {
	for _, r := range name {
		if r < 0x80 {
			raw = append(raw, byte(r))
			continue
		}
		found := false
		for i, m := range macRoman {
			if m == r {
				raw, found = append(raw, byte(0x80+i)), true
				break
			}
		}
		if !found {
			return nil, false
		}
	}
	return raw, true
}

// placeholderName names an entry whose stored name cannot be a name here
// (empty, "." or ".."): by its CNID, unique on the volume.
func placeholderName(cnid uint32) []byte {
	return []byte("_cnid_" + strconv.FormatUint(uint64(cnid), 10))
}
