// Package dbconn opens the catalog database for the example programs, the
// same way in each: the URL from --db, else $NTT_DB_URL, else libpq's PG*
// variables; then the schema version check (or migration, for the tools
// that create tables) before any data is touched.
package dbconn

import (
	"context"
	"fmt"
	"os"

	"github.com/HRDAG/ntt/internal/schema"
	"github.com/jackc/pgx/v5/pgxpool"
)

// EnvURL is the environment variable naming the catalog database.
const EnvURL = "NTT_DB_URL"

// Options says how to open the catalog.
type Options struct {
	// URL from the command line; empty falls back to $NTT_DB_URL, then to
	// libpq's PG* environment variables (PGHOST, PGDATABASE, …).
	URL string
	// Migrate brings the schema up to date instead of only checking it.
	Migrate bool
	// MaxConns caps the pool (0: pgx's default).
	MaxConns int32
}

// ResolveURL applies the precedence --db, $NTT_DB_URL, libpq defaults ("").
func ResolveURL(flagURL string) string {
	if flagURL != "" {
		return flagURL
	}
	return os.Getenv(EnvURL)
}

// Open connects to the catalog and checks (or migrates) its schema.
func Open(ctx context.Context, o Options) (*pgxpool.Pool, error) {
	u := ResolveURL(o.URL)
	cfg, err := pgxpool.ParseConfig(u)
	if err != nil {
		return nil, fmt.Errorf("database URL: %w", err)
	}
	if o.MaxConns > 0 {
		cfg.MaxConns = o.MaxConns
	}
	cfg.ConnConfig.RuntimeParams["application_name"] = appName()
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connecting to the catalog database: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connecting to the catalog database (%s): %w", describe(cfg), err)
	}
	if o.Migrate {
		err = schema.Migrate(ctx, pool)
	} else {
		err = schema.Require(ctx, pool, schema.Version)
	}
	if err != nil {
		pool.Close()
		return nil, err
	}
	return pool, nil
}

func appName() string {
	if len(os.Args) > 0 {
		b := []byte(os.Args[0])
		for i := len(b) - 1; i >= 0; i-- {
			if b[i] == '/' {
				return string(b[i+1:])
			}
		}
		return string(b)
	}
	return "ntt"
}

func describe(cfg *pgxpool.Config) string {
	c := cfg.ConnConfig
	return fmt.Sprintf("host=%s port=%d db=%s user=%s", c.Host, c.Port, c.Database, c.User)
}
