package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/HRDAG/ntt/diagnose"
	"github.com/HRDAG/ntt/internal/medium"
	"github.com/HRDAG/ntt/internal/pgtest"
	"github.com/HRDAG/ntt/internal/testenv"
	"github.com/HRDAG/ntt/internal/testimg"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The runbook typed by hand (issue 17), with the real programs: Phase 1
// `ntt-mount-helper status $HASH || ntt-mount-helper mount $HASH IMG`,
// `ntt-enum /mnt/ntt/$HASH $HASH /tmp/${HASH_SHORT}.raw`, Phase 2
// `ntt-loader /tmp/${HASH_SHORT}.raw $HASH` (no --image), Phase 3
// `ntt-copier --medium-hash $HASH --worker-id test-worker --batch-size 50
// --limit 500`. The runbook's places /mnt/ntt, /data/cold and /tmp are
// temporary directories here (--root, --store and the raw file's path);
// the database is reached through the environment as with `sudo -E`; no
// other flag is added.
type runbook struct {
	t                  *testing.T
	h                  medium.Hash
	dir, root, store   string
	images, image, raw string
	env                []string
	db                 *pgxpool.Pool
	bins               map[string]string
}

func newRunbook(t *testing.T) *runbook {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.Exclusive(t, testenv.StaleLoops) // mount-helper reaps stale loops
	rb := &runbook{t: t, h: randomHash(t), dir: t.TempDir(), bins: map[string]string{}}
	rb.root = filepath.Join(rb.dir, "mnt")
	rb.store = filepath.Join(rb.dir, "cold")
	rb.images = filepath.Join(rb.dir, "img")
	rb.image = filepath.Join(rb.images, rb.h.ImageFileName())
	rb.raw = filepath.Join(rb.dir, "tmp", rb.h.RawFileName())
	for _, d := range []string{rb.root, rb.store, rb.images, filepath.Dir(rb.raw)} {
		require.NoError(t, os.MkdirAll(d, 0o755))
	}
	url := pgtest.URL(t)
	rb.env = append(os.Environ(), "NTT_DB_URL="+url)
	db, err := pgxpool.New(context.Background(), url)
	require.NoError(t, err)
	t.Cleanup(db.Close)
	rb.db = db
	rb.bins["ntt-copier"] = testenv.Binary(t)
	for _, p := range []string{"ntt-mount-helper", "ntt-enum", "ntt-loader"} {
		rb.bins[p] = testenv.Program(t, "../"+p)
	}
	t.Cleanup(func() {
		if code, _, errs := rb.run("ntt-mount-helper", "--root", rb.root, "unmount", string(rb.h)); code != 0 {
			t.Errorf("unmount: %s", errs)
		}
	})
	return rb
}

func randomHash(t *testing.T) medium.Hash {
	b := make([]byte, 16)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return medium.MustParse(fmt.Sprintf("%x", b))
}

// run runs one of the programs and returns its exit code, stdout, stderr.
func (rb *runbook) run(prog string, args ...string) (int, string, string) {
	rb.t.Helper()
	cmd := exec.Command(rb.bins[prog], args...)
	cmd.Env = rb.env
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		rb.t.Fatalf("%s: %v", prog, err)
	}
	return code, o.String(), e.String()
}

// phase1 is the runbook's Phase 1: status || mount, then enumerate.
// It returns mount-helper's stderr.
func (rb *runbook) phase1() string {
	rb.t.Helper()
	h := string(rb.h)
	code, _, _ := rb.run("ntt-mount-helper", "--root", rb.root, "status", h)
	require.Equal(rb.t, 1, code, "not mounted yet")
	code, out, errs := rb.run("ntt-mount-helper", "--root", rb.root, "mount", h, rb.image)
	require.Equal(rb.t, 0, code, "mount: %s\n%s", out, errs)
	code, out, e2 := rb.run("ntt-enum", rb.h.MountPath(rb.root), h, rb.raw)
	require.Equal(rb.t, 0, code, "enum: %s\n%s", out, e2)
	return errs
}

