package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/HRDAG/ntt/enumerate"
	"github.com/HRDAG/ntt/imagefs"
	"github.com/HRDAG/ntt/internal/demo"
	"github.com/HRDAG/ntt/internal/pgtest"
	"github.com/HRDAG/ntt/internal/testenv"
	"github.com/HRDAG/ntt/loader"
)

// The runbook with a CD-ROM the kernel cannot mount: enumerate from the
// image, load, then `ntt-copier --medium-hash H --image IMG` copies every
// file from the image — nothing is mounted — byte-identical to the disc.
func TestCopierReadsTheImage(t *testing.T) {
	dir := t.TempDir()
	m, err := demo.CDROM(dir)
	if err != nil && strings.Contains(err.Error(), "not installed") {
		testenv.SkipOrFail(t, err.Error())
	}
	require.NoError(t, err)
	ctx := context.Background()
	med, err := imagefs.OpenMediumFile(ctx, m.Image, imagefs.MediumOptions{Medium: m.Hash})
	require.NoError(t, err)
	var raw bytes.Buffer
	_, err = enumerate.WalkImage(ctx, med, enumerate.ImageOptions{}, &raw)
	med.Close()
	require.NoError(t, err)
	url := pgtest.URL(t)
	db, err := pgxpool.New(ctx, url)
	require.NoError(t, err)
	t.Cleanup(db.Close)
	// The loader is told no image path: the copier gets it from --image.
	_, err = loader.Load(ctx, db, m.Hash, &raw, loader.Options{})
	require.NoError(t, err)
	store := filepath.Join(dir, "store")
	require.NoError(t, os.MkdirAll(store, 0o755))
	args := []string{"--db", url, "--medium-hash", m.Hash, "--store", store, "--root", filepath.Join(dir, "mnt")}

	// Without --image, nothing is mounted: refused, nothing changes.
	code, _, errOut := runCLI(t, args...)
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "not mounted")

	code, out, errOut := runCLI(t, append(args, "--image", m.Image, "--worker-id", "cd-worker", "--batch-size", "4")...)
	require.Equal(t, 0, code, errOut)
	var sum map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &sum), out)
	require.Equal(t, true, sum["complete"])
	require.Contains(t, errOut, `"reader":"image"`)
	require.NoError(t, demo.CheckTree(filepath.Join(store, "archived", m.Hash), m.Tree))
	var reader string
	require.NoError(t, db.QueryRow(ctx, `SELECT reader FROM medium WHERE medium_hash = $1`, m.Hash).Scan(&reader))
	require.Equal(t, "image", reader)

	// The medium keeps its reader.
	code, _, errOut = runCLI(t, append(args, "--read", "mount")...)
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "--read image")
}
