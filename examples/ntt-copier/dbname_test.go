package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/HRDAG/ntt/internal/pgtest"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

// Issue 17.7: every verb's first log line names the catalog database.
func TestFirstLogLineNamesTheDatabase(t *testing.T) {
	url := pgtest.URL(t)
	cfg, err := pgx.ParseConfig(url)
	require.NoError(t, err)
	for _, args := range [][]string{
		{"--db", url, "--medium-hash", "ece03c6779caa14be2b00d380add8475", "--store", t.TempDir(), "--root", t.TempDir()},
		{"reset-failed", "--db", url, "--medium-hash", "ece03c6779caa14be2b00d380add8475"},
		{"verify-store", "--db", url, "--store", t.TempDir()},
	} {
		_, _, errOut := runCLI(t, args...)
		first, _, _ := strings.Cut(errOut, "\n")
		var line map[string]any
		require.NoError(t, json.Unmarshal([]byte(first), &line), "%v: first stderr line %q", args[0], first)
		require.Equal(t, "catalog database", line["msg"], "%v", args[0])
		require.Equal(t, cfg.Database, line["dbname"], "%v", args[0])
	}
}