// phase2 is `ntt-loader RAW HASH`.
func (rb *runbook) phase2() {
	rb.t.Helper()
	code, out, errs := rb.run("ntt-loader", rb.raw, string(rb.h))
	require.Equal(rb.t, 0, code, "load: %s\n%s", out, errs)
}

// phase3 is the runbook's copier command; it returns the exit code and
// stderr.
func (rb *runbook) phase3() (int, string) {
	rb.t.Helper()
	code, out, errs := rb.run("ntt-copier", "--medium-hash", string(rb.h), "--worker-id", "test-worker",
		"--batch-size", "50", "--limit", "500", "--root", rb.root, "--store", rb.store)
	require.Contains(rb.t, []int{0, 2}, code, "copy: %s\n%s", out, errs)
	return code, errs
}

// damaged returns the catalogued paths whose inode has damage recorded.
func (rb *runbook) damaged() map[string][]diagnose.Damage {
	rb.t.Helper()
	rows, err := rb.db.Query(context.Background(), `SELECT encode(p.path, 'escape'), i.damage FROM inode i
		JOIN path p USING (medium_hash, dev, ino) WHERE i.medium_hash = $1 AND i.damage IS NOT NULL`, string(rb.h))
	require.NoError(rb.t, err)
	defer rows.Close()
	out := map[string][]diagnose.Damage{}
	for rows.Next() {
		var p string
		var b []byte
		require.NoError(rb.t, rows.Scan(&p, &b))
		var ds []diagnose.Damage
		require.NoError(rb.t, json.Unmarshal(b, &ds))
		out[p] = ds
	}
	require.NoError(rb.t, rows.Err())
	return out
}

func (rb *runbook) medium() (health, imagePath *string, problems map[string]map[string]any) {
	rb.t.Helper()
	var b []byte
	require.NoError(rb.t, rb.db.QueryRow(context.Background(), `SELECT health, image_path, problems FROM medium WHERE medium_hash = $1`,
		string(rb.h)).Scan(&health, &imagePath, &b))
	if b != nil {
		require.NoError(rb.t, json.Unmarshal(b, &problems))
	}
	return health, imagePath, problems
}

// damagedMedium builds the image with one file over an unrescued 4 KiB
// block (found with debugfs, zeroed as ddrescue leaves it) and returns the
// mapfile text and where the bad block lies in the file and the image.
func (rb *runbook) damagedMedium() (mapfile string, fileOff, imageOff int64) {
	rb.t.Helper()
	spec := testimg.Spec{BlockSize: 4096, Entries: []testimg.Entry{
		{Path: "docs/report.doc", Kind: testimg.File, Size: 64 << 10, Seed: 1},
		{Path: "docs/intact.doc", Kind: testimg.File, Size: 64 << 10, Seed: 2},
		{Path: "photos/a.jpg", Kind: testimg.File, Size: 200 << 10, Seed: 3},
		{Path: "notes.txt", Kind: testimg.File, Data: []byte("notes\n")},
	}}
	require.NoError(rb.t, testimg.BuildImage(rb.image, spec))
	out, err := exec.Command("debugfs", "-R", "blocks /docs/report.doc", rb.image).Output()
	require.NoError(rb.t, err)
	blocks := strings.Fields(string(out))
	require.Len(rb.t, blocks, 16, "64 KiB in 4 KiB blocks: %q", out)
	blk, err := strconv.ParseInt(blocks[5], 10, 64)
	require.NoError(rb.t, err)
	fileOff, imageOff = 5*4096, blk*4096
	require.NoError(rb.t, testimg.Zero(rb.image, imageOff, 4096))
	fi, err := os.Stat(rb.image)
	require.NoError(rb.t, err)
	mapfile = fmt.Sprintf(`# Mapfile. Created by GNU ddrescue version 1.27
# Command line: ddrescue /dev/sr0 %[1]s.img %[1]s.map
# current_pos  current_status  current_pass
0x%08[2]X     +               1
#      pos        size  status
0x00000000  0x%08[2]X  +
0x%08[2]X  0x00001000  -
0x%08[3]X  0x%08[4]X  +
`, rb.h, imageOff, imageOff+4096, fi.Size()-imageOff-4096)
	return mapfile, fileOff, imageOff
}

