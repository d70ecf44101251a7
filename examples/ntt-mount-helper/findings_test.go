package main

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/HRDAG/ntt/internal/testenv"
	"github.com/HRDAG/ntt/internal/testimg"
	"github.com/HRDAG/ntt/loopdev"
)

// A disk cut off inside its last partition, whose first has a dirty
// journal: mount and status warn on stderr about the partition that is not
// mounted (extent and image size) and note the journal; the layout JSON
// carries the image size and the dirty journal.
func TestMountWarnsAboutLayout(t *testing.T) {
	testenv.RequireRoot(t)
	dir := t.TempDir()
	root := filepath.Join(dir, "mnt")
	img := filepath.Join(dir, hash+".img")
	parts, size := testimg.CutDisk(t, img)
	t.Cleanup(func() { call("--root", root, "unmount", hash) })

	check := func(errs string) {
		t.Helper()
		var warns, notes []map[string]any
		for _, l := range strings.Split(strings.TrimSpace(errs), "\n") {
			var m map[string]any
			require.NoError(t, json.Unmarshal([]byte(l), &m), l)
			switch {
			case m["level"] == "WARN":
				warns = append(warns, m)
			case strings.HasPrefix(m["msg"].(string), "note: "):
				notes = append(notes, m)
			}
		}
		require.Len(t, warns, 1, errs)
		assert.Equal(t, fmt.Sprintf("not in the catalog: partition 3 (ext4) spans bytes %d–%d but the image ends at %d: it was not mounted and none of its files are catalogued",
			parts[2].Start, parts[2].Start+parts[2].Size, size), warns[0]["msg"])
		assert.EqualValues(t, parts[2].Start, warns[0]["offset"])
		assert.EqualValues(t, size, warns[0]["image_size"])
		require.Len(t, notes, 1, errs)
		assert.EqualValues(t, 1, notes[0]["partition"])
		assert.Equal(t, loopdev.FlagJournalNotReplayed, notes[0]["problem"])
	}
	rc, out, errs := call("--root", root, "mount", hash, img)
	require.Equal(t, 0, rc, errs)
	check(errs)
	var lay loopdev.Layout
	require.NoError(t, json.Unmarshal([]byte(out), &lay))
	assert.Equal(t, size, lay.ImageSize)
	assert.True(t, lay.Partitions[0].DirtyJournal)

	rc, _, errs = call("--root", root, "status", hash)
	require.Equal(t, 0, rc, errs)
	check(errs)
}
