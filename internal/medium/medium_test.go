package medium

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseRejects(t *testing.T) {
	for _, s := range []string{
		"",
		"C9894F1681B5B542EB3A4B75967E9AEA", // uppercase
		"0123456789abcde",                  // 15
		"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0", // 65
		"../x",
		"x'; drop table medium; --",
		"c9894f1681b5b542 eb3a4b75967e9aea",
		"c9894f1681b5b542eb3a4b75967e9aeg", // non-hex
		"c9894f1681b5b542eb3a4b75967e9ae\x00",
	} {
		_, err := Parse(s)
		require.Error(t, err, "%q", s)
		require.True(t, errors.Is(err, ErrInvalidHash), "%q", s)
	}
}

func TestParseAcceptsSeedHashes(t *testing.T) {
	for _, s := range []string{"c9894f1681b5b542eb3a4b75967e9aea", "ece03c6779caa14be2b00d380add8475"} {
		h, err := Parse(s)
		require.NoError(t, err)
		require.Equal(t, "inode_p_"+s, h.InodeTable())
		require.Equal(t, "path_p_"+s, h.PathTable())
		require.Equal(t, "path_p_"+s+"_fk_idx", h.PathFKIndex())
		require.Equal(t, "/mnt/ntt/"+s, h.MountPath("/mnt/ntt"))
		require.Equal(t, "/mnt/ntt/"+s+"/p2", h.PartitionMountPath("/mnt/ntt", 2))
		require.Equal(t, s[:8]+".raw", h.RawFileName())
		require.Equal(t, s+".tar.zst", h.ArchiveFileName())
	}
}

func TestLongHashTablesUse32(t *testing.T) {
	s := "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	h := MustParse(s)
	require.Equal(t, "inode_p_"+s[:32], h.InodeTable())
	require.LessOrEqual(t, len(h.PathFKIndex()), 63)
	require.Equal(t, s+".img", h.ImageFileName())
}