// Defect 1: the runbook's loader has no --image, so the catalog has no
// image path; the copier finds the image from the mount (the loop's
// backing file), its mapfile beside it, records image_path and health, and
// the damage of exactly the file over the unrescued block.
func TestRunbookRecordsDamage(t *testing.T) {
	rb := newRunbook(t)
	mapfile, fileOff, imageOff := rb.damagedMedium()
	require.NoError(t, os.WriteFile(filepath.Join(rb.images, rb.h.MapFileName()), []byte(mapfile), 0o644))

	rb.phase1()
	rb.phase2()
	_, imagePath, _ := rb.medium()
	require.Nil(t, imagePath, "the runbook's load names no image")
	code, errs := rb.phase3()
	require.Equal(t, 0, code, errs)
	assert.NotContains(t, errs, `"mapfile":""`)

	assert.Equal(t, map[string][]diagnose.Damage{"/docs/report.doc": {{FileOffset: fileOff, ImageOffset: imageOff, Length: 4096}}}, rb.damaged())
	health, imagePath, problems := rb.medium()
	require.NotNil(t, health)
	assert.Equal(t, "incomplete", *health)
	require.NotNil(t, imagePath)
	assert.Equal(t, rb.image, *imagePath)
	assert.Contains(t, problems, "unrescued_bytes")
	assert.NotContains(t, problems, "damage_unchecked")
}

// Defect 1, the other order: the files were copied while the mapfile was
// elsewhere (health unknown); the next run of the runbook's copier command,
// with nothing left to copy, finds the mapfile and records the damage of
// the files already copied, the health, and resolves damage_unchecked.
// `ntt-copier damage` then finds the same and records nothing new.
func TestRunbookDamageWhenMapfileAppearsLater(t *testing.T) {
	rb := newRunbook(t)
	mapfile, fileOff, imageOff := rb.damagedMedium()

	rb.phase1()
	rb.phase2()
	code, errs := rb.phase3()
	require.Equal(t, 0, code, errs)
	assert.Contains(t, errs, "damage_unchecked")
	assert.Empty(t, rb.damaged())
	health, _, problems := rb.medium()
	assert.Nil(t, health)
	require.Contains(t, problems, "damage_unchecked")
	assert.NotContains(t, problems["damage_unchecked"], "resolved_at")

	// Asked to check now, without a mapfile: an error naming where it looked.
	code, _, errs = rb.run("ntt-copier", "damage", "--medium-hash", string(rb.h), "--root", rb.root)
	assert.Equal(t, 1, code)
	assert.Contains(t, errs, fmt.Sprintf("medium %s: no ddrescue mapfile found (looked for %s", rb.h, filepath.Join(rb.images, rb.h.MapFileName())))

	require.NoError(t, os.WriteFile(filepath.Join(rb.images, rb.h.MapFileName()), []byte(mapfile), 0o644))
	code, errs = rb.phase3()
	assert.Equal(t, 2, code, "nothing left to copy: %s", errs)
	want := map[string][]diagnose.Damage{"/docs/report.doc": {{FileOffset: fileOff, ImageOffset: imageOff, Length: 4096}}}
	assert.Equal(t, want, rb.damaged())
	health, imagePath, problems := rb.medium()
	require.NotNil(t, health)
	assert.Equal(t, "incomplete", *health)
	require.NotNil(t, imagePath)
	assert.Equal(t, rb.image, *imagePath)
	require.Contains(t, problems, "damage_unchecked")
	assert.Contains(t, problems["damage_unchecked"], "resolved_at")
	assert.EqualValues(t, 1, problems["damage_unchecked"]["damaged"])

	code, out, errs := rb.run("ntt-copier", "damage", "--medium-hash", string(rb.h), "--root", rb.root)
	require.Equal(t, 0, code, errs)
	var rep map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &rep))
	assert.EqualValues(t, 1, rep["damaged"])
	assert.EqualValues(t, 0, rep["recorded"])
	assert.EqualValues(t, 4, rep["checked"])
	assert.Equal(t, want, rb.damaged())
}

