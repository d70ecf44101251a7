package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/HRDAG/ntt/archive"
	"github.com/HRDAG/ntt/internal/pgtest"
	"github.com/jackc/pgx/v5"
)

// The runbook typed by hand: `ntt-loader --replace` on a medium the
// archiver has sealed is refused with the flag that starts over;
// `--replace --start-over` reloads it and clears copy_done and
// archive_path in the same commit. Every run names its database first.
func TestReplaceOnArchivedMedium(t *testing.T) {
	ctx := context.Background()
	pool := pgtest.New(t)
	url := pool.Config().ConnString()
	raw := writeRaw(t, t.TempDir(), 100)
	code, _, errs := runCLI(t, "--db", url, raw, hash)
	if code != 0 {
		t.Fatalf("load: exit %d\n%s", code, errs)
	}
	// The first log line names the database.
	first, _, _ := strings.Cut(errs, "\n")
	var line map[string]any
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(first), &line); err != nil || line["msg"] != "catalog database" || line["dbname"] != cfg.Database {
		t.Errorf("first log line %q does not name database %s", first, cfg.Database)
	}

	// Copied (as the copier marks files) and sealed by the archiver.
	if _, err := pool.Exec(ctx, `UPDATE inode SET copied = true, status = 'success', blobid = repeat('ab', 32)
		WHERE medium_hash = $1 AND NOT copied`, hash); err != nil {
		t.Fatal(err)
	}
	images, dest := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(images, hash+".img"), make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	res, err := archive.Complete(ctx, pool, archive.Spec{Medium: hash, ImagesDirs: []string{images}, Dest: dest}, archive.CompleteOptions{KeepSources: true})
	if err != nil {
		t.Fatal(err)
	}

	code, _, errs = runCLI(t, "--db", url, "--replace", raw, hash)
	if code != 1 || !strings.Contains(errs, "already archived") || !strings.Contains(errs, res.Path) || !strings.Contains(errs, "--replace --start-over") {
		t.Errorf("--replace on an archived medium: exit %d\n%s", code, errs)
	}
	if n := count(t, pool, `SELECT count(*) FROM inode WHERE medium_hash = $1 AND NOT copied`, hash); n != 0 {
		t.Errorf("refused --replace left %d files uncopied", n)
	}
	if code, _, errs = runCLI(t, "--db", url, "--start-over", raw, hash); code != 1 || !strings.Contains(errs, "--start-over goes with --replace") {
		t.Errorf("--start-over alone: exit %d\n%s", code, errs)
	}
	code, out, errs := runCLI(t, "--db", url, "--replace", "--start-over", raw, hash)
	if code != 0 || !strings.Contains(out, `"started_over":true`) || !strings.Contains(errs, "starting over") {
		t.Fatalf("--replace --start-over: exit %d\n%s\n%s", code, out, errs)
	}
	if n := count(t, pool, `SELECT count(*) FROM medium WHERE medium_hash = $1 AND copy_done IS NULL AND archive_path IS NULL`, hash); n != 1 {
		t.Errorf("after --replace --start-over copy_done/archive_path are still set")
	}
	if code, out, _ := runCLI(t, "--help"); code != 0 || !strings.Contains(out, "--replace --start-over") || !strings.Contains(out, "PGDATABASE=copyjob") {
		t.Errorf("--help does not explain --start-over or the database:\n%s", out)
	}
}
