// Package dbconn opens the catalog database for the example programs, the
// same way in each: the URL from --db, else $NTT_DB_URL, else libpq's PG*
// variables; then the schema version check (or migration, for the tools
// that create tables) before any data is touched.
//
// Which database a program uses is never left implicit: Open logs it
// (host, port, database, user and where the setting came from; never the
// password) as the program's first log line, and every error names it. With
// only PGHOST/PGPORT set, libpq's default database is the user's name, not
// the runbook's copyjob.
package dbconn

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/HRDAG/ntt/internal/pgcluster"
	"github.com/jackc/pgx/v5"

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
	// Private, when set and no database is configured (no URL, no
	// $NTT_DB_URL, no PG* connection variables), starts or reuses the
	// private cluster in Private.Dir instead of trying libpq's defaults.
	Private *Private
	// Logger receives one line naming the database once connected
	// ("catalog database", host, port, dbname, user, from); nil is silent.
	// Programs pass their logger and open the catalog before logging
	// anything else, so that this is their first log line.
	Logger *slog.Logger
}

// Private is NTT's own PostgreSQL cluster for a machine without a
// configured database. It keeps running after the program exits, so that
// the next program of the runbook finds the same catalog; StopPrivate ends it.
type Private struct {
	// Dir holds the cluster (Dir/data) and its socket; DefaultStateDir()
	// when empty.
	Dir string
	// Say receives one line telling the operator which database is used.
	Say func(line string)
}

// Announce is the Private every program uses: the default state directory,
// and the one line said on w, prefixed with the program's name.
func Announce(program string, w io.Writer) *Private {
	return &Private{Say: func(line string) { fmt.Fprintf(w, "%s: %s\n", program, line) }}
}

// PrivateDatabase is the database name inside the private cluster.
const PrivateDatabase = "ntt"

// DefaultStateDir is where the private cluster lives: $NTT_STATE_DIR, else
// /var/lib/ntt for root (root's home is closed to the postgres user that
// runs the server), else $XDG_DATA_HOME/ntt or ~/.local/share/ntt.
func DefaultStateDir() string {
	if d := os.Getenv("NTT_STATE_DIR"); d != "" {
		return d
	}
	if os.Geteuid() == 0 {
		return "/var/lib/ntt"
	}
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "ntt")
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".local", "share", "ntt")
}

// Configured reports whether the caller named a database: by URL, by
// $NTT_DB_URL, or through libpq's connection variables.
func Configured(flagURL string) bool {
	if ResolveURL(flagURL) != "" {
		return true
	}
	for _, v := range []string{"PGHOST", "PGHOSTADDR", "PGDATABASE", "PGSERVICE", "PGPORT"} {
		if os.Getenv(v) != "" {
			return true
		}
	}
	return false
}

// StartPrivate starts (or finds running) the private cluster in dir,
// creates its database, and returns the database's URL.
func StartPrivate(ctx context.Context, dir string) (string, error) {
	if dir == "" {
		dir = DefaultStateDir()
	}
	c, err := pgcluster.Init(ctx, pgcluster.Options{Dir: filepath.Join(dir, "pg"), Durable: true})
	if err != nil {
		return "", fmt.Errorf("private database in %s: %w", dir, err)
	}
	if err := c.Start(ctx); err != nil {
		return "", fmt.Errorf("private database in %s: %w", dir, err)
	}
	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		return "", fmt.Errorf("private database in %s: %w", dir, err)
	}
	defer conn.Close(ctx)
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, PrivateDatabase).Scan(&exists); err != nil {
		return "", fmt.Errorf("private database in %s: %w", dir, err)
	}
	if !exists {
		if _, err := conn.Exec(ctx, `CREATE DATABASE `+PrivateDatabase); err != nil {
			return "", fmt.Errorf("private database in %s: %w", dir, err)
		}
	}
	return c.URL(PrivateDatabase), nil
}

// StopPrivate stops the private cluster in dir, if it runs.
func StopPrivate(ctx context.Context, dir string) error {
	if dir == "" {
		dir = DefaultStateDir()
	}
	c, err := pgcluster.Init(ctx, pgcluster.Options{Dir: filepath.Join(dir, "pg"), Durable: true})
	if err != nil {
		return err
	}
	return c.Stop(ctx, true)
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
	from := source(o.URL)
	if o.Private != nil && !Configured(o.URL) {
		dir := o.Private.Dir
		if dir == "" {
			dir = DefaultStateDir()
		}
		pu, err := StartPrivate(ctx, dir)
		if err != nil {
			return nil, err
		}
		if o.Private.Say != nil {
			o.Private.Say(fmt.Sprintf("no database configured (--db, %s, PG*): using NTT's private PostgreSQL in %s", EnvURL, filepath.Join(dir, "pg")))
		}
		u = pu
		from = "private cluster in " + filepath.Join(dir, "pg")
		o.Migrate = true // the private catalog is ours to create
	}
	cfg, err := pgxpool.ParseConfig(u)
	if err != nil {
		return nil, fmt.Errorf("database URL (from %s): %w", from, err)
	}
	if o.MaxConns > 0 {
		cfg.MaxConns = o.MaxConns
	}
	cfg.ConnConfig.RuntimeParams["application_name"] = appName()
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connecting to the catalog database (%s, from %s): %w", describe(cfg, ""), from, err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connecting to the catalog database (%s, from %s): %w", describe(cfg, ""), from, err)
	}
	// The server says which database it is: with no database named,
	// libpq's default is the user's name.
	dbname := cfg.ConnConfig.Database
	if err := pool.QueryRow(ctx, `SELECT current_database()`).Scan(&dbname); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connecting to the catalog database (%s, from %s): %w", describe(cfg, ""), from, err)
	}
	if o.Logger != nil {
		o.Logger.Info("catalog database", "host", cfg.ConnConfig.Host, "port", cfg.ConnConfig.Port,
			"dbname", dbname, "user", cfg.ConnConfig.User, "from", from)
	}
	if o.Migrate {
		err = schema.Migrate(ctx, pool)
	} else {
		err = schema.Require(ctx, pool, schema.Version)
	}
	if err != nil {
		pool.Close()
		if ve, ok := errors.AsType[*schema.VersionError](err); ok && ve.Database == "" {
			ve.Database = dbname
		}
		return nil, fmt.Errorf("catalog (%s, from %s): %w", describe(cfg, dbname), from, err)
	}
	return pool, nil
}

// source says where the connection settings come from, for the log line
// and errors.
func source(flagURL string) string {
	switch {
	case flagURL != "":
		return "--db"
	case os.Getenv(EnvURL) != "":
		return EnvURL
	}
	var set []string
	for _, v := range []string{"PGSERVICE", "PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER"} {
		if os.Getenv(v) != "" {
			set = append(set, v)
		}
	}
	if len(set) == 0 {
		return "libpq defaults"
	}
	s := "environment " + set[0]
	for _, v := range set[1:] {
		s += "," + v
	}
	if os.Getenv("PGDATABASE") == "" && os.Getenv("PGSERVICE") == "" {
		s += " (no PGDATABASE: libpq's default database, the user name)"
	}
	return s
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

// describe names the database without the password; dbname, when known,
// is the server's own answer.
func describe(cfg *pgxpool.Config, dbname string) string {
	c := cfg.ConnConfig
	if dbname == "" {
		dbname = c.Database
	}
	if dbname == "" {
		dbname = c.User + " (default)"
	}
	return fmt.Sprintf("host=%s port=%d dbname=%s user=%s", c.Host, c.Port, dbname, c.User)
}
