// Package pgcluster runs a PostgreSQL cluster from the system's server
// binaries (initdb, pg_ctl): the throwaway clusters of the test suite and the
// private database the example binaries start when none is configured.
//
// The cluster listens on a unix socket only (no TCP), so clusters of tests
// running in parallel never collide. initdb refuses to run as root, so when
// the caller is root the server runs as the "postgres" user: the data and
// socket directories are given to that user, and every parent directory must
// let it pass (Init checks this and says which directory is in the way).
package pgcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

// ErrNoServer is returned when no PostgreSQL server binaries are installed.
var ErrNoServer = errors.New("PostgreSQL server binaries (initdb, pg_ctl) not found; install postgresql (scripts/deps.sh does)")

// maxSocketPath is the limit of a unix socket path (sun_path is 108 bytes,
// PostgreSQL appends "/.s.PGSQL.5432").
const maxSocketPath = 107 - len("/.s.PGSQL.5432")

// Options says where and how a cluster runs.
type Options struct {
	// Dir holds the data directory (Dir/data) and, when SocketDir is empty,
	// the socket.
	Dir string
	// SocketDir is where the server puts its unix socket; it must be short.
	SocketDir string
	// Durable keeps fsync on. Test clusters turn it off: they are thrown away.
	Durable bool
	// Settings are extra server settings (name → value), passed with -c.
	Settings map[string]string
}

// Cluster is an initialised data directory and the binaries that run it.
type Cluster struct {
	BinDir    string
	DataDir   string
	SocketDir string
	LogFile   string
	opts      Options
	cred      *syscall.Credential // nil: run as the calling user
}

// BinDir finds the server binaries: `pg_config --bindir` when it has
// initdb, else the newest /usr/lib/postgresql/*/bin.
func BinDir() (string, error) {
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		dir := strings.TrimSpace(string(out))
		if isExec(filepath.Join(dir, "initdb")) && isExec(filepath.Join(dir, "pg_ctl")) {
			return dir, nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return versionOf(dirs[i]) > versionOf(dirs[j]) })
	for _, dir := range dirs {
		if isExec(filepath.Join(dir, "initdb")) && isExec(filepath.Join(dir, "pg_ctl")) {
			return dir, nil
		}
	}
	return "", ErrNoServer
}

func versionOf(binDir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return v
}

func isExec(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// Init prepares a cluster under opts.Dir, running initdb if the data
// directory is not initialised yet. It does not start the server.
func Init(ctx context.Context, opts Options) (*Cluster, error) {
	bin, err := BinDir()
	if err != nil {
		return nil, err
	}
	if opts.Dir == "" {
		return nil, errors.New("pgcluster: Options.Dir is empty")
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, err
	}
	c := &Cluster{BinDir: bin, DataDir: filepath.Join(dir, "data"), SocketDir: opts.SocketDir, LogFile: filepath.Join(dir, "server.log"), opts: opts}
	if c.SocketDir == "" {
		c.SocketDir = dir
	}
	if len(c.SocketDir) > maxSocketPath {
		return nil, fmt.Errorf("pgcluster: socket directory %s is longer than %d bytes, the unix socket limit", c.SocketDir, maxSocketPath)
	}
	uid, gid := os.Getuid(), os.Getgid()
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("pgcluster: running as root needs the postgres user to run the server: %w", err)
		}
		uid, _ = strconv.Atoi(u.Uid)
		gid, _ = strconv.Atoi(u.Gid)
		c.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	for _, d := range []string{dir, c.SocketDir} {
		// Parents the server's user must pass through: 0755 when we make
		// them; the cluster's own directory: 0700, owned by that user.
		if err := os.MkdirAll(filepath.Dir(d), 0o755); err != nil {
			return nil, fmt.Errorf("pgcluster: %w", err)
		}
		if err := os.Mkdir(d, 0o700); err != nil && !os.IsExist(err) {
			return nil, fmt.Errorf("pgcluster: %w", err)
		}
		if err := os.Chown(d, uid, gid); err != nil {
			return nil, fmt.Errorf("pgcluster: %w", err)
		}
		if err := checkTraversable(filepath.Dir(d), uid); err != nil {
			return nil, err
		}
	}
	if _, err := os.Stat(filepath.Join(c.DataDir, "PG_VERSION")); err == nil {
		return c, nil
	}
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "initdb"), "-D", c.DataDir, "--auth=trust",
		"--username=postgres", "--encoding=UTF8", "--locale=C", "--no-sync")
	if opts.Durable {
		cmd.Args = cmd.Args[:len(cmd.Args)-1]
	}
	if err := c.run(cmd); err != nil {
		return nil, fmt.Errorf("pgcluster: initdb in %s: %w", c.DataDir, err)
	}
	return c, nil
}

