package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/HRDAG/ntt/enumerate"
)

// The README's checks of a raw file, word for word. The runbook's own
// (`tr '\034' '\n' … | uniq -d`, `wc -l`) split fields, not records: the
// records end in NUL.
const (
	readmeRecords    = `tr -cd '\0' < /tmp/${HASH_SHORT}.raw | wc -c`
	readmeDuplicates = `cut -z -d $'\034' -f7- < /tmp/${HASH_SHORT}.raw | sort -z | uniq -zd | tr '\0' '\n'`
	readmeInodes     = `cut -z -d $'\034' -f2,3 < /tmp/${HASH_SHORT}.raw | sort -zu | tr -cd '\0' | wc -c`
	runbookDupCheck  = `tr '\034' '\n' < /tmp/${HASH_SHORT}.raw | sort | uniq -d`
)

// sh runs a README command with bash, as the runbook does, on the raw
// file at /tmp/${HASH_SHORT}.raw.
func sh(t *testing.T, short, command string) string {
	t.Helper()
	cmd := exec.Command("bash", "-c", command)
	cmd.Env = append(os.Environ(), "HASH_SHORT="+short, "LC_ALL=C")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v", command, err)
	}
	return string(out)
}

// The commands run on a raw file enumerate.Walk wrote of a real directory
// tree: files sharing sizes and mtimes (which the runbook's check calls
// duplicates), hardlinks, names with spaces and a newline.
func TestReadmeRawFileChecks(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{readmeRecords, readmeDuplicates, readmeInodes} {
		if !bytes.Contains(readme, []byte(c)) {
			t.Errorf("README.md lacks the tested command %s", c)
		}
	}
	root := t.TempDir()
	names := []string{"a.txt", "b.txt", "with space.doc", "new\nline", "dir/c.txt", "dir/d.txt", "dir/sub/e"}
	for _, n := range names {
		p := filepath.Join(root, n)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("same"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Link(filepath.Join(root, "a.txt"), filepath.Join(root, "dir", "a-link")); err != nil {
		t.Fatal(err)
	}
	var raw bytes.Buffer
	res, err := enumerate.Walk(context.Background(), []string{root}, enumerate.Options{}, &raw)
	if err != nil {
		t.Fatal(err)
	}
	// root, dir, dir/sub, the 7 files and the hardlink: 11 records, 10 inodes.
	if res.Records != 11 {
		t.Fatalf("walk wrote %d records, want 11", res.Records)
	}
	f, err := os.CreateTemp("/tmp", "readme-check-*.raw")
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	t.Cleanup(func() { os.Remove(f.Name()) })
	short := strings.TrimSuffix(filepath.Base(f.Name()), ".raw")
	if err := os.WriteFile(f.Name(), raw.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}

	if got := strings.TrimSpace(sh(t, short, readmeRecords)); got != "11" {
		t.Errorf("record count = %q, want 11", got)
	}
	if got := strings.TrimSpace(sh(t, short, readmeInodes)); got != "10" {
		t.Errorf("inode count = %q, want 10 (one hardlink)", got)
	}
	if got := sh(t, short, readmeDuplicates); got != "" {
		t.Errorf("duplicate check on a file without duplicates printed %q", got)
	}
	if got := sh(t, short, `wc -l < /tmp/${HASH_SHORT}.raw`); strings.TrimSpace(got) != "1" {
		t.Errorf("wc -l = %q: want 1 (the newline inside one name), not the record count", got)
	}
	// The runbook's check reports false duplicates (shared sizes, mtimes,
	// devices), which is why the README gives another.
	if got := sh(t, short, runbookDupCheck); got == "" {
		t.Errorf("the runbook's field-splitting check printed nothing; the README's note about it would be wrong")
	}

	// A real duplicate: the same record twice. It is printed, once.
	dupRec := bytes.Split(raw.Bytes(), []byte{0})[5]
	dup := append(append([]byte{}, raw.Bytes()...), append(dupRec, 0)...)
	if err := os.WriteFile(f.Name(), dup, 0o644); err != nil {
		t.Fatal(err)
	}
	fields := bytes.SplitN(dupRec, []byte{0x1c}, 7)
	want := fmt.Sprintf("%s\n", fields[6])
	if got := sh(t, short, readmeDuplicates); got != want {
		t.Errorf("duplicate check = %q, want %q", got, want)
	}
}
