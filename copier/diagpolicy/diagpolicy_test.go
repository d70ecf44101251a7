package diagpolicy

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/HRDAG/ntt/copier"
	"github.com/HRDAG/ntt/diagnose"
	"github.com/HRDAG/ntt/internal/medium"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

const hash = medium.Hash("0123456789abcdef0123456789abcdef")

// Decisions keep what the copier records: action, class, status, skip
// reason, the checks as JSON, the event flag, the problem and the lines.
func TestConvert(t *testing.T) {
	d := diagnose.Decision{Action: diagnose.Skip, Key: diagnose.Key{Medium: string(hash), Dev: 1, Ino: 12},
		Class: diagnose.ClassBeyondEOF, RetryCount: 10, Checkpoint: true, Status: diagnose.StatusFailedPermanent,
		ClaimedBy: "DIAGNOSTIC_SKIP:BEYOND_EOF", Problem: diagnose.ProblemBeyondEOF,
		Checks: []diagnose.Check{{Name: diagnose.KernelLogCheck, Result: diagnose.ResultBeyondEOF, Lines: []string{"loop3: rw=0, sector=9, limit=8"}}},
		Damage: []diagnose.Damage{{FileOffset: 4096, ImageOffset: 8192, Length: 100, BeyondImage: true}}}
	c := convert(d)
	assert.Equal(t, copier.Skip, c.Action)
	assert.Equal(t, "beyond_eof", c.Class)
	assert.Equal(t, "io_error", c.ErrorType)
	assert.Equal(t, "failed_permanent", c.Status)
	assert.Equal(t, "DIAGNOSTIC_SKIP:BEYOND_EOF", c.ClaimedBy)
	assert.True(t, c.Checkpoint && c.Event)
	assert.Equal(t, 10, c.RetryCount)
	assert.Equal(t, "beyond_eof_detected", c.Problem)
	assert.Equal(t, "loop3: rw=0, sector=9, limit=8", c.ProblemDetails["kernel_log"])
	var checks []diagnose.Check
	require.NoError(t, json.Unmarshal(c.Checks, &checks))
	assert.Equal(t, d.Checks, checks)
	assert.JSONEq(t, `[{"file_offset":4096,"image_offset":8192,"length":100,"beyond_image":true}]`, string(c.Damage))
	require.Len(t, c.Lines, 2)
	assert.Contains(t, c.Lines[0], "DIAGNOSTIC CHECKPOINT ino=12")
	assert.Contains(t, c.Lines[1], "SKIPPED ino=12 reason=DIAGNOSTIC_SKIP:BEYOND_EOF")

	for a, want := range map[diagnose.Action]copier.Action{diagnose.Retry: copier.Retry, diagnose.GiveUp: copier.GiveUp, diagnose.Settled: copier.Settled} {
		assert.Equal(t, want, convert(diagnose.Decision{Action: a}).Action)
	}
	assert.False(t, convert(diagnose.Decision{Action: diagnose.Retry, RetryCount: 3}).Event, "a plain retry is no event")
}

// Without a mapfile: health unknown (the degraded thresholds: 5 and 5),
// and no damage mapping. The tracker counts failures per inode and the
// copier's success forgets them.
func TestNoMapfile(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, string(hash)+".img")
	require.NoError(t, os.WriteFile(img, make([]byte, 4096), 0o644))
	p, err := New(Options{Medium: string(hash), Image: img, KernelLog: diagnose.NewKernelLog(nil)})
	require.NoError(t, err)
	defer p.Close()
	assert.Equal(t, diagnose.HealthUnknown, p.Health().Health)
	dmg, err := p.Damage(context.Background(), nil, "")
	require.NoError(t, err)
	assert.Nil(t, dmg)
	assert.Nil(t, p.DamageMapper(), "nothing to map without unrescued ranges")

	f := copier.Failure{Medium: string(hash), Dev: 1, Ino: 2, Err: unix.ENOENT, WorkerID: "w"}
	var d copier.Decision
	for range 4 {
		d = p.Failed(context.Background(), f)
		assert.Equal(t, copier.Retry, d.Action)
	}
	d = p.Failed(context.Background(), f)
	assert.Equal(t, copier.GiveUp, d.Action, "degraded cap 5")
	assert.Equal(t, "failed_retryable", d.Status, "a missing file is retryable")
	assert.Equal(t, "path_error", d.ErrorType)
	assert.True(t, d.Checkpoint)

	g := copier.Failure{Medium: string(hash), Dev: 1, Ino: 3, Err: errors.Join(unix.EIO)}
	p.Failed(context.Background(), g)
	p.Succeeded(string(hash), 1, 3)
	assert.Zero(t, p.Tracker().Failures(diagnose.Key{Medium: string(hash), Dev: 1, Ino: 3}))
}

// A mapfile that does not parse is an error naming it, not "no mapfile".
func TestBadMapfile(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, string(hash)+".img")
	require.NoError(t, os.WriteFile(img, make([]byte, 4096), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, string(hash)+".map"), []byte("0x0 0x1000 +\ngarbage here\n"), 0o644))
	_, err := New(Options{Medium: string(hash), Image: img, KernelLog: diagnose.NewKernelLog(nil)})
	require.Error(t, err)
	assert.ErrorIs(t, err, diagnose.ErrMalformedMapfile)
	_, err = New(Options{Medium: "nothex"})
	assert.ErrorIs(t, err, medium.ErrInvalidHash)
}

// A checkpoint that found the mount unhealthy proves nothing about the
// file, whatever the kernel log says: the decision is a retry with
// SourceUnhealthy set (the copier stops the run), never a skip, and raises
// no per-file problem flag.
func TestUnhealthyMountIsTheSourcesFailure(t *testing.T) {
	d := diagnose.Decision{Action: diagnose.Skip, Key: diagnose.Key{Medium: string(hash), Dev: 1, Ino: 12},
		Class: diagnose.ClassBeyondEOF, RetryCount: 5, Checkpoint: true, Status: diagnose.StatusFailedPermanent,
		ClaimedBy: "DIAGNOSTIC_SKIP:BEYOND_EOF", Problem: diagnose.ProblemBeyondEOF,
		Checks: []diagnose.Check{
			{Name: diagnose.KernelLogCheck, Result: diagnose.ResultBeyondEOF, Lines: []string{"loop3: rw=0, sector=9, limit=8"}},
			{Name: diagnose.MountCheck, Result: diagnose.ResultUnhealthy, Detail: "root directory unreadable: input/output error"},
		}}
	c := convert(d)
	assert.Equal(t, copier.Retry, c.Action)
	assert.Empty(t, c.Status)
	assert.Empty(t, c.ClaimedBy)
	assert.Empty(t, c.Problem)
	assert.Equal(t, "mount check: root directory unreadable: input/output error", c.SourceUnhealthy)
	assert.True(t, c.Event, "the checkpoint is still recorded")
}

// A mount that is not on a loop device is not watched; a path that is not
// there is an error.
func TestCheckSourceWithoutLoop(t *testing.T) {
	dir := t.TempDir()
	p, err := New(Options{Medium: string(hash), KernelLog: diagnose.NewKernelLog(nil)})
	require.NoError(t, err)
	defer p.Close()
	assert.NoError(t, p.CheckSource(context.Background(), dir))
	assert.NoError(t, p.CheckSource(context.Background(), dir))
	assert.Error(t, p.CheckSource(context.Background(), filepath.Join(dir, "nope")))
}
