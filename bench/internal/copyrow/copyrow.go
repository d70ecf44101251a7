// Package copyrow writes raw enumeration records as PostgreSQL text COPY
// rows (type, dev, ino, nlink, size, mtime, path as bytea hex): the input
// of the psql baselines the bench scripts compare NTT's loader with.
package copyrow

import (
	"encoding/hex"
	"strconv"

	"github.com/HRDAG/ntt/enumerate"
)

// Append appends r's COPY row, newline included, to dst.
func Append(dst []byte, r *enumerate.Record) []byte {
	dst = append(dst, r.Type, '\t')
	dst = strconv.AppendUint(dst, r.Dev, 10)
	dst = append(dst, '\t')
	dst = strconv.AppendUint(dst, r.Ino, 10)
	dst = append(dst, '\t')
	dst = strconv.AppendUint(dst, r.Nlink, 10)
	dst = append(dst, '\t')
	dst = strconv.AppendInt(dst, r.Size, 10)
	dst = append(dst, '\t')
	dst = strconv.AppendInt(dst, r.Mtime, 10)
	dst = append(dst, "\t\\\\x"...)
	dst = hex.AppendEncode(dst, r.Path)
	return append(dst, '\n')
}
