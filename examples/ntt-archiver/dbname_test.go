package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/HRDAG/ntt/internal/pgtest"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

// Issue 17.7: the archiver's first log line names the catalog database,
// even when it then fails (here: no image to archive).
func TestFirstLogLineNamesTheDatabase(t *testing.T) {
	url := pgtest.URL(t)
	cfg, err := pgx.ParseConfig(url)
	require.NoError(t, err)
	r := ntt(t, "--db", url, "--images", t.TempDir(), "--dest", t.TempDir(), hash)
	require.Equal(t, 1, r.code, r.stderr)
	first, _, _ := strings.Cut(r.stderr, "\n")
	var line map[string]any
	require.NoError(t, json.Unmarshal([]byte(first), &line), "first stderr line %q", first)
	require.Equal(t, "catalog database", line["msg"])
	require.Equal(t, cfg.Database, line["dbname"])
}
