package main

import (
	"context"
	"fmt"

	"github.com/HRDAG/ntt/internal/medium"
	"github.com/HRDAG/ntt/loopdev"
	"github.com/jackc/pgx/v5/pgxpool"

	_ "github.com/HRDAG/ntt/imagefs/all" // the image readers
)

// chooseReader decides where the files are read: the catalog's dev and
// ino are those of the reader that enumerated the medium, so a recorded
// reader (medium.reader) wins over a guess, and an explicit --read that
// contradicts it is refused. With nothing recorded, auto reads the image
// when one was given and the medium is not mounted. The choice is recorded
// (recordReader) once files were copied with it.
func chooseReader(ctx context.Context, db *pgxpool.Pool, h medium.Hash, c *config) (string, error) {
	switch c.read {
	case "auto", "mount", "image":
	default:
		return "", fmt.Errorf("--read must be auto, mount or image, not %q", c.read)
	}
	var recorded *string
	if err := db.QueryRow(ctx, `SELECT reader FROM medium WHERE medium_hash = $1`, string(h)).Scan(&recorded); err != nil {
		return "", fmt.Errorf("medium %s: reading its reader: %w", h, err)
	}
	read := c.read
	switch {
	case recorded != nil && read != "auto" && read != *recorded:
		return "", fmt.Errorf("medium %s was catalogued with the %s reader and its inode numbers are that reader's: use --read %s", h, *recorded, *recorded)
	case recorded != nil:
		read = *recorded
	case read == "auto":
		read = "mount"
		if _, err := loopdev.Status(string(h), c.root); c.image != "" && err != nil {
			read = "image"
		}
	}
	return read, nil
}

// recordReader records the reader that copied files of the medium, when
// the medium had none recorded (a catalog loaded by ntt-loader).
func recordReader(ctx context.Context, db *pgxpool.Pool, h medium.Hash, read string) error {
	if _, err := db.Exec(ctx, `UPDATE medium SET reader = $2 WHERE medium_hash = $1 AND reader IS NULL`, string(h), read); err != nil {
		return fmt.Errorf("medium %s: recording its reader: %w", h, err)
	}
	return nil
}
