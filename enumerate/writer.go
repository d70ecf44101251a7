package enumerate

import (
	"fmt"
	"io"
)

const writerBuffer = 256 << 10

// Writer writes records in the raw format to a stream, buffered. Call Flush
// at the end; the first error of the underlying writer is sticky.
type Writer struct {
	dst   io.Writer
	buf   []byte
	count int64
	err   error
}

// NewWriter returns a Writer with a 256 KiB buffer.
func NewWriter(w io.Writer) *Writer {
	return &Writer{dst: w, buf: make([]byte, 0, writerBuffer)}
}

// Write validates and encodes one record. A record that cannot be read back
// unchanged (unknown type, empty path, 0x00 in the path) is refused with a
// *RecordError naming the index it would have had; nothing is written then.
func (w *Writer) Write(r *Record) error {
	if w.err != nil {
		return w.err
	}
	if err := r.Validate(); err != nil {
		return &RecordError{Index: w.count, Offset: -1, Err: fmt.Errorf("cannot encode: %w", err)}
	}
	w.buf = AppendRecord(w.buf, r)
	w.count++
	if len(w.buf) >= writerBuffer {
		return w.Flush()
	}
	return nil
}

// Count returns how many records were accepted by Write.
func (w *Writer) Count() int64 { return w.count }

// Flush writes the buffered records to the underlying writer.
func (w *Writer) Flush() error {
	if w.err != nil {
		return w.err
	}
	if len(w.buf) == 0 {
		return nil
	}
	if _, err := w.dst.Write(w.buf); err != nil {
		w.err = fmt.Errorf("writing raw records: %w", err)
		return w.err
	}
	w.buf = w.buf[:0]
	return nil
}
