// Package macroman is the Mac OS Roman character set, the encoding of
// classic HFS names: a package of its own, without dependencies, so that
// both the HFS reader and the test image builders (internal/testimg) use
// the one table.
package macroman

// Runes maps the bytes 0x80–0xFF of Mac OS Roman to Unicode, as Apple's
// ROMAN.TXT mapping has it (0xDB is the euro sign since Mac OS 8.5; 0xF0,
// the Apple logo, is the private-use U+F8FF). Bytes below 0x80 are ASCII.
var Runes = [128]rune{
	'Ä', 'Å', 'Ç', 'É', 'Ñ', 'Ö', 'Ü', 'á', 'à', 'â', 'ä', 'ã', 'å', 'ç', 'é', 'è', // 0x80
	'ê', 'ë', 'í', 'ì', 'î', 'ï', 'ñ', 'ó', 'ò', 'ô', 'ö', 'õ', 'ú', 'ù', 'û', 'ü', // 0x90
	'†', '°', '¢', '£', '§', '•', '¶', 'ß', '®', '©', '™', '´', '¨', '≠', 'Æ', 'Ø', // 0xA0
	'∞', '±', '≤', '≥', '¥', 'µ', '∂', '∑', '∏', 'π', '∫', 'ª', 'º', 'Ω', 'æ', 'ø', // 0xB0
	'¿', '¡', '¬', '√', 'ƒ', '≈', '∆', '«', '»', '…', '\u00a0', 'À', 'Ã', 'Õ', 'Œ', 'œ', // 0xC0
	'–', '—', '“', '”', '‘', '’', '÷', '◊', 'ÿ', 'Ÿ', '⁄', '€', '‹', '›', 'ﬁ', 'ﬂ', // 0xD0
	'‡', '·', '‚', '„', '‰', 'Â', 'Ê', 'Á', 'Ë', 'È', 'Í', 'Î', 'Ï', 'Ì', 'Ó', 'Ô', // 0xE0
	'\uf8ff', 'Ò', 'Ú', 'Û', 'Ù', 'ı', 'ˆ', '˜', '¯', '˘', '˙', '˚', '¸', '˝', '˛', 'ˇ', // 0xF0
}

// Encode writes name (UTF-8) in MacRoman; ok is false if a rune has no
// MacRoman byte. Tests build HFS media with it.
func Encode(name string) (raw []byte, ok bool) {
	for _, r := range name {
		if r < 0x80 {
			raw = append(raw, byte(r))
			continue
		}
		found := false
		for i, m := range Runes {
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
