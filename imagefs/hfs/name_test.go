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
