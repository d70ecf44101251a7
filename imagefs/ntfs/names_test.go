package ntfs_test

import (
	"bytes"
	"strings"
	"testing"
	"unicode/utf16"
)

// utf16le is s in UTF-16LE, as NTFS stores names.
func utf16le(s string) []byte {
	u := utf16.Encode([]rune(s))
	b := make([]byte, 2*len(u))
	for i, c := range u {
		le.PutUint16(b[2*i:], c)
	}
	return b
}

// patchName replaces, in every $FILE_NAME of the MFT records of img, the
// UTF-16 unit at index i of the name old by unit; it returns how many it
// patched. (Only the MFT is patched: the reader does not read $I30.)
func patchName(t *testing.T, img []byte, old string, i int, unit uint16) int {
	t.Helper()
	mft := recordAt(img, 0)
	end := mft + 4096*1024
	pat := utf16le(old)
	n := 0
	for p := mft; p < end; {
		k := bytes.Index(img[p:end], pat)
		if k < 0 {
			break
		}
		at := p + int64(k) + int64(2*i)
		if at%512 >= 510 {
			t.Fatalf("the unit to patch lies on a stride end")
		}
		le.PutUint16(img[at:], unit)
		n++
		p += int64(k) + int64(len(pat))
	}
	return n
}

// TestLoneSurrogates: two names in one directory that differ only in an
// unpaired surrogate (legal on NTFS, which stores any 16-bit units) must
// still be two entries with two names — the walk lists both, under
// distinct paths, each readable — and the lossy name is reported.
func TestLoneSurrogates(t *testing.T) {
	img := sampleImage(t)
	x := strings.Repeat("x", 80)
	a, b := "link 00 "+x, "link 01 "+x
	if patchName(t, img, a[:9], 6, 0xD800) == 0 || patchName(t, img, b[:9], 6, 0xD801) == 0 {
		t.Fatal("names not found in the MFT")
	}
	_, got, probs := openWalk(t, img)
	n := 0
	for p := range got {
		if strings.HasPrefix(p, "/many names/link 0\uFFFD") {
			n++
		}
	}
	if n != 2 {
		t.Errorf("%d entries for the two names with unpaired surrogates, want 2", n)
	}
	if e := got["/many names/original"].e; e == nil || e.Nlink != 31 {
		t.Errorf("many names/original: %+v, want 31 names still", e)
	}
	bad := 0
	for _, p := range probs {
		if p.Kind == "bad_name" {
			bad++
		}
	}
	if bad == 0 {
		t.Errorf("no bad_name problem for names with unpaired surrogates: %v", probs)
	}
}

// TestLoneSurrogateStreams: two streams of one file whose names differ
// only in an unpaired surrogate are two forks, each with its own bytes —
// not one stream made of both.
func TestLoneSurrogateStreams(t *testing.T) {
	img := sampleImage(t)
	_, ref, _ := openWalk(t, img)
	zone, thumb := ref["/big.bin/..namedfork/Zone.Identifier"], ref["/big.bin/..namedfork/thumb"]
	// Both streams of big.bin renamed "thum" and a lone surrogate.
	rec := recordAt(img, ref["/big.bin"].e.ID)
	n := 0
	for p := rec + int64(le.Uint16(img[rec+0x14:])); le.Uint32(img[p:]) != 0xFFFFFFFF; p += int64(le.Uint32(img[p+4:])) {
		if le.Uint32(img[p:]) != 0x80 || img[p+9] == 0 {
			continue
		}
		no := p + int64(le.Uint16(img[p+0x0A:]))
		img[p+9] = 5
		copy(img[no:], utf16le("thum"))
		le.PutUint16(img[no+8:], 0xD800+uint16(n))
		n++
	}
	if n != 2 {
		t.Fatalf("%d named streams in big.bin's record, want 2", n)
	}
	_, got, _ := openWalk(t, img)
	var forks [][]byte
	for p, g := range got {
		if strings.HasPrefix(p, "/big.bin/..namedfork/thum\uFFFD") {
			forks = append(forks, g.data)
			if g.err != nil {
				t.Errorf("%q: %v", p, g.err)
			}
		}
	}
	if len(forks) != 2 {
		t.Fatalf("%d forks for the two streams, want 2", len(forks))
	}
	if !(bytes.Equal(forks[0], zone.data) && bytes.Equal(forks[1], thumb.data) || bytes.Equal(forks[1], zone.data) && bytes.Equal(forks[0], thumb.data)) {
		t.Errorf("the two forks hold %d and %d bytes, not the two streams' %d and %d", len(forks[0]), len(forks[1]), len(zone.data), len(thumb.data))
	}
}
