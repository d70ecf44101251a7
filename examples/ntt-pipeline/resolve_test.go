package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// startFakeDdrescue starts a process whose command line is ddrescue's
// writing image (argv[0] "ddrescue", the image among its arguments), as
// /proc shows a real one; it blocks reading a pipe until killed.
func startFakeDdrescue(t *testing.T, image string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("/bin/sh", "-c", "read x", "sh", "/dev/sr0", image)
	cmd.Args[0] = "ddrescue"
	r, w, err := os.Pipe()
	require.NoError(t, err)
	cmd.Stdin = r
	require.NoError(t, cmd.Start())
	r.Close()
	t.Cleanup(func() { w.Close(); cmd.Process.Kill(); cmd.Wait() })
	return cmd
}

func problemsOf(t *testing.T, e *env, h string) map[string]map[string]any {
	t.Helper()
	var raw []byte
	require.NoError(t, e.db.QueryRow(context.Background(), `SELECT problems FROM medium WHERE medium_hash = $1`, h).Scan(&raw))
	var m map[string]map[string]any
	require.NoError(t, json.Unmarshal(raw, &m))
	return m
}

// The runbook's stale problem: a run stopped by a ddrescue still writing
// the image records ddrescue_running; the next run, with ddrescue gone,
// succeeds and marks it resolved (kept, with resolved_at). The image has
// no mapfile: the summary says so instead of a percentage never measured.
func TestDdrescueProblemResolvedByALaterRun(t *testing.T) {
	e := newEnv(t)
	s := e.sample()
	require.NoError(t, os.Remove(s.Mapfile))
	dd := startFakeDdrescue(t, s.Image)

	code, out, errs := e.pipeline(s.Image)
	require.Equal(t, 1, code, "stdout:\n%s\nstderr:\n%s", out, errs)
	require.Contains(t, errs, "is still writing this image")
	p := problemsOf(t, e, s.Hash)
	require.Contains(t, p, "ddrescue_running")
	require.NotContains(t, p["ddrescue_running"], "resolved_at")

	require.NoError(t, dd.Process.Kill())
	dd.Wait()
	// A mount root that is a file: the mount phase fails, mount_failed.
	notDir := filepath.Join(e.dir, "not-a-dir")
	require.NoError(t, os.WriteFile(notDir, nil, 0o644))
	code, out, errs = e.pipeline(s.Image, "--root", notDir)
	require.Equal(t, 1, code, "stdout:\n%s\nstderr:\n%s", out, errs)
	p = problemsOf(t, e, s.Hash)
	require.Contains(t, p, "mount_failed", "stderr:\n%s", errs)
	require.NotContains(t, p["mount_failed"], "resolved_at")
	require.NotEmpty(t, p["ddrescue_running"]["resolved_at"], "this pre-flight found no ddrescue")

	code, out, errs = e.pipeline(s.Image)
	require.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", out, errs)
	p = problemsOf(t, e, s.Hash)
	require.Contains(t, p, "ddrescue_running", "a resolved problem is kept")
	require.NotEmpty(t, p["ddrescue_running"]["resolved_at"], "ddrescue_running marked resolved: %v", p)
	require.NotEmpty(t, p["mount_failed"]["resolved_at"], "the mount phase succeeded: %v", p)
	require.Contains(t, errs, `"msg":"problems resolved"`)

	var line string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "Mapfile health") {
			line = l
		}
	}
	require.Contains(t, line, "no mapfile", "summary: %s", out)
	require.NotContains(t, line, "rescued")
	require.False(t, e.metrics(s.Hash).MapfilePresent)
	// The first log line names the catalog database.
	first, _, _ := strings.Cut(errs, "\n")
	require.Contains(t, first, `"msg":"catalog database"`)
}

func TestMetricsHealthText(t *testing.T) {
	require.Equal(t, "no mapfile (health unknown)", (&Metrics{Health: "unknown"}).healthText())
	require.Equal(t, "incomplete (99.40% rescued)", (&Metrics{Health: "incomplete", RescuedPct: 99.4, MapfilePresent: true}).healthText())
	require.Equal(t, "not checked", (&Metrics{}).healthText())
}