// logLines returns the JSON log lines of stderr at level.
func logLines(t *testing.T, stderr, level string) []map[string]any {
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(stderr), "\n") {
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(l), &m), "a JSON log line: %s", l)
		if m["level"] == level {
			out = append(out, m)
		}
	}
	return out
}

// Defect 2: the partition cut off by the end of the image, and the dirty
// journal mounted without replay, are warned about by ntt-mount-helper on
// stderr and recorded in medium.problems (with the partition's extent and
// the image size) by the copier, the first program of the runbook that has
// the catalog; the other partitions are catalogued and copied.
func TestRunbookRecordsLayoutProblems(t *testing.T) {
	rb := newRunbook(t)
	parts, imageSize := testimg.CutDisk(t, rb.image)
	start, size := parts[2].Start, parts[2].Size

	mountErr := rb.phase1()
	warned := logLines(t, mountErr, "WARN")
	require.Len(t, warned, 1, mountErr)
	assert.Contains(t, warned[0]["msg"], fmt.Sprintf("not in the catalog: partition 3 (ext4) spans bytes %d–%d but the image ends at %d",
		start, start+size, imageSize))
	assert.Equal(t, "partition_truncated", warned[0]["problem"])
	assert.Equal(t, string(rb.h), warned[0]["medium"])
	assert.Contains(t, mountErr, "note: partition 1 (ext4): the journal needs recovery and was not replayed")
	assert.NotContains(t, mountErr, "partition 2")
	rb.phase2()
	_, _, problems := rb.medium()
	require.Nil(t, problems, "the runbook's pre-flight and load leave problems NULL")
	code, errs := rb.phase3()
	require.Equal(t, 0, code, errs)
	assert.Contains(t, errs, "not in the catalog: partition 3 (ext4)")

	_, _, problems = rb.medium()
	require.Contains(t, problems, "partition_truncated")
	tr := problems["partition_truncated"]
	assert.EqualValues(t, imageSize, tr["image_size"])
	assert.Equal(t, "warning", tr["severity"])
	listed := tr["partitions"].([]any)
	require.Len(t, listed, 1)
	p := listed[0].(map[string]any)
	assert.EqualValues(t, 3, p["partition"])
	assert.EqualValues(t, start, p["offset"])
	assert.EqualValues(t, size, p["size"])
	assert.EqualValues(t, start+size, p["end"])
	assert.EqualValues(t, imageSize, p["image_size"])

	require.Contains(t, problems, "journal_not_replayed")
	j := problems["journal_not_replayed"]
	assert.Equal(t, "note", j["severity"])
	jp := j["partitions"].([]any)
	require.Len(t, jp, 1)
	assert.EqualValues(t, 1, jp[0].(map[string]any)["partition"])
	for _, flag := range []string{"partition_skipped", "partition_not_mounted"} {
		assert.NotContains(t, problems, flag)
	}

	// Partitions 1 and 2 are catalogued and copied.
	var copied int
	require.NoError(t, rb.db.QueryRow(context.Background(), `SELECT count(*) FROM inode i JOIN path p USING (medium_hash, dev, ino)
		WHERE i.medium_hash = $1 AND i.fs_type = 'f' AND i.status = 'success' AND i.blobid IS NOT NULL`, string(rb.h)).Scan(&copied))
	assert.Equal(t, 4, copied)
}
