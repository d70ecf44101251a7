package iso9660

import (
	"testing"
	"unicode/utf16"
)

// TestPrimaryName: the mapping Linux's isofs applies with map=normal.
func TestPrimaryName(t *testing.T) {
	for in, want := range map[string]string{
		"README.TXT;1": "readme.txt",
		"EMPTY.;1":     "empty",
		"DIR":          "dir",
		"A;2":          "a.2",
		"NOVERS.":      "novers.",
		"X;1;1":        "x.1",
		"AC/RN;1":      "ac.rn",
		"NUL\x00REST":  "nul",
		"MiXeD_1.c":    "mixed_1.c",
	} {
		if got := string(primaryName([]byte(in))); got != want {
			t.Errorf("primaryName(%q) = %q, want %q", in, got, want)
		}
	}
}

func ucs2(s string) []byte {
	var b []byte
	for _, u := range utf16.Encode([]rune(s)) {
		b = append(b, byte(u>>8), byte(u))
	}
	return b
}

// TestJolietName: UTF-16BE (surrogate pairs too) to UTF-8, ";1" and
// trailing dots dropped as Linux's get_joliet_filename does.
func TestJolietName(t *testing.T) {
	for in, want := range map[string]string{
		"grüße.txt;1": "grüße.txt",
		"emoji 😀":     "emoji 😀",
		"dots...":     "dots",
		"Ελληνικά;1":  "Ελληνικά",
		".":           ".",
	} {
		if got := string(jolietName(ucs2(in))); got != want {
			t.Errorf("jolietName(%q) = %q, want %q", in, got, want)
		}
	}
	if got := string(jolietName([]byte{0xD8, 0x00, 0, 'a', 'x'})); got != "\uFFFDa" {
		t.Errorf("unpaired surrogate and odd byte: %q", got)
	}
}

// TestCleanName: '/' and NUL never reach a path.
func TestCleanName(t *testing.T) {
	orig := []byte("a/b\x00c")
	got, changed := cleanName(orig)
	if string(got) != "a_b_c" || !changed || string(orig) != "a/b\x00c" {
		t.Errorf("cleanName: %q %v (input now %q)", got, changed, orig)
	}
}
