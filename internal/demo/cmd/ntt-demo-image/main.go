// Command ntt-demo-image writes one of NTT's sample media (see
// internal/demo) into a directory and prints its medium hash: the rescued
// hard disk (default), a FAT12 floppy, a Rock Ridge + Joliet CD-ROM, a
// hybrid ISO 9660 / HFS CD, a UDF-only disc or a UDF bridge disc.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/HRDAG/ntt/internal/demo"
)

const usage = `usage: ntt-demo-image [--kind disk|floppy|cdrom|hybrid|hybrid+|udf|bridge] DIR

Writes a sample medium into DIR as <md5>.img and prints the medium hash:
  disk    MBR with ext4 + ext2, its ddrescue mapfile with one unrescued
          region, and a ddrescue log (the default)
  floppy  a 1.44 MB FAT12 floppy (mkfs.fat + mtools)
  cdrom   an ISO 9660 CD-ROM with Rock Ridge and Joliet (xorriso)
  hybrid  a hybrid ISO 9660 / HFS CD (genisoimage -hfs -part; hfsutils)
  hybrid+ a hybrid ISO 9660 / HFS+ CD (xorriso -hfsplus; sleuthkit)
  udf     a UDF-only disc (mkudffs), which no image reader reads yet
  bridge  a UDF bridge disc (genisoimage -udf), read by its ISO 9660 side
`

func main() {
	fs := flag.NewFlagSet("ntt-demo-image", flag.ContinueOnError)
	kind := fs.String("kind", "disk", "the kind of medium")
	fs.Usage = func() { fmt.Fprint(os.Stderr, usage) }
	if err := fs.Parse(os.Args[1:]); err != nil || fs.NArg() != 1 {
		fs.Usage()
		os.Exit(2)
	}
	dir := fs.Arg(0)
	var hash string
	var err error
	switch *kind {
	case "disk":
		var s *demo.Sample
		if s, err = demo.Generate(dir); err == nil {
			hash = s.Hash
		}
	case "floppy", "cdrom", "hybrid", "hybrid+", "udf", "bridge":
		build := map[string]func(string) (*demo.Medium, error){"floppy": demo.Floppy, "cdrom": demo.CDROM,
			"hybrid": demo.HybridCD, "hybrid+": demo.HybridHFSPlusCD, "udf": demo.UDFDisc, "bridge": demo.BridgeDisc}[*kind]
		var m *demo.Medium
		if err = os.MkdirAll(dir, 0o755); err == nil {
			if m, err = build(dir); err == nil {
				hash = m.Hash
			}
		}
	default:
		fs.Usage()
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "ntt-demo-image:", err)
		os.Exit(1)
	}
	fmt.Println(hash)
}
