package iso9660

import (
	"unicode/utf16"
	"unicode/utf8"
)

// primaryName maps a primary (ECMA-119) file identifier the way Linux's
// isofs does with map=normal (its default): letters are lowercased, a
// trailing ";1" or ".;1" is dropped, any other ';' and a '/' become '.',
// and a NUL ends the name.
func primaryName(id []byte) []byte {
	out := make([]byte, 0, len(id))
	n := len(id)
	for i := 0; i < n; i++ {
		c := id[i]
		if c == 0 {
			break
		}
		if c >= 'A' && c <= 'Z' {
			c |= 0x20
		}
		if c == '.' && i == n-3 && id[i+1] == ';' && id[i+2] == '1' {
			break
		}
		if c == ';' && i == n-2 && id[i+1] == '1' {
			break
		}
		if c == ';' || c == '/' {
			c = '.'
		}
		out = append(out, c)
	}
	return out
}

// jolietName decodes a Joliet identifier (UCS-2, in practice UTF-16,
// big-endian) to UTF-8 the way Linux's get_joliet_filename does: a
// trailing ";1" is dropped, then trailing dots. Unpaired surrogates become
// U+FFFD; an odd last byte is ignored.
func jolietName(id []byte) []byte {
	u := make([]uint16, len(id)/2)
	for i := range u {
		u[i] = uint16(id[2*i])<<8 | uint16(id[2*i+1])
	}
	if n := len(u); n > 2 && u[n-2] == ';' && u[n-1] == '1' {
		u = u[:n-2]
	}
	out := make([]byte, 0, len(u))
	for _, r := range utf16.Decode(u) {
		out = utf8.AppendRune(out, r)
	}
	for len(out) >= 2 && out[len(out)-1] == '.' {
		out = out[:len(out)-1]
	}
	return out
}

// cleanName makes a decoded name fit imagefs.Entry.Name: '/' and NUL
// become '_'. It reports whether anything was replaced.
func cleanName(name []byte) ([]byte, bool) {
	changed := false
	for i, c := range name {
		if c == '/' || c == 0 {
			if !changed {
				name = append([]byte(nil), name...)
				changed = true
			}
			name[i] = '_'
		}
	}
	return name, changed
}

// usableName reports whether a name can stand in a path: not empty, not
// "." or "..".
func usableName(name []byte) bool {
	return len(name) > 0 && string(name) != "." && string(name) != ".."
}
