package extfs

import "testing"

// Hashes as debugfs dx_hash prints them (e2fsprogs 1.47.0), for a zero
// seed and for the seed 01234567-89ab-cdef-0123-456789abcdef.
func TestDxHash(t *testing.T) {
	seed := [4]uint32{0x67452301, 0xefcdab89, 0x67452301, 0xefcdab89}
	for _, tc := range []struct {
		name    string
		version int
		seed    [4]uint32
		want    uint32
	}{
		{"file-00005", hashHalfMD4, [4]uint32{}, 0xe8a7d448},
		{"file-00005", hashTEA, [4]uint32{}, 0xdf2225ea},
		{"file-00005", hashLegacy, [4]uint32{}, 0x4e228ffc},
		{"file-00005", hashHalfMD4, seed, 0x46d168b2},
	} {
		got, ok := dxHash([]byte(tc.name), tc.version, tc.seed)
		if !ok || got != tc.want {
			t.Errorf("dxHash(%q, %d, %x) = %#x, %v; want %#x", tc.name, tc.version, tc.seed, got, ok, tc.want)
		}
	}
}
