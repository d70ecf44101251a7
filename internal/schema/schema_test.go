package schema_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/HRDAG/ntt/internal/medium"
	"github.com/HRDAG/ntt/internal/pgcluster"
	"github.com/HRDAG/ntt/internal/pgtest"
	"github.com/HRDAG/ntt/internal/schema"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const seedHash = "c9894f1681b5b542eb3a4b75967e9aea"

func emptyPool(t *testing.T) *pgxpool.Pool {
	pool, err := pgxpool.New(context.Background(), pgtest.EmptyURL(t))
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return pool
}

func TestRequireOnEmptyDatabaseNamesTheFix(t *testing.T) {
	ctx := context.Background()
	db := emptyPool(t)
	err := schema.Require(ctx, db, schema.Version)
	require.Error(t, err)
	require.True(t, errors.Is(err, schema.ErrVersion))
	var ve *schema.VersionError
	require.True(t, errors.As(err, &ve))
	require.Equal(t, 0, ve.Have)
	require.Contains(t, err.Error(), "ntt-loader migrate")
}

func TestMigrateTwice(t *testing.T) {
	ctx := context.Background()
	db := emptyPool(t)
	require.NoError(t, schema.Migrate(ctx, db))
	require.NoError(t, schema.Migrate(ctx, db))
	require.NoError(t, schema.Require(ctx, db, schema.Version))
	var n int
	require.NoError(t, db.QueryRow(ctx, `SELECT max(version) FROM schema_version`).Scan(&n))
	require.Equal(t, schema.Version, n)
}

func TestMigrateConcurrently(t *testing.T) {
	ctx := context.Background()
	db := emptyPool(t)
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = schema.Migrate(ctx, db)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	require.NoError(t, schema.Require(ctx, db, schema.Version))
}

func TestNewerDatabaseIsRefused(t *testing.T) {
	ctx := context.Background()
	db := pgtest.New(t)
	_, err := db.Exec(ctx, `INSERT INTO schema_version (version, name) VALUES ($1, 'future')`, schema.Version+1)
	require.NoError(t, err)
	err = schema.Require(ctx, db, schema.Version)
	require.ErrorIs(t, err, schema.ErrVersion)
	require.Contains(t, err.Error(), "upgrade NTT")
	require.ErrorIs(t, schema.Migrate(ctx, db), schema.ErrVersion, "Migrate never downgrades")
}

func createPair(t *testing.T, db *pgxpool.Pool, h medium.Hash) error {
	ctx := context.Background()
	return pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error { return schema.CreatePartitions(ctx, tx, h) })
}

func TestPartitionPairIdempotentWithSeedNames(t *testing.T) {
	ctx := context.Background()
	db := pgtest.New(t)
	h := medium.MustParse(seedHash)
	require.NoError(t, createPair(t, db, h))
	require.NoError(t, createPair(t, db, h))
	require.NoError(t, schema.CheckAttached(ctx, db, h))

	var parts int
	require.NoError(t, db.QueryRow(ctx, `SELECT count(*) FROM pg_inherits WHERE inhrelid IN (to_regclass($1), to_regclass($2))`,
		h.InodeTable(), h.PathTable()).Scan(&parts))
	require.Equal(t, 2, parts, "one pair, attached")

	// The seed's FK-index query.
	rows, err := db.Query(ctx, `SELECT indexname FROM pg_indexes WHERE tablename = 'path_p_`+seedHash+`' AND indexname LIKE '%fk%'`)
	require.NoError(t, err)
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	require.Equal(t, []string{"path_p_" + seedHash + "_fk_idx"}, names)

	var fks int
	require.NoError(t, db.QueryRow(ctx, `SELECT count(*) FROM pg_constraint WHERE conrelid = to_regclass($1) AND contype = 'f' AND confrelid = to_regclass($2)`,
		h.PathTable(), h.InodeTable()).Scan(&fks))
	require.Equal(t, 1, fks, "partition-to-partition foreign key")

	// Rows go through the parents and cascade partition to partition.
	_, err = db.Exec(ctx, `INSERT INTO inode (medium_hash, dev, ino, fs_type, nlink, size, mtime) VALUES ($1, 1, 2, 'f', 1, 0, 0)`, seedHash)
	require.NoError(t, err)
	_, err = db.Exec(ctx, `INSERT INTO path (medium_hash, dev, ino, path) VALUES ($1, 1, 2, '/x'::bytea)`, seedHash)
	require.NoError(t, err)
	_, err = db.Exec(ctx, `INSERT INTO path (medium_hash, dev, ino, path) VALUES ($1, 1, 3, '/y'::bytea)`, seedHash)
	require.Error(t, err, "a path must point at an existing inode")
	_, err = db.Exec(ctx, `DELETE FROM inode WHERE medium_hash = $1`, seedHash)
	require.NoError(t, err)
	var n int
	require.NoError(t, db.QueryRow(ctx, `SELECT count(*) FROM path WHERE medium_hash = $1`, seedHash).Scan(&n))
	require.Zero(t, n)
}

func TestSeedDescribeQuery(t *testing.T) {
	bin, err := pgcluster.BinDir()
	require.NoError(t, err)
	psql := filepath.Join(bin, "psql")
	if _, err := exec.LookPath(psql); err != nil {
		psql = "psql"
	}
	db := pgtest.New(t)
	h := medium.MustParse(seedHash)
	require.NoError(t, createPair(t, db, h))
	out, err := exec.Command(psql, "-X", "-d", db.Config().ConnString(), "-c", `\d+ inode_p_`+seedHash).CombinedOutput()
	require.NoError(t, err, "%s", out)
	s := string(out)
	require.Contains(t, s, `Table "public.inode_p_`+seedHash+`"`)
	require.Contains(t, s, "Partition of: inode FOR VALUES IN ('"+seedHash+"')")
	require.Contains(t, s, "blobid")
	out, err = exec.Command(psql, "-X", "-d", db.Config().ConnString(), "-c", `\d+ path_p_`+seedHash).CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.True(t, strings.Contains(string(out), "path_p_"+seedHash+"_fk_idx"), "%s", out)
}

