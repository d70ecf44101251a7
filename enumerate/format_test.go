package enumerate

import (
	"bytes"
	"errors"
	"io"
	"math"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/require"
)

func sampleRecords() []Record {
	return []Record{
		{Type: 'd', Dev: 2049, Ino: 2, Nlink: 5, Size: 4096, Mtime: 1700000000, Path: []byte("/mnt/ntt/abc")},
		{Type: 'f', Dev: 2049, Ino: 12, Nlink: 2, Size: 0, Mtime: -86401, Path: []byte("/mnt/ntt/abc/a\x1cb\nc\rd\\e\xff\xfe")},
		{Type: 'l', Dev: math.MaxUint64, Ino: math.MaxUint64, Nlink: 1, Size: math.MaxInt64, Mtime: math.MinInt64, Path: []byte("/x/\x1c\x1c\x1c\x1c\x1c\x1c\x1c")},
		{Type: 'p', Path: []byte("/")},
		{Type: 'c', Dev: 5, Ino: 6, Nlink: 1, Mtime: 16725225600, Path: []byte("/dev/null")},
		{Type: 'b', Path: []byte("b")},
		{Type: 's', Path: []byte("s")},
	}
}

func TestRoundTrip(t *testing.T) {
	recs := sampleRecords()
	var buf bytes.Buffer
	w := NewWriter(&buf)
	for i := range recs {
		require.NoError(t, w.Write(&recs[i]))
	}
	require.NoError(t, w.Flush())
	require.EqualValues(t, len(recs), w.Count())

	// One byte at a time exercises every buffer refill path.
	for name, src := range map[string]io.Reader{
		"whole":   bytes.NewReader(buf.Bytes()),
		"onebyte": iotest.OneByteReader(bytes.NewReader(buf.Bytes())),
	} {
		r := NewReaderSize(src, 200)
		var off int64
		for i := range recs {
			got, err := r.Read()
			require.NoError(t, err, name)
			require.Equal(t, recs[i], got.Clone(), name)
			require.EqualValues(t, i, r.Index())
			require.Equal(t, off, r.Offset())
			off += int64(len(AppendRecord(nil, &recs[i])))
		}
		_, err := r.Read()
		require.ErrorIs(t, err, io.EOF, name)
	}
}

func TestFindFormatLiteral(t *testing.T) {
	// Bytes as find -printf '%y\034%D\034%i\034%n\034%s\034%Ts\034%p\0' prints them.
	in := "d\x1c2049\x1c2\x1c3\x1c4096\x1c1700000000\x1c/mnt\x00" +
		"f\x1c2049\x1c13\x1c1\x1c5\x1c-1\x1c/mnt/a\x1cb\x00"
	r := NewReader(strings.NewReader(in))
	a, err := r.Read()
	require.NoError(t, err)
	require.Equal(t, Record{Type: 'd', Dev: 2049, Ino: 2, Nlink: 3, Size: 4096, Mtime: 1700000000, Path: []byte("/mnt")}, a.Clone())
	b, err := r.Read()
	require.NoError(t, err)
	require.Equal(t, "/mnt/a\x1cb", string(b.Path))
	require.EqualValues(t, -1, b.Mtime)
	require.Equal(t, in, string(AppendRecord(AppendRecord(nil, &a), &b)))
}

func TestMalformed(t *testing.T) {
	good := "f\x1c1\x1c2\x1c1\x1c0\x1c0\x1c/ok\x00"
	cases := []struct {
		name  string
		bad   string
		want  error
		field string
	}{
		{"missing fields", "f\x1c1\x1c2\x1c1\x1c0\x00", ErrMissingField, ""},
		{"non-numeric dev", "f\x1cx\x1c2\x1c1\x1c0\x1c0\x1c/p\x00", ErrBadNumber, "dev"},
		{"empty ino", "f\x1c1\x1c\x1c1\x1c0\x1c0\x1c/p\x00", ErrBadNumber, "ino"},
		{"negative nlink", "f\x1c1\x1c2\x1c-1\x1c0\x1c0\x1c/p\x00", ErrBadNumber, "nlink"},
		{"leading zero size", "f\x1c1\x1c2\x1c1\x1c01\x1c0\x1c/p\x00", ErrBadNumber, "size"},
		{"plus mtime", "f\x1c1\x1c2\x1c1\x1c0\x1c+5\x1c/p\x00", ErrBadNumber, "mtime"},
		{"negative zero mtime", "f\x1c1\x1c2\x1c1\x1c0\x1c-0\x1c/p\x00", ErrBadNumber, "mtime"},
		{"overflow dev", "f\x1c18446744073709551616\x1c2\x1c1\x1c0\x1c0\x1c/p\x00", ErrBadNumber, "dev"},
		{"overflow size", "f\x1c1\x1c2\x1c1\x1c9223372036854775808\x1c0\x1c/p\x00", ErrBadNumber, "size"},
		{"unknown type", "x\x1c1\x1c2\x1c1\x1c0\x1c0\x1c/p\x00", ErrBadType, "type"},
		{"two-byte type", "ff\x1c1\x1c2\x1c1\x1c0\x1c0\x1c/p\x00", ErrBadType, "type"},
		{"empty path", "f\x1c1\x1c2\x1c1\x1c0\x1c0\x1c\x00", ErrEmptyPath, "path"},
		{"truncated last record", "f\x1c1\x1c2\x1c1\x1c0\x1c0\x1c/p", ErrTruncated, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := good + good + c.bad
			r := NewReader(strings.NewReader(in))
			for i := 0; i < 2; i++ {
				_, err := r.Read()
				require.NoError(t, err)
			}
			_, err := r.Read()
			require.ErrorIs(t, err, c.want)
			var re *RecordError
			require.True(t, errors.As(err, &re), "%T %v", err, err)
			require.EqualValues(t, 2, re.Index)
			require.EqualValues(t, 2*len(good), re.Offset)
			require.Equal(t, c.field, re.Field)
			require.Contains(t, err.Error(), "raw record index 2 at byte offset 32")
		})
	}
}

