package copier_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/HRDAG/ntt/copier"
	"github.com/HRDAG/ntt/copier/diagpolicy"
	"github.com/HRDAG/ntt/diagnose"
	"github.com/HRDAG/ntt/internal/testimg"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// extentOf returns the single extent of a mounted file (physical offset
// and end in the loop device, which starts at byte 0 of the image).
func extentOf(t *testing.T, path string) (start, end int64) {
	t.Helper()
	fh, err := os.Open(path)
	require.NoError(t, err)
	defer fh.Close()
	exts, _, err := diagnose.FileExtents(fh)
	require.NoError(t, err)
	require.NotEmpty(t, exts, path)
	start, end = exts[0].Physical, exts[0].Physical+exts[0].Length
	for _, e := range exts[1:] {
		start, end = min(start, e.Physical), max(end, e.Physical+e.Length)
	}
	return start, end
}

func (f *fixture) policy(t *testing.T) *diagpolicy.Policy {
	t.Helper()
	p, err := diagpolicy.New(diagpolicy.Options{Medium: string(f.h), Image: f.image})
	require.NoError(t, err)
	require.NoError(t, p.KernelLogErr())
	t.Cleanup(func() { p.Close() })
	return p
}

// A truncated image (a floppy rescued short): files whose data lie past the
// end fail to read; the failures go through diagnose, which at the
// checkpoint (failure 5: no mapfile, so the medium counts as degraded) sees
// the file's extents beyond the image and skips it. The log has the seed's
// lines, retries are bounded, the catalog has the skip, the events and the
// problem flags (beyond_eof_detected; high_error_rate, as > 10 % of the
// ≥ 100 inodes fail). Every file before the cut is copied.
func TestTruncatedImageCheckpointAndSkip(t *testing.T) {
	var es []testimg.Entry
	for i := range 115 {
		es = append(es, testimg.Entry{Path: fmt.Sprintf("f%03d", i), Kind: testimg.File, Size: 3000, Seed: uint64(1000 + i)})
	}
	es = append(es, testimg.Entry{Path: "big", Kind: testimg.File, Size: 3_000_000, Seed: 2})
	f := newMedium(t, testimg.Spec{BlockSize: 4096, Size: 16 << 20, Entries: es})

	// Cut the image so that the last 16 files (by position) lie past its end.
	type placed struct {
		name       string
		start, end int64
	}
	var files []placed
	for _, e := range es {
		s, end := extentOf(t, filepath.Join(f.mount, e.Path))
		files = append(files, placed{e.Path, s, end})
	}
	slices.SortFunc(files, func(a, b placed) int { return int(a.end - b.end) })
	cut := files[len(files)-16].start
	beyond := map[string]bool{}
	for _, p := range files {
		if p.end > cut {
			beyond[p.name] = true
		}
	}
	require.GreaterOrEqual(t, len(beyond), 16)
	require.NoError(t, testimg.Truncate(f.image, cut))
	fd, err := unix.Open(f.loop.Path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	require.NoError(t, err)
	require.NoError(t, unix.IoctlSetInt(fd, unix.LOOP_SET_CAPACITY, 0))
	unix.Close(fd)

	logger, logs := captureLog(t)
	o := f.options()
	o.Logger, o.Policy, o.Damage = logger, f.policy(t), nil
	o.BatchSize = 50
	st := f.mustRun(o)

	assert.Equal(t, int64(len(es)-len(beyond)), st.Copied)
	assert.Equal(t, int64(len(beyond)), st.Skipped)
	assert.Equal(t, int64(4*len(beyond)), st.Retried, "bounded: four retries, skipped at the fifth failure")
	assert.NotEmpty(t, logs.lines("Batch completed"))
	ctx := context.Background()
	for name := range beyond {
		var ino int64
		var claimedBy, status, etype string
		var errCount, kept int
		var damage []byte
		require.NoError(t, f.db.QueryRow(ctx, `SELECT i.ino, i.claimed_by, i.status, i.error_type, i.error_count,
			cardinality(i.errors), i.damage FROM inode i JOIN path p USING (medium_hash, dev, ino)
			WHERE p.medium_hash = $1 AND p.path = $2`, string(f.h), []byte("/"+name)).Scan(
			&ino, &claimedBy, &status, &etype, &errCount, &kept, &damage))
		assert.Equal(t, "DIAGNOSTIC_SKIP:BEYOND_EOF", claimedBy, name)
		assert.Equal(t, "failed_permanent", status, name)
		assert.Equal(t, "io_error", etype, name)
		assert.Equal(t, 5, errCount, name)
		assert.Equal(t, 5, kept, name)
		assert.NotEmpty(t, damage, "%s: the ranges past the end are recorded", name)

		skip := fmt.Sprintf("SKIPPED ino=%d reason=DIAGNOSTIC_SKIP:BEYOND_EOF", ino)
		assert.Len(t, logs.lines(skip), 1, name)
		cps := logs.lines(fmt.Sprintf("DIAGNOSTIC CHECKPOINT ino=%d ", ino))
		require.Len(t, cps, 1, name)
		assert.Contains(t, cps[0], "extents:beyond_eof")

		var events int
		var checks []byte
		require.NoError(t, f.db.QueryRow(ctx, `SELECT count(*), max(checks::text) FROM diagnostic_event
			WHERE medium_hash = $1 AND ino = $2 AND action = 'skip' AND worker_id = 'test-worker' AND retry_count = 5`,
			string(f.h), ino).Scan(&events, &checks))
		assert.Equal(t, 1, events, name)
		var cs []diagnose.Check
		require.NoError(t, json.Unmarshal(checks, &cs))
		names := map[string]string{}
		for _, c := range cs {
			names[c.Name] = c.Result
		}
		assert.Equal(t, diagnose.ResultBeyondEOF, names[diagnose.ExtentsCheck], name)
		assert.Equal(t, diagnose.ResultHealthy, names[diagnose.MountCheck], name)
		assert.Contains(t, names, diagnose.KernelLogCheck)
	}
	var hasBeyond, hasRate bool
	require.NoError(t, f.db.QueryRow(ctx, `SELECT problems ? 'beyond_eof_detected', problems ? 'high_error_rate'
		FROM medium WHERE medium_hash = $1`, string(f.h)).Scan(&hasBeyond, &hasRate))
	assert.True(t, hasBeyond)
	assert.True(t, hasRate)
	_, pending, claimed := f.monitor()
	assert.Zero(t, pending)
	assert.Zero(t, claimed)

	// Every file before the cut was copied, with its content.
	rep, err := copier.VerifyStore(ctx, f.db, copier.VerifyOptions{StoreRoot: f.store})
	require.NoError(t, err)
	assert.False(t, rep.Failed())
	for _, e := range es {
		if beyond[e.Path] {
			continue
		}
		got, err := os.ReadFile(filepath.Join(f.store, "archived", string(f.h), e.Path))
		require.NoError(t, err, e.Path)
		assert.Equal(t, blake3Hex(e.Content()), blake3Hex(got), e.Path)
	}
}

// With a ddrescue mapfile beside the image, a file overlapping unrescued
// bytes is still copied as imaged (zeros where ddrescue could not read)
// and its damaged range is recorded in inode.damage.
func TestMapfileDamageRecorded(t *testing.T) {
	f := newMedium(t, testimg.Spec{Entries: []testimg.Entry{
		{Path: "photo.jpg", Kind: testimg.File, Size: 64 << 10, Seed: 5},
		{Path: "intact", Kind: testimg.File, Size: 64 << 10, Seed: 6},
	}})
	start, _ := extentOf(t, filepath.Join(f.mount, "photo.jpg"))
	bad := start + 8192
	st, err := os.Stat(f.image)
	require.NoError(t, err)
	size := st.Size()
	mapfile := fmt.Sprintf(`# Mapfile. Created by GNU ddrescue version 1.27
# current_pos  current_status  current_pass
0x%08X     +               1
#      pos        size  status
0x00000000  0x%08X  +
0x%08X  0x00001000  -
0x%08X  0x%08X  +
`, bad, bad, bad, bad+4096, size-bad-4096)
	require.NoError(t, os.WriteFile(filepath.Join(filepath.Dir(f.image), f.h.MapFileName()), []byte(mapfile), 0o644))
	require.NoError(t, testimg.Zero(f.image, bad, 4096)) // what ddrescue leaves

	p := f.policy(t)
	assert.Equal(t, diagnose.HealthIncomplete, p.Health().Health)
	o := f.options()
	require.NotNil(t, p.DamageMapper(), "the mapfile has an unrescued range")
	o.Policy, o.Damage = p, p.DamageMapper()
	stats := f.mustRun(o)
	assert.Equal(t, int64(2), stats.Copied)

	ctx := context.Background()
	var damage []byte
	require.NoError(t, f.db.QueryRow(ctx, `SELECT i.damage FROM inode i JOIN path p USING (medium_hash, dev, ino)
		WHERE p.medium_hash = $1 AND p.path = '/photo.jpg' AND i.status = 'success'`, string(f.h)).Scan(&damage))
	var ds []diagnose.Damage
	require.NoError(t, json.Unmarshal(damage, &ds))
	assert.Equal(t, []diagnose.Damage{{FileOffset: 8192, ImageOffset: bad, Length: 4096}}, ds)
	var intact *string
	require.NoError(t, f.db.QueryRow(ctx, `SELECT i.damage::text FROM inode i JOIN path p USING (medium_hash, dev, ino)
		WHERE p.medium_hash = $1 AND p.path = '/intact'`, string(f.h)).Scan(&intact))
	assert.Nil(t, intact)

	want := testimg.Entry{Kind: testimg.File, Size: 64 << 10, Seed: 5}.Content()
	clear(want[8192 : 8192+4096])
	got, err := os.ReadFile(filepath.Join(f.store, "archived", string(f.h), "photo.jpg"))
	require.NoError(t, err)
	assert.Equal(t, want, got, "copied as imaged")
}
