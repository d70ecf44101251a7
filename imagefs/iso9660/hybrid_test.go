package iso9660

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/HRDAG/ntt/internal/testimg"
	"github.com/HRDAG/ntt/loopdev/probe"
)

// isoPartition probes a disk image and returns the partition holding
// ISO 9660, as the pipeline finds it.
func isoPartition(t *testing.T, disk string) probe.Partition {
	t.Helper()
	fh, err := os.Open(disk)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	st, _ := fh.Stat()
	res, err := probe.Probe(fh, st.Size())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range res.Partitions {
		if p.Content != nil && p.Content.Type == "iso9660" && p.Start > 0 {
			return p
		}
	}
	t.Fatalf("probe finds no ISO 9660 partition past byte 0 in %s: %+v", disk, res)
	return probe.Partition{}
}

// TestHybridPartitionOffset reads a disc mastered inside an MBR partition
// (xorriso -partition_offset: the system area holds a table whose
// partition 1 starts at block 16 and carries its own volume descriptors),
// through a section of the image at the offset probe finds.
func TestHybridPartitionOffset(t *testing.T) {
	requireTools(t, "xorriso", "fls", "tsk_recover")
	spec := treeSpec(true)
	disk := testimg.ISO(t, spec, "xorriso", "-as", "mkisofs", "-R", "-J", "-partition_offset", "16", "-o", img, tree)
	p := isoPartition(t, disk)
	if p.Start != 16*2048 {
		t.Errorf("partition starts at byte %d, want %d", p.Start, 16*2048)
	}
	l := openImage(t, disk, p.Start, p.Size, "")
	checkTree(t, l, spec, want{naming: RockRidge, hardlinks: true, attrs: true})
	checkTSK(t, disk, p.Start/512, openImage(t, disk, p.Start, p.Size, Joliet))
}

// TestInsidePartition reads an ISO image placed 1 MiB into a disk behind an
// MBR and behind a GPT, the way a disc image copied onto a partitioned
// stick is found.
func TestInsidePartition(t *testing.T) {
	requireTools(t, "genisoimage", "fls", "tsk_recover")
	spec := treeSpec(true)
	iso := testimg.ISO(t, spec, append(append([]string{}, geniso...), "-R", "-J", "-o", img, tree)...)
	st, err := os.Stat(iso)
	if err != nil {
		t.Fatal(err)
	}
	const off = 1 << 20
	size := (st.Size() + 511) / 512 * 512
	for _, table := range []string{"mbr", "gpt"} {
		t.Run(table, func(t *testing.T) {
			disk := filepath.Join(t.TempDir(), "disk.img")
			if err := testimg.Place(disk, off, iso); err != nil {
				t.Fatal(err)
			}
			if table == "mbr" {
				err = testimg.WriteMBR(disk, testimg.MBR{Primary: []testimg.MBRPartition{{Type: 0x96, Start: off, Size: size}}})
			} else {
				// Room for the backup table after the partition.
				if err = testimg.Truncate(disk, off+size+64*512); err == nil {
					err = testimg.WriteGPT(disk, testimg.GPT{Partitions: []testimg.GPTPartition{{Type: testimg.GUIDBasicData, Start: off, Size: size, Name: "CDROM"}}})
				}
			}
			if err != nil {
				t.Fatal(err)
			}
			p := isoPartition(t, disk)
			if p.Start != off {
				t.Fatalf("partition at %d, want %d", p.Start, off)
			}
			l := openImage(t, disk, p.Start, p.Size, "")
			checkTree(t, l, spec, want{naming: RockRidge, extra: []string{"/rr_moved"}, hardlinks: true, attrs: true})
			checkTSK(t, disk, p.Start/512, openImage(t, disk, p.Start, p.Size, Joliet))
		})
	}
}
