package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/HRDAG/ntt/internal/testimg"
	"github.com/HRDAG/ntt/loopdev"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Issue 17, defect 2, under ntt-pipeline: a disk whose last partition is
// cut off by the end of the image and whose first has a dirty journal. The
// pipeline finishes, and the truncated partition (with its extent and the
// image size) and the journal not replayed are in medium.problems, in the
// summary it prints and in the metrics JSON; the run's log warns.
func TestPipelineReportsLayoutProblems(t *testing.T) {
	e := newEnv(t)
	h := "5d41402abc4b2a76b9719d911017c592"
	require.NoError(t, os.MkdirAll(e.images, 0o755))
	image := filepath.Join(e.images, h+".img")
	parts, imageSize := testimg.CutDisk(t, image)
	start, size := parts[2].Start, parts[2].Size

	code, out, errs := e.pipeline(image, "--keep-sources")
	require.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", out, errs)
	text := fmt.Sprintf("partition 3 (ext4) spans bytes %d–%d but the image ends at %d", start, start+size, imageSize)
	assert.Contains(t, out, "Not catalogued")
	assert.Contains(t, out, text)
	assert.Contains(t, out, "Note")
	assert.Contains(t, out, "partition 1 (ext4): the journal needs recovery and was not replayed")
	assert.Contains(t, errs, "not in the catalog: "+text)

	m := e.metrics(h)
	require.Len(t, m.Layout, 2, "%+v", m.Layout)
	tr := m.Layout[0]
	assert.Equal(t, loopdev.FlagPartitionTruncated, tr.Problem)
	assert.Equal(t, 3, tr.Partition)
	assert.Equal(t, start, tr.Offset)
	assert.Equal(t, size, tr.Size)
	assert.Equal(t, imageSize, tr.ImageSize)
	assert.Equal(t, loopdev.FlagJournalNotReplayed, m.Layout[1].Problem)
	assert.Equal(t, 1, m.Layout[1].Partition)

	var problems map[string]map[string]any
	require.NoError(t, e.db.QueryRow(context.Background(), `SELECT problems FROM medium WHERE medium_hash = $1`, h).Scan(&problems))
	require.Contains(t, problems, loopdev.FlagPartitionTruncated)
	assert.EqualValues(t, imageSize, problems[loopdev.FlagPartitionTruncated]["image_size"])
	require.Contains(t, problems, loopdev.FlagJournalNotReplayed)

	// Partitions 1 and 2 are copied.
	var copied int
	require.NoError(t, e.db.QueryRow(context.Background(), `SELECT count(*) FROM inode WHERE medium_hash = $1 AND fs_type = 'f'
		AND status = 'success' AND blobid IS NOT NULL`, h).Scan(&copied))
	assert.Equal(t, 4, copied)
}
