package testimg

import (
	"errors"
	"fmt"
	"os"
	"strconv"
)

// ErrNoJournal is returned by MarkJournalDirty for a filesystem without a
// journal (ext2).
var ErrNoJournal = errors.New("filesystem has no journal")

// Truncate cuts (or sparsely extends) the image file to size bytes, as a
// rescue that stopped early leaves it.
func Truncate(image string, size int64) error {
	if err := os.Truncate(image, size); err != nil {
		return fmt.Errorf("testimg: truncating %s to %d bytes: %w", image, size, err)
	}
	return nil
}

// Zero overwrites n bytes at offset off with zeros, as ddrescue leaves an
// area it could not read. The file is not extended.
func Zero(image string, off, n int64) error {
	return WriteAt(image, off, make([]byte, n))
}

// WriteAt writes data into the existing image at byte offset off (the file
// grows if the write goes past its end).
func WriteAt(image string, off int64, data []byte) error {
	f, err := os.OpenFile(image, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("testimg: %w", err)
	}
	_, err = f.WriteAt(data, off)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("testimg: writing %d bytes at %d in %s: %w", len(data), off, image, err)
	}
	return nil
}

// MarkJournalDirty leaves the ext3/ext4 filesystem in image (starting at
// byte 0) in the state of a disk pulled while mounted: its journal holds
// one committed transaction that was never replayed, and the superblock has
// the needs_recovery flag. It uses debugfs's journal writer (jo; jw; jc).
// The transaction re-writes the filesystem's last block with its current
// contents, so replaying it changes nothing.
//
// What this does to mounting (checked by the package's tests): a plain
// read-only mount fails on a read-only loop device ("recovery required on
// readonly filesystem ... write access unavailable, cannot proceed"), and
// it would write the device if the loop were writable, while -o ro,noload
// (ext3: norecovery, same thing) mounts. The kernel decides on the
// needs_recovery flag alone; the real transaction makes the journal look
// like a crash to e2fsck and debugfs logdump too.
func MarkJournalDirty(image string) error {
	f, err := os.Open(image)
	if err != nil {
		return fmt.Errorf("testimg: %w", err)
	}
	sb, err := readSuperblock(f)
	if err != nil {
		f.Close()
		return fmt.Errorf("testimg: %s: %w", image, err)
	}
	if !sb.hasJournal {
		f.Close()
		return fmt.Errorf("testimg: %s: %w", image, ErrNoJournal)
	}
	last := sb.blocksCount - 1
	block := make([]byte, sb.blockSize)
	_, err = f.ReadAt(block, last*sb.blockSize)
	f.Close()
	if err != nil {
		return fmt.Errorf("testimg: %s: reading block %d: %w", image, last, err)
	}
	data, err := os.CreateTemp("", "testimg-journal-")
	if err != nil {
		return fmt.Errorf("testimg: %w", err)
	}
	defer os.Remove(data.Name())
	_, err = data.Write(block)
	if cerr := data.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("testimg: %w", err)
	}
	return debugfsScript(image, "jo\njw -b "+strconv.FormatInt(last, 10)+" \""+data.Name()+"\"\njc\n")
}
