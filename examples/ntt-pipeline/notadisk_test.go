package main

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/HRDAG/ntt/internal/medium"
	"github.com/HRDAG/ntt/internal/mountinfo"
	"github.com/HRDAG/ntt/internal/testenv"
	"github.com/stretchr/testify/require"
)

// tarBz2Image makes a real tar.bz2 of a small directory with the system's
// tar and puts it where the pipeline expects a medium image:
// <images>/<md5>.img, the md5 of its bytes as the seed names media.
func tarBz2Image(t *testing.T, e *env) (h, image string) {
	t.Helper()
	for _, tool := range []string{"tar", "bzip2"} {
		if _, err := exec.LookPath(tool); err != nil {
			testenv.SkipOrFail(t, tool+" not installed (scripts/deps.sh)")
		}
	}
	src := filepath.Join(e.dir, "src")
	require.NoError(t, os.MkdirAll(filepath.Join(src, "letters"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(src, "readme.txt"), []byte("not a disk\n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(src, "letters", "1998.txt"), []byte(strings.Repeat("dear sir\n", 200)), 0o644))
	tarball := filepath.Join(e.dir, "backup.tar.bz2")
	out, err := exec.Command("tar", "-cjf", tarball, "-C", src, ".").CombinedOutput()
	require.NoError(t, err, "tar -cjf: %s", out)
	b, err := os.ReadFile(tarball)
	require.NoError(t, err)
	// The test's premise: what tar wrote is bzip2 (magic "BZh" + level).
	require.True(t, len(b) > 4 && string(b[:3]) == "BZh", "tar -cjf did not write bzip2: % x", b[:min(len(b), 8)])
	sum := md5.Sum(b)
	h = hex.EncodeToString(sum[:])
	require.NoError(t, os.MkdirAll(e.images, 0o755))
	image = filepath.Join(e.images, h+".img")
	require.NoError(t, os.Rename(tarball, image))
	return h, image
}

func md5File(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	require.NoError(t, err)
	sum := md5.Sum(b)
	return hex.EncodeToString(sum[:])
}

// Field failure: a tar.bz2 named .img was fed to mount. ntt-pipeline must
// refuse it from its magic bytes, say so, and record "archive, not a disk"
// in medium.problems, without attaching, mounting or cataloguing anything
// and without touching the image.
func TestPipelineRecordsArchiveNotADisk(t *testing.T) {
	for _, c := range []struct {
		name   string
		extra  []string
		reader string        // medium.reader recorded by the run
		phase  string        // the phase that fails
		flag   string        // its flag in medium.problems
		other  string        // the other mode's flag: must be absent
		phases []PhaseMetric // name/outcome of every phase the run went through
	}{
		// auto as root: the probe finds no filesystem, so auto mounts and
		// lets loopdev.Mount refuse in its own words.
		{"default", nil, "mount", "mount", "mount_failed", "enum_failed",
			[]PhaseMetric{{Name: "preflight", Outcome: "ran"}, {Name: "mount", Outcome: "failed"}}},
		// The image reader plans the layout with loopdev.Plan too: the
		// enumerate phase refuses with the same sentinel.
		{"read-image", []string{"--read", "image"}, "image", "enumerate", "enum_failed", "mount_failed",
			[]PhaseMetric{{Name: "preflight", Outcome: "ran"}, {Name: "mount", Outcome: "skipped"}, {Name: "enumerate", Outcome: "failed"}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			h, image := tarBz2Image(t, e)
			fi0, err := os.Stat(image)
			require.NoError(t, err)
			blake0 := blake3File(t, image)

			// -v: loopdev logs "attached" at debug level, so a loop
			// attached before the refusal would show in stderr.
			code, out, errs := e.pipeline(image, append([]string{"-v"}, c.extra...)...)
			require.Equal(t, 1, code, "a failed phase exits 1\nstdout:\n%s\nstderr:\n%s", out, errs)

			// The operator's line names the medium, the refusal, the
			// format and where it was recorded.
			var line string
			for _, l := range strings.Split(errs, "\n") {
				if strings.HasPrefix(l, "ntt-pipeline: medium "+h+": ") && strings.Contains(l, "archive, not a disk") {
					line = l
				}
			}
			require.NotEmpty(t, line, "no line naming medium %s and \"archive, not a disk\" in stderr:\n%s", h, errs)
			require.Contains(t, line, c.phase+" failed")
			require.Contains(t, line, "bzip2")
			require.Contains(t, line, "recorded as "+c.flag+" in medium.problems")

			// The catalog records the refusal, unresolved, with the
			// failing phase; no other phase's flag.
			p := problemsOf(t, e, h)
			require.Contains(t, p, c.flag, "problems: %v", p)
			msg, ok := p[c.flag]["error"].(string)
			require.True(t, ok, "%s has no error text: %v", c.flag, p[c.flag])
			require.Contains(t, msg, "archive, not a disk")
			require.Contains(t, msg, "bzip2")
			require.Equal(t, c.phase, p[c.flag]["phase"])
			require.NotContains(t, p[c.flag], "resolved_at")
			require.NotContains(t, p, c.other, "problems: %v", p)

			// Nothing catalogued: no inode, no path, not enumerated; the
			// reader is the one this mode chose.
			ctx := context.Background()
			var inodes, paths int64
			var enumDone, reader *string
			require.NoError(t, e.db.QueryRow(ctx, `SELECT
				(SELECT count(*) FROM inode WHERE medium_hash = $1),
				(SELECT count(*) FROM path WHERE medium_hash = $1),
				enum_done::text, reader FROM medium WHERE medium_hash = $1`, h).Scan(&inodes, &paths, &enumDone, &reader))
			require.Zero(t, inodes, "inode rows for a refused medium")
			require.Zero(t, paths, "path rows for a refused medium")
			require.Nil(t, enumDone)
			require.NotNil(t, reader)
			require.Equal(t, c.reader, *reader)

			// The run stopped at the refusal: no later phase ran.
			var m Metrics
			b, err := os.ReadFile(filepath.Join(e.work, medium.MustParse(h).Short()+".metrics.json"))
			require.NoError(t, err)
			require.NoError(t, json.Unmarshal(b, &m))
			var got []PhaseMetric
			for _, ph := range m.Phases {
				got = append(got, PhaseMetric{Name: ph.Name, Outcome: ph.Outcome})
			}
			require.Equal(t, c.phases, got)
			_, err = os.Stat(filepath.Join(e.work, medium.MustParse(h).Short()+".raw"))
			require.ErrorIs(t, err, os.ErrNotExist, "no raw enumeration file")
			_, err = os.Stat(filepath.Join(e.dest, h+".tar.zst"))
			require.ErrorIs(t, err, os.ErrNotExist, "a refused medium is not sealed")

			// Refused before any loop device or mount: none was attached
			// (the debug log), none is left on the image (sysfs), nothing
			// is mounted under the root and no mount point was made.
			require.NotContains(t, errs, `"msg":"attached"`)
			require.NotContains(t, errs, `"msg":"Mounted medium"`)
			backing, err := filepath.Glob("/sys/block/loop*/loop/backing_file")
			require.NoError(t, err)
			for _, f := range backing {
				bf, err := os.ReadFile(f)
				if err != nil {
					continue // detached meanwhile by another test
				}
				require.NotEqual(t, image, strings.TrimSuffix(strings.TrimSuffix(string(bf), "\n"), " (deleted)"), "%s backs the image", f)
			}
			mounts, err := mountinfo.Read()
			require.NoError(t, err)
			for _, mt := range mounts {
				require.False(t, mt.MountPoint == e.root || strings.HasPrefix(mt.MountPoint, e.root+"/"), "mounted under the root: %+v", mt)
			}
			_, err = os.Stat(filepath.Join(e.root, h))
			require.ErrorIs(t, err, os.ErrNotExist, "no mount point for a refused medium")
			e.checkNothingLeft(h, image)

			// The image is left exactly as it was: same size, same bytes.
			fi, err := os.Stat(image)
			require.NoError(t, err)
			require.Equal(t, fi0.Size(), fi.Size())
			require.Equal(t, h, md5File(t, image), "the image's md5 (its name) changed")
			require.Equal(t, blake0, blake3File(t, image))
		})
	}
}