// checkTraversable makes sure the user uid can pass through dir and all of
// its parents (a data directory under /root is a common trap).
func checkTraversable(dir string, uid int) error {
	for d := dir; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return fmt.Errorf("pgcluster: %w", err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		ok := fi.Mode()&0o001 != 0 || (int(st.Uid) == uid && fi.Mode()&0o100 != 0) || uid == 0
		if !ok {
			return fmt.Errorf("pgcluster: the server's user (uid %d) cannot enter %s (mode %v): choose a directory outside it", uid, d, fi.Mode().Perm())
		}
		if d == "/" {
			return nil
		}
	}
}

func (c *Cluster) run(cmd *exec.Cmd) error {
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if c.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	}
	cmd.Dir = "/" // the server's user may not be able to enter our cwd
	cmd.Env = serverEnv()
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%w: %s", err, strings.TrimSpace(out.String()))
	}
	return nil
}

// serverEnv is the environment without libpq's PG* variables: they are
// meant for clients, and some (PGPORT, PGDATA) would change what initdb and
// pg_ctl do to this cluster.
func serverEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") {
			env = append(env, kv)
		}
	}
	return env
}

// Start starts the server and waits until it accepts connections. Starting
// a running cluster is not an error.
func (c *Cluster) Start(ctx context.Context) error {
	if c.Running() {
		return nil
	}
	o := []string{"-c listen_addresses=''", "-c unix_socket_directories='" + c.SocketDir + "'"}
	if !c.opts.Durable {
		o = append(o, "-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off")
	}
	keys := make([]string, 0, len(c.opts.Settings))
	for k := range c.opts.Settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		o = append(o, fmt.Sprintf("-c %s=%s", k, c.opts.Settings[k]))
	}
	cmd := exec.CommandContext(ctx, filepath.Join(c.BinDir, "pg_ctl"), "start", "-w", "-t", "60",
		"-D", c.DataDir, "-l", c.LogFile, "-o", strings.Join(o, " "))
	if err := c.run(cmd); err != nil {
		log, _ := os.ReadFile(c.LogFile)
		return fmt.Errorf("pgcluster: starting the server in %s: %w\n%s", c.DataDir, err, tail(log, 2000))
	}
	return nil
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// Running reports whether the cluster's postmaster is alive.
func (c *Cluster) Running() bool {
	pid, ok := c.PostmasterPID()
	if !ok {
		return false
	}
	return syscall.Kill(pid, 0) == nil
}

// PostmasterPID reads the postmaster's pid from postmaster.pid.
func (c *Cluster) PostmasterPID() (int, bool) {
	b, err := os.ReadFile(filepath.Join(c.DataDir, "postmaster.pid"))
	if err != nil {
		return 0, false
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	return pid, err == nil && pid > 0
}

// Stop stops the server. fast waits for sessions to be ended cleanly; the
// immediate mode (fast=false) is for throwaway clusters.
func (c *Cluster) Stop(ctx context.Context, fast bool) error {
	if !c.Running() {
		return nil
	}
	mode := "immediate"
	if fast {
		mode = "fast"
	}
	cmd := exec.CommandContext(ctx, filepath.Join(c.BinDir, "pg_ctl"), "stop", "-w", "-m", mode, "-D", c.DataDir)
	if err := c.run(cmd); err != nil {
		return fmt.Errorf("pgcluster: stopping the server in %s: %w", c.DataDir, err)
	}
	return nil
}

// Restart stops the server in fast mode (every session is terminated, as
// by `pg_ctl restart -m fast`) and starts it again.
func (c *Cluster) Restart(ctx context.Context) error {
	if err := c.Stop(ctx, true); err != nil {
		return err
	}
	return c.Start(ctx)
}

// URL is a connection URL for database db as the postgres superuser over
// the cluster's unix socket.
func (c *Cluster) URL(db string) string {
	return fmt.Sprintf("postgres://postgres@/%s?host=%s&sslmode=disable", url.PathEscape(db), url.QueryEscape(c.SocketDir))
}
