package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/HRDAG/ntt/internal/demo"
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
	h = imageHash(t, tarball)
	require.NoError(t, os.MkdirAll(e.images, 0o755))
	image = filepath.Join(e.images, h+".img")
	require.NoError(t, os.Rename(tarball, image))
	return h, image
}

// imageHash is the seed's name for the image at p (demo.ImageHash).
func imageHash(t *testing.T, p string) string {
	t.Helper()
	h, err := demo.ImageHash(p)
	require.NoError(t, err)
	return h
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
			line := failureLine(errs, h, "archive, not a disk")
			require.NotEmpty(t, line, "no line naming medium %s and \"archive, not a disk\" in stderr:\n%s", h, errs)
			require.Contains(t, line, c.phase+" failed")
			require.Contains(t, line, "bzip2")
			require.Contains(t, line, "recorded as "+c.flag+" in medium.problems")

			// The catalog records the refusal, unresolved, with the
			// failing phase; no other phase's flag.
			msg := e.openProblem(h, c.flag, c.phase)
			require.Contains(t, msg, "archive, not a disk")
			require.Contains(t, msg, "bzip2")
			p := problemsOf(t, e, h)
			require.NotContains(t, p, c.other, "problems: %v", p)

			// Nothing catalogued: no inode, no path, not enumerated; the
			// reader is the one this mode chose.
			e.checkNotCatalogued(h)
			var reader *string
			require.NoError(t, e.db.QueryRow(context.Background(), `SELECT reader FROM medium WHERE medium_hash = $1`, h).Scan(&reader))
			require.NotNil(t, reader)
			require.Equal(t, c.reader, *reader)

			// The run stopped at the refusal: no later phase ran.
			require.Equal(t, c.phases, outcomes(e.metrics(h)))
			_, err = os.Stat(filepath.Join(e.work, medium.MustParse(h).RawFileName()))
			require.ErrorIs(t, err, os.ErrNotExist, "no raw enumeration file")
			_, err = os.Stat(filepath.Join(e.dest, h+".tar.zst"))
			require.ErrorIs(t, err, os.ErrNotExist, "a refused medium is not sealed")

			// Refused before any loop device or mount: none was attached
			// (the debug log), none is left on the image (checkNothingLeft),
			// nothing is mounted under the root and no mount point was made.
			require.NotContains(t, errs, `"msg":"attached"`)
			require.NotContains(t, errs, `"msg":"Mounted medium"`)
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
			require.Equal(t, h, imageHash(t, image), "the image's md5 (its name) changed")
			require.Equal(t, blake0, blake3File(t, image))
		})
	}
}
