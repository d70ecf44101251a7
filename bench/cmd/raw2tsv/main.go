// Command raw2tsv turns a raw enumeration file into PostgreSQL's text COPY
// format (path as bytea hex), the input of the staged psql load that
// bench/pipeline.sh uses as the reference for the loading phase.
//
//	raw2tsv < FILE.raw > FILE.tsv
package main

import (
	"bufio"
	"errors"
	"fmt"
	"github.com/HRDAG/ntt/bench/internal/copyrow"
	"io"
	"os"

	"github.com/HRDAG/ntt/enumerate"
)

func main() {
	r := enumerate.NewReader(bufio.NewReaderSize(os.Stdin, 1<<20))
	w := bufio.NewWriterSize(os.Stdout, 1<<20)
	var line []byte
	for {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "raw2tsv:", err)
			os.Exit(1)
		}
		line = copyrow.Append(line[:0], &rec)
		if _, err := w.Write(line); err != nil {
			fmt.Fprintln(os.Stderr, "raw2tsv:", err)
			os.Exit(1)
		}
	}
	if err := w.Flush(); err != nil {
		fmt.Fprintln(os.Stderr, "raw2tsv:", err)
		os.Exit(1)
	}
}
