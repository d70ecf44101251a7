package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/HRDAG/ntt/diagnose"
	"github.com/HRDAG/ntt/internal/testenv"
	"github.com/HRDAG/ntt/internal/testimg"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func runCmd(args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	code = run(context.Background(), args, &o, &e)
	return code, o.String(), e.String()
}

func TestUsageAndArguments(t *testing.T) {
	code, out, _ := runCmd("--help")
	assert.Equal(t, 0, code)
	for _, verb := range []string{"health MAPFILE", "file IMAGE MAPFILE PATH", "kmsg", "mount MOUNT_POINT LOOPDEV"} {
		assert.Contains(t, out, verb)
	}
	code, _, errOut := runCmd()
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "no command")
	code, _, errOut = runCmd("frobnicate")
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, `unknown command "frobnicate"`)
	code, _, errOut = runCmd("file", "a")
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "file takes 3 argument(s), got 1")
}

func TestHealth(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "c9894f1681b5b542eb3a4b75967e9aea.map")
	require.NoError(t, os.WriteFile(good, []byte("# Mapfile. Created by GNU ddrescue version 1.27\n"+
		"# current_pos  current_status  current_pass\n0x1DCF0000     +               1\n"+
		"#      pos        size  status\n"+
		"0x00000000  0x1DCF0000  +\n0x1DCF0000  0x00010000  -\n0x1DD00000  0x00300000  +\n"), 0o644))
	code, out, errOut := runCmd("health", good)
	require.Equal(t, 0, code, errOut)
	var r diagnose.HealthReport
	require.NoError(t, json.Unmarshal([]byte(out), &r))
	assert.Equal(t, diagnose.HealthIncomplete, r.Health)
	assert.True(t, r.Present)
	assert.True(t, r.Finished)
	assert.Equal(t, 1, r.BadRanges)
	assert.Equal(t, int64(0x10000), r.BadBytes)
	assert.InDelta(t, 99.98, r.RescuedPct, 0.01)

	code, out, _ = runCmd("health", filepath.Join(dir, "absent.map"))
	assert.Equal(t, 0, code)
	assert.Contains(t, out, `"health": "unknown"`)
	assert.Contains(t, out, `"present": false`)

	bad := filepath.Join(dir, "bad.map")
	require.NoError(t, os.WriteFile(bad, []byte("0x0 + 1\n0x0 0x200 +\nnot a block\n"), 0o644))
	code, out, errOut = runCmd("health", bad)
	assert.Equal(t, 1, code)
	assert.Empty(t, out)
	assert.Contains(t, errOut, bad+" line 3")
	assert.Equal(t, 1, strings.Count(errOut, "\n"), "one sentence")
}

func TestKmsgFromSavedLog(t *testing.T) {
	code, out, errOut := runCmd("kmsg", "--file", "../../diagnose/testdata/kmsg-linux-6.18-shrunk-loop.txt", "/dev/loop0", "loop1")
	require.Equal(t, 0, code, errOut)
	var r struct {
		Devices map[string]diagnose.DeviceEvents
	}
	require.NoError(t, json.Unmarshal([]byte(out), &r))
	assert.Equal(t, 6, r.Devices["loop0"].BeyondEOF)
	assert.Contains(t, r.Devices, "loop1")
	assert.Zero(t, r.Devices["loop1"].Total())

	code, _, errOut = runCmd("kmsg")
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "at least one loop device")
}

// file, mount and devices on a real partition at 1 MiB of a disk image,
// with a mapfile marking one of the file's blocks bad.
func TestFileMountDevices(t *testing.T) {
	testenv.RequireRoot(t)
	const partOff = 1 << 20
	fsImg := testimg.Build(t, testimg.Spec{FSType: "ext4", BlockSize: 4096, Size: 8 << 20, Entries: []testimg.Entry{
		{Path: "report.doc", Kind: testimg.File, Size: 8 * 4096, Seed: 3},
	}})
	disk := filepath.Join(t.TempDir(), "c9894f1681b5b542eb3a4b75967e9aea.img")
	require.NoError(t, testimg.Place(disk, partOff, fsImg))
	l := testimg.AttachLoop(t, disk, partOff, 8<<20)
	m := testimg.Mount(t, l.Path, "ext4", "")
	path := filepath.Join(m, "report.doc")

	f, err := os.Open(path)
	require.NoError(t, err)
	exts, _, err := diagnose.FileExtents(f)
	f.Close()
	require.NoError(t, err)
	bad := partOff + exts[0].Physical + 5*4096
	mapfile := filepath.Join(filepath.Dir(disk), "c9894f1681b5b542eb3a4b75967e9aea.map")
	size := int64(partOff + 8<<20)
	require.NoError(t, os.WriteFile(mapfile, fmt.Appendf(nil, "0x%X ? 1\n0x0 0x%X +\n0x%X 0x1000 -\n0x%X 0x%X +\n",
		bad, bad, bad, bad+0x1000, size-bad-0x1000), 0o644))

	code, out, errOut := runCmd("file", disk, mapfile, path)
	require.Equal(t, 0, code, errOut)
	var r struct {
		diagnose.FileDamage
		MapfilePresent bool   `json:"mapfile_present"`
		Health         string `json:"health"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &r))
	assert.True(t, r.MapfilePresent)
	assert.Equal(t, "incomplete", r.Health)
	assert.Equal(t, []diagnose.Damage{{FileOffset: 5 * 4096, ImageOffset: bad, Length: 4096}}, r.Damaged)
	assert.Equal(t, int64(partOff), r.LoopOffset)

	code, out, _ = runCmd("file", disk, "-", path)
	require.Equal(t, 0, code)
	assert.Contains(t, out, `"damaged": []`)

	code, _, errOut = runCmd("file", fsImg, "-", path)
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "not on a loop device of this image")

	code, out, _ = runCmd("mount", m, l.Path)
	assert.Equal(t, 0, code, out)
	assert.Contains(t, out, `"readable": true`)
	code, out, _ = runCmd("mount", t.TempDir(), l.Path)
	assert.Equal(t, 1, code)
	assert.Contains(t, out, `"problem": "not mounted"`)

	code, out, _ = runCmd("devices", disk)
	assert.Equal(t, 0, code)
	assert.Contains(t, out, diagnose.DeviceName(l.Path))
}
