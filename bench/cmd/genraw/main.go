// Command genraw writes a deterministic, realistic raw enumeration file for
// the loader benchmark (bench/load.sh): a two-partition medium with nested
// directories, photos and documents, hardlinks, symlinks, the same inode
// numbers on both partitions, junk that ignore patterns match, and a few
// hostile names (0x1C, newline, backslash, invalid UTF-8). With -tsv it also
// writes the same rows in PostgreSQL's text COPY format (path as bytea hex)
// for the psql baselines, and with -ignore the ignore file.
//
//	genraw -n 300000 -hash HASH -out FILE.raw [-tsv FILE.tsv] [-ignore FILE]
package main

import (
	"bufio"
	"flag"
	"fmt"
	"github.com/HRDAG/ntt/bench/internal/copyrow"
	"math/rand/v2"
	"os"
	"strconv"

	"github.com/HRDAG/ntt/enumerate"
)

// IgnorePatterns are the patterns the benchmark loads with; about 2 % of
// the generated paths match them.
const IgnorePatterns = `# junk left by desktops
/\.DS_Store$
/Thumbs\.db$
/\._[^/]*$
/\.Trash-1000/
`

func main() {
	n := flag.Int("n", 300000, "records")
	hash := flag.String("hash", "00000000000000000000000000b10ad0", "medium hash (names the root)")
	out := flag.String("out", "", "raw file to write")
	tsv := flag.String("tsv", "", "also write the rows as text COPY input")
	ign := flag.String("ignore", "", "also write the ignore patterns")
	flag.Parse()
	if *out == "" {
		fmt.Fprintln(os.Stderr, "genraw: -out is required")
		os.Exit(1)
	}
	if err := generate(*n, *hash, *out, *tsv, *ign); err != nil {
		fmt.Fprintln(os.Stderr, "genraw:", err)
		os.Exit(1)
	}
}

type sink struct {
	w    *enumerate.Writer
	t    *bufio.Writer
	line []byte
	n    int
}

func (s *sink) emit(r *enumerate.Record) error {
	if err := s.w.Write(r); err != nil {
		return err
	}
	s.n++
	if s.t != nil {
		b := copyrow.Append(s.line[:0], r)
		s.line = b
		if _, err := s.t.Write(b); err != nil {
			return err
		}
	}
	return nil
}

var (
	exts  = []string{".jpg", ".JPG", ".doc", ".pdf", ".txt", ".xls", ".png", ".mp3", ".wav", ".html", ".eml", ".zip"}
	words = []string{"report", "IMG", "scan", "letter", "minutes", "testimony", "photo", "budget", "notes", "draft",
		"interview", "map", "list", "victims", "case", "archive", "backup", "copy of", "final", "nuevo"}
	hostile = []string{"sep\x1cname", "new\nline", `back\slash`, "bad\xff\xfeutf8", "cr\rname", "tab\tname"}
)

func generate(n int, hash, out, tsv, ign string) error {
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer f.Close()
	s := &sink{w: enumerate.NewWriter(f)}
	if tsv != "" {
		tf, err := os.Create(tsv)
		if err != nil {
			return err
		}
		defer tf.Close()
		s.t = bufio.NewWriterSize(tf, 1<<20)
	}
	if ign != "" {
		if err := os.WriteFile(ign, []byte(IgnorePatterns), 0o644); err != nil {
			return err
		}
	}
	rng := rand.New(rand.NewPCG(1, uint64(n)))
	root := "/mnt/ntt/" + hash
	mtime := func() int64 { return 946684800 + rng.Int64N(25*365*86400) }
	if err := s.emit(&enumerate.Record{Type: 'd', Dev: 40, Ino: 1, Nlink: 4, Size: 4096, Mtime: mtime(), Path: []byte(root)}); err != nil {
		return err
	}
	// Two partitions, each its own inode numbering from 11 up.
	for part, dev := range []uint64{2049, 2050} {
		if s.n >= n {
			break
		}
		pRoot := fmt.Sprintf("%s/p%d", root, part+1)
		if err := s.emit(&enumerate.Record{Type: 'd', Dev: dev, Ino: 2, Nlink: 3, Size: 4096, Mtime: mtime(), Path: []byte(pRoot)}); err != nil {
			return err
		}
		quota := (n - 3) / 2
		if part == 1 {
			quota = n - s.n
		}
		ino := uint64(10)
		var links [][2]any // (ino, size) of files to link again later
		for d := 0; quota > 0; d++ {
			dir := fmt.Sprintf("%s/%s %04d", pRoot, words[d%len(words)], d)
			if d%97 == 5 {
				dir = fmt.Sprintf("%s/.Trash-1000/files/%d", pRoot, d)
			}
			ino++
			if err := s.emit(&enumerate.Record{Type: 'd', Dev: dev, Ino: ino, Nlink: 2, Size: 4096, Mtime: mtime(), Path: []byte(dir)}); err != nil {
				return err
			}
			quota--
			if rng.IntN(3) == 0 && quota > 0 {
				ino++
				r := enumerate.Record{Type: 'f', Dev: dev, Ino: ino, Nlink: 1, Size: 6148, Mtime: mtime(), Path: []byte(dir + "/.DS_Store")}
				if err := s.emit(&r); err != nil {
					return err
				}
				quota--
			}
			files := 20 + rng.IntN(60)
			for i := 0; i < files && quota > 0; i++ {
				ino++
				name := fmt.Sprintf("%s %s %05d%s", words[rng.IntN(len(words))], words[rng.IntN(len(words))], i, exts[rng.IntN(len(exts))])
				r := enumerate.Record{Type: 'f', Dev: dev, Ino: ino, Nlink: 1, Size: rng.Int64N(4 << 20), Mtime: mtime()}
				switch x := rng.IntN(1000); {
				case x < 2:
					name = hostile[rng.IntN(len(hostile))] + strconv.Itoa(i)
				case x < 12:
					name = "._" + name // AppleDouble junk
				case x < 25:
					r.Type, r.Size = 'l', int64(len(name))
				case x < 35 && len(links) > 0:
					// A second link to an earlier file.
					l := links[len(links)-1]
					links = links[:len(links)-1]
					r.Ino, r.Nlink, r.Size = l[0].(uint64), 2, l[1].(int64)
					ino--
				case x < 45:
					r.Nlink = 2
					links = append(links, [2]any{r.Ino, r.Size})
				}
				r.Path = []byte(dir + "/" + name)
				if err := s.emit(&r); err != nil {
					return err
				}
				quota--
			}
		}
	}
	if err := s.w.Flush(); err != nil {
		return err
	}
	if s.t != nil {
		return s.t.Flush()
	}
	return nil
}
