package copier_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/HRDAG/ntt/copier"
	"github.com/HRDAG/ntt/diagnose"
	"github.com/HRDAG/ntt/internal/testimg"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Files copied while no mapfile was known have no damage check; when the
// mapfile turns up, CheckDamage maps the copied files from the mount and
// records the damage of exactly the file over the unrescued range, once.
func TestCheckDamageAfterCopy(t *testing.T) {
	f := newMedium(t, testimg.Spec{Entries: []testimg.Entry{
		{Path: "docs/report.doc", Kind: testimg.File, Size: 64 << 10, Seed: 5},
		{Path: "intact", Kind: testimg.File, Size: 64 << 10, Seed: 6},
		{Path: "link", Kind: testimg.Hardlink, Target: "intact"},
	}})
	stats := f.mustRun(f.options()) // no mapfile: no damage mapper
	require.Equal(t, int64(2), stats.Copied)

	start, _ := extentOf(t, filepath.Join(f.mount, "docs/report.doc"))
	bad := start + 8192
	st, err := os.Stat(f.image)
	require.NoError(t, err)
	mapfile := fmt.Sprintf("0x%08X     +               1\n0x00000000  0x%08X  +\n0x%08X  0x00001000  -\n0x%08X  0x%08X  +\n",
		bad, bad, bad, bad+4096, st.Size()-bad-4096)
	require.NoError(t, os.WriteFile(filepath.Join(filepath.Dir(f.image), f.h.MapFileName()), []byte(mapfile), 0o644))
	p := f.policy(t)
	require.NotNil(t, p.DamageMapper())

	ctx := context.Background()
	_, err = copier.CheckDamage(ctx, f.db, copier.DamageCheckOptions{Medium: string(f.h), MountRoot: f.mountRoot})
	require.ErrorIs(t, err, copier.ErrNoDamageMapper)

	rep, err := copier.CheckDamage(ctx, f.db, copier.DamageCheckOptions{Medium: string(f.h), MountRoot: f.mountRoot,
		Damage: p.DamageMapper(), BatchSize: 1, Logger: testLogger(t)})
	require.NoError(t, err)
	assert.Equal(t, copier.DamageCheckReport{Checked: 2, Damaged: 1, Recorded: 1, Elapsed: rep.Elapsed}, rep)
	var damage []byte
	require.NoError(t, f.db.QueryRow(ctx, `SELECT i.damage FROM inode i JOIN path p USING (medium_hash, dev, ino)
		WHERE p.medium_hash = $1 AND p.path = '/docs/report.doc'`, string(f.h)).Scan(&damage))
	var ds []diagnose.Damage
	require.NoError(t, json.Unmarshal(damage, &ds))
	assert.Equal(t, []diagnose.Damage{{FileOffset: 8192, ImageOffset: bad, Length: 4096}}, ds)
	var n int
	require.NoError(t, f.db.QueryRow(ctx, `SELECT count(*) FROM inode WHERE medium_hash = $1 AND damage IS NOT NULL`, string(f.h)).Scan(&n))
	assert.Equal(t, 1, n)

	// Again: the same finding, nothing new recorded.
	rep, err = copier.CheckDamage(ctx, f.db, copier.DamageCheckOptions{Medium: string(f.h), MountRoot: f.mountRoot, Damage: p.DamageMapper()})
	require.NoError(t, err)
	assert.Equal(t, int64(1), rep.Damaged)
	assert.Zero(t, rep.Recorded)
}

// blockingMapper never answers until released, like an ioctl stuck on a
// failing device.
type blockingMapper struct{ release chan struct{} }

func (b blockingMapper) Damage(context.Context, *os.File, string) (json.RawMessage, error) {
	<-b.release
	return nil, nil
}

// A mapping that never returns ends the check with ErrStalled, naming the
// inode, instead of hanging the copier's start.
func TestCheckDamageStalls(t *testing.T) {
	f := newMedium(t, testimg.Spec{Entries: []testimg.Entry{{Path: "a", Kind: testimg.File, Size: 10 << 10, Seed: 1}}})
	f.mustRun(f.options())
	m := blockingMapper{release: make(chan struct{})}
	defer close(m.release)
	_, err := copier.CheckDamage(context.Background(), f.db, copier.DamageCheckOptions{Medium: string(f.h), MountRoot: f.mountRoot,
		Damage: m, StallTimeout: 200 * time.Millisecond})
	require.ErrorIs(t, err, copier.ErrStalled)
	assert.Contains(t, err.Error(), string(f.h))
	assert.Contains(t, err.Error(), "ino")
}
