package copyrow

import (
	"testing"

	"github.com/HRDAG/ntt/enumerate"
	"github.com/stretchr/testify/require"
)

func TestAppend(t *testing.T) {
	r := enumerate.Record{Type: 'f', Dev: 1, Ino: 3, Nlink: 1, Size: 7, Mtime: -9, Path: []byte("/m/a\x1cb")}
	require.Equal(t, "f\t1\t3\t1\t7\t-9\t\\\\x2f6d2f611c62\n", string(Append(nil, &r)))
}