func TestDetachedPartitionIsReported(t *testing.T) {
	ctx := context.Background()
	db := pgtest.New(t)
	h := medium.MustParse(seedHash)
	require.NoError(t, createPair(t, db, h))
	_, err := db.Exec(ctx, `ALTER TABLE inode DETACH PARTITION `+h.InodeTable())
	require.NoError(t, err)
	require.ErrorIs(t, schema.CheckAttached(ctx, db, h), schema.ErrNotAttached)
	require.ErrorIs(t, createPair(t, db, h), schema.ErrNotAttached)
}

func TestHashesSharing32CharactersCollide(t *testing.T) {
	db := pgtest.New(t)
	a := medium.MustParse(seedHash + "00")
	b := medium.MustParse(seedHash + "11")
	require.NoError(t, createPair(t, db, a))
	require.ErrorIs(t, createPair(t, db, b), schema.ErrHashCollision)
}

func TestMergeProblemKeepsOtherFlags(t *testing.T) {
	ctx := context.Background()
	db := pgtest.New(t)
	h := medium.MustParse(seedHash)
	var problems *string
	_, err := db.Exec(ctx, `INSERT INTO medium (medium_hash) VALUES ($1)`, seedHash)
	require.NoError(t, err)
	require.NoError(t, db.QueryRow(ctx, `SELECT problems::text FROM medium WHERE medium_hash = $1`, seedHash).Scan(&problems))
	require.Nil(t, problems, "problems is NULL until a problem is recorded")
	require.NoError(t, schema.MergeProblem(ctx, db, h, "enum_failed", map[string]any{"error": "boom"}))
	require.NoError(t, schema.MergeProblem(ctx, db, h, "beyond_eof_detected", map[string]any{"ino": 12}))
	var enumErr string
	var ino int
	require.NoError(t, db.QueryRow(ctx, `SELECT problems->'enum_failed'->>'error', (problems->'beyond_eof_detected'->>'ino')::int FROM medium WHERE medium_hash = $1`, seedHash).Scan(&enumErr, &ino))
	require.Equal(t, "boom", enumErr)
	require.Equal(t, 12, ino)
}

// Migration 2 rewrites the blob id checks in a cheaper form: a version 1
// catalog with a medium's partitions upgrades in place, and the rule is the
// same as before (64 lowercase hex digits) on the parents and the
// partitions.
func TestBlobIDCheckUpgradeKeepsTheRule(t *testing.T) {
	ctx := context.Background()
	db := emptyPool(t)
	v1, err := os.ReadFile(filepath.Join("migrations", "0001_init.sql"))
	require.NoError(t, err)
	_, err = db.Exec(ctx, string(v1))
	require.NoError(t, err)
	_, err = db.Exec(ctx, `CREATE TABLE schema_version (version integer PRIMARY KEY, name text NOT NULL,
		applied_at timestamptz NOT NULL DEFAULT now()); INSERT INTO schema_version (version, name) VALUES (1, '0001_init.sql')`)
	require.NoError(t, err)
	h := medium.MustParse(seedHash)
	require.NoError(t, createPair(t, db, h))
	good := strings.Repeat("0123456789abcdef", 4)
	_, err = db.Exec(ctx, `INSERT INTO inode (medium_hash, dev, ino, fs_type, nlink, size, mtime, blobid) VALUES ($1, 1, 1, 'f', 1, 0, 0, $2)`, seedHash, good)
	require.NoError(t, err)

	require.ErrorIs(t, schema.Require(ctx, db, schema.Version), schema.ErrVersion)
	require.NoError(t, schema.Migrate(ctx, db))
	require.NoError(t, schema.Require(ctx, db, schema.Version))

	for _, table := range []string{"inode", h.InodeTable(), "blobs"} {
		var def string
		require.NoError(t, db.QueryRow(ctx, `SELECT pg_get_constraintdef(oid) FROM pg_constraint
			WHERE conrelid = to_regclass($1) AND conname = $2`, table, map[bool]string{true: "blobs", false: "inode"}[table == "blobs"]+"_blobid_check").Scan(&def))
		require.NotContains(t, def, "{64}", table)
	}
	bad := []string{
		strings.Repeat("0123456789ABCDEF", 4), // uppercase
		good[:63],                             // short
		good + "0",                            // long
		good[:63] + "g",                       // not hex
		good[:63] + "\n",                      // a newline where '$' might match
		strings.Repeat("é", 64),               // 64 characters, not hex
	}
	for i, id := range bad {
		_, err := db.Exec(ctx, `INSERT INTO blobs (blobid, size) VALUES ($1, 0)`, id)
		require.ErrorContains(t, err, "blobs_blobid_check", "blobs %q", id)
		_, err = db.Exec(ctx, `INSERT INTO inode (medium_hash, dev, ino, fs_type, nlink, size, mtime, blobid) VALUES ($1, 2, $2, 'f', 1, 0, 0, $3)`,
			seedHash, i+10, id)
		require.ErrorContains(t, err, "inode_blobid_check", "inode %q", id)
	}
	_, err = db.Exec(ctx, `INSERT INTO blobs (blobid, size) VALUES ($1, 0)`, good)
	require.NoError(t, err)
}
