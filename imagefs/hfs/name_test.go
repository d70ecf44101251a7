package hfs_test

import (
	"testing"
	"unicode/utf8"

	"github.com/HRDAG/ntt/imagefs/hfs"
)

func TestNames(t *testing.T) {
	for _, c := range []struct {
		raw  string
		want string
		chg  bool
	}{
		{"plain", "plain", false},
		{"a/b", "a:b", false},
		{"\x80rger \x9fber \x85l", "Ärger über Öl", false},
		{"\xa9 \xb9 \xdb \xf0", "© π € \uf8ff", false},
		{"nul\x00", "nul\u2400", true},
	} {
		got, chg := hfs.DecodeName([]byte(c.raw))
		if string(got) != c.want || chg != c.chg {
			t.Errorf("DecodeName(%q) = %q, %v; want %q, %v", c.raw, got, chg, c.want, c.chg)
		}
	}
	// Every byte but '/' and NUL decodes to one rune that encodes back.
	for b := 1; b < 256; b++ {
		if b == '/' {
			continue
		}
		got, _ := hfs.DecodeName([]byte{byte(b)})
		if utf8.RuneCount(got) != 1 {
			t.Fatalf("byte %#x decodes to %q", b, got)
		}
		back, ok := hfs.EncodeName(string(got))
		if !ok || len(back) != 1 || back[0] != byte(b) {
			t.Errorf("byte %#x → %q → %q", b, got, back)
		}
	}
	if _, ok := hfs.EncodeName("日本"); ok {
		t.Error("EncodeName of CJK succeeded")
	}
}

func TestUnicodeNames(t *testing.T) {
	u16 := func(units ...uint16) []byte {
		b := make([]byte, 2*len(units))
		for i, u := range units {
			b[2*i], b[2*i+1] = byte(u>>8), byte(u)
		}
		return b
	}
	for _, c := range []struct {
		raw  []byte
		want string
		chg  bool
	}{
		{u16('a', 'b'), "ab", false},
		{u16('a', '/', 'b'), "a:b", false},
		// Decomposed as stored: A + COMBINING DIAERESIS stays two runes.
		{u16('A', 0x0308, 'r'), "A\u0308r", false},
		{u16(0xD83D, 0xDE00), "😀", false},
		{u16(0, 0, 'H'), "\u2400\u2400H", true},
		{u16('x', 0xD800), "x\uFFFD", true},
		{u16(0xDC00, 'y'), "\uFFFDy", true},
		{u16(0xD800, 'z'), "\uFFFDz", true},
	} {
		got, chg := hfs.DecodeUnicode(c.raw)
		if string(got) != c.want || chg != c.chg {
			t.Errorf("DecodeUnicode(% x) = %q, %v; want %q, %v", c.raw, got, chg, c.want, c.chg)
		}
	}
}
