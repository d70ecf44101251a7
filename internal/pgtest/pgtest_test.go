package pgtest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/HRDAG/ntt/internal/schema"
	"github.com/stretchr/testify/require"
)

func TestMain(m *testing.M) { Main(m) }

func TestDatabasesAreIsolated(t *testing.T) {
	ctx := context.Background()
	a, b := New(t), New(t)
	_, err := a.Exec(ctx, `CREATE TABLE only_in_a (x int)`)
	require.NoError(t, err)
	var exists bool
	require.NoError(t, b.QueryRow(ctx, `SELECT to_regclass('only_in_a') IS NOT NULL`).Scan(&exists))
	require.False(t, exists, "a table created in one test database is visible in another")
	var v int
	require.NoError(t, b.QueryRow(ctx, `SELECT max(version) FROM schema_version`).Scan(&v))
	require.Equal(t, schema.Version, v, "test databases are migrated")
}

// TestHelperPanicsWithCluster is run by TestPanickingBinaryLeavesNoCluster
// in a child process: it starts the cluster, prints where it lives and
// panics, so that TestMain's normal shutdown never runs.
func TestHelperPanicsWithCluster(t *testing.T) {
	if os.Getenv("PGTEST_PANIC_CHILD") != "1" {
		return // only meaningful in the child process
	}
	New(t)
	if srv.cluster == nil {
		fmt.Println("EXTERNAL")
		panic("no cluster to observe")
	}
	pid, _ := srv.cluster.PostmasterPID()
	fmt.Printf("CLUSTER %d %s\n", pid, srv.dir)
	panic("deliberate panic with a running cluster")
}

func TestPanickingBinaryLeavesNoCluster(t *testing.T) {
	if os.Getenv(EnvURL) != "" {
		server_(t) // nothing of ours to leak with an external server; still check it answers
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperPanicsWithCluster$", "-test.count=1")
	cmd.Env = append(os.Environ(), "PGTEST_PANIC_CHILD=1")
	out, err := cmd.CombinedOutput()
	require.Error(t, err, "the child test must panic")
	var pid int
	var dir string
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "CLUSTER" {
			pid, _ = strconv.Atoi(f[1])
			dir = f[2]
		}
	}
	require.NotZero(t, pid, "child did not report its cluster:\n%s", out)
	require.True(t, strings.HasPrefix(dir, "/tmp/ntt-pg"), dir)
	// The watchdog works asynchronously after the child died; wait for it.
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		_, statErr := os.Stat(dir)
		if syscall.Kill(pid, 0) != nil && os.IsNotExist(statErr) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("after the panicking test binary exited, postmaster %d or %s is still there", pid, dir)
}

func TestWithDatabase(t *testing.T) {
	require.Equal(t, "postgres://postgres@/x1?host=%2Ftmp%2Fa", withDatabase("postgres://postgres@/postgres?host=%2Ftmp%2Fa", "x1"))
	require.Equal(t, "host=/tmp/a user=u dbname=x1", withDatabase("host=/tmp/a user=u", "x1"))
}