func TestMalformedRecordIsSkippable(t *testing.T) {
	in := "f\x1cx\x1c2\x1c1\x1c0\x1c0\x1c/bad\x00f\x1c1\x1c2\x1c1\x1c0\x1c0\x1c/ok\x00"
	r := NewReader(strings.NewReader(in))
	_, err := r.Read()
	require.ErrorIs(t, err, ErrBadNumber)
	rec, err := r.Read()
	require.NoError(t, err)
	require.Equal(t, "/ok", string(rec.Path))
	require.EqualValues(t, 1, r.Index())
}

func TestEmptyInput(t *testing.T) {
	_, err := NewReader(strings.NewReader("")).Read()
	require.ErrorIs(t, err, ErrEmpty)
	var re *RecordError
	require.ErrorAs(t, err, &re)
	require.EqualValues(t, 0, re.Index)
}

func TestTooLong(t *testing.T) {
	in := "f\x1c1\x1c2\x1c1\x1c0\x1c0\x1c/" + strings.Repeat("a", 200) + "\x00"
	_, err := NewReaderSize(strings.NewReader(in), 100).Read()
	require.ErrorIs(t, err, ErrTooLong)
	rec, err := NewReaderSize(strings.NewReader(in), 300).Read()
	require.NoError(t, err)
	require.Len(t, rec.Path, 201)
}

func TestReadErrorIsReported(t *testing.T) {
	boom := errors.New("disk on fire")
	_, err := NewReader(iotest.ErrReader(boom)).Read()
	require.ErrorIs(t, err, boom)
}

func TestWriterRefuses(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	require.ErrorIs(t, w.Write(&Record{Type: 'x', Path: []byte("/a")}), ErrBadType)
	require.ErrorIs(t, w.Write(&Record{Type: 'f'}), ErrEmptyPath)
	require.ErrorIs(t, w.Write(&Record{Type: 'f', Path: []byte("/a\x00b")}), ErrNULInPath)
	require.NoError(t, w.Flush())
	require.Zero(t, buf.Len())
	require.Zero(t, w.Count())
}

// FuzzReader: the reader never panics, and every record it accepts
// re-encodes to exactly the bytes it was read from.
func FuzzReader(f *testing.F) {
	var seed []byte
	for _, r := range sampleRecords() {
		seed = AppendRecord(seed, &r)
	}
	f.Add(seed)
	f.Add([]byte(""))
	f.Add([]byte("f\x1c1\x1c2\x1c1\x1c0\x1c0\x1c/p"))
	f.Add([]byte("f\x1c-1\x1c2\x1c1\x1c-0\x1c0\x1c/p\x00\x00"))
	f.Fuzz(func(t *testing.T, in []byte) {
		r := NewReaderSize(bytes.NewReader(in), 256)
		for n := 0; n < len(in)+2; n++ {
			rec, err := r.Read()
			if err == io.EOF {
				return
			}
			if err != nil {
				var re *RecordError
				if !errors.As(err, &re) {
					t.Fatalf("error is not a *RecordError: %v", err)
				}
				if re.Offset < 0 || re.Offset > int64(len(in)) {
					t.Fatalf("offset %d outside input of %d bytes", re.Offset, len(in))
				}
				continue
			}
			enc := AppendRecord(nil, &rec)
			off := r.Offset()
			if off+int64(len(enc)) > int64(len(in)) || !bytes.Equal(in[off:off+int64(len(enc))], enc) {
				t.Fatalf("record %d at %d re-encodes to %q", r.Index(), off, enc)
			}
		}
	})
}

func BenchmarkReader(b *testing.B) {
	var data []byte
	for i := 0; i < 10000; i++ {
		data = AppendRecord(data, &Record{Type: 'f', Dev: 2049, Ino: uint64(1000 + i), Nlink: 1,
			Size: int64(i * 37), Mtime: 1600000000 + int64(i), Path: []byte("/mnt/ntt/0123456789abcdef/some/dir/file-name.txt")})
	}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		r := NewReader(bytes.NewReader(data))
		for {
			if _, err := r.Read(); err != nil {
				if err != io.EOF {
					b.Fatal(err)
				}
				break
			}
		}
	}
}

func TestLongRecordGrowsBuffer(t *testing.T) {
	long := Record{Type: 'd', Path: []byte("/" + strings.Repeat("x", 700<<10))}
	short := Record{Type: 'f', Path: []byte("/y")}
	in := AppendRecord(AppendRecord(AppendRecord(nil, &short), &long), &short)
	r := NewReader(iotest.HalfReader(bytes.NewReader(in)))
	for _, want := range []Record{short, long, short} {
		got, err := r.Read()
		require.NoError(t, err)
		require.Equal(t, want, got.Clone())
	}
	_, err := r.Read()
	require.Equal(t, io.EOF, err)
}
