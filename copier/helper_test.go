package copier_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/HRDAG/ntt/copier"
	"github.com/HRDAG/ntt/internal/testenv"
	"github.com/jackc/pgx/v5/pgxpool"
)

// logBuffer collects JSON log lines; safe for concurrent writers.
type logBuffer struct{ testenv.Buffer }

// lines returns the messages of the log lines containing substr.
func (l *logBuffer) lines(substr string) []string {
	var out []string
	for _, line := range strings.Split(l.String(), "\n") {
		var m struct {
			Msg string `json:"msg"`
		}
		if json.Unmarshal([]byte(line), &m) == nil && strings.Contains(m.Msg, substr) {
			out = append(out, m.Msg)
		}
	}
	return out
}

// testLogger logs JSON lines into a buffer that is shown if the test fails.
func testLogger(t testing.TB) *slog.Logger {
	l, _ := captureLog(t)
	return l
}

func captureLog(t testing.TB) (*slog.Logger, *logBuffer) {
	buf := &logBuffer{}
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("NTT_TEST_SHOWLOG") != "" {
			out := buf.String()
			if len(out) > 20000 {
				out = "…" + out[len(out)-20000:]
			}
			t.Logf("copier log:\n%s", out)
		}
	})
	return slog.New(slog.NewJSONHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

// The helper process: the test binary re-executed with helperEnv set runs
// copier.Run once with the options in that variable, prints a helperResult
// as JSON on stdout and logs JSON lines on stderr. Tests kill it (-9) or
// run several at once.
const helperEnv = "NTT_COPIER_TEST_HELPER"

type helperOptions struct {
	URL       string
	Medium    string
	Store     string
	MountRoot string
	Worker    string
	Workers   int
	Batch     int
	Lease     time.Duration
}

type helperResult struct {
	Stats  copier.Stats
	Copied [][2]int64 // (dev, ino) of every inode this process copied
	Err    string
}

type copiedList struct {
	mu  sync.Mutex
	out [][2]int64
}

func (c *copiedList) Started(copier.Totals)        {}
func (c *copiedList) BatchDone(copier.BatchResult) {}
func (c *copiedList) FileDone(r copier.FileResult) {
	if r.Err == nil {
		c.mu.Lock()
		c.out = append(c.out, [2]int64{r.Dev, r.Ino})
		c.mu.Unlock()
	}
}

func helperMain() {
	var o helperOptions
	if err := json.Unmarshal([]byte(os.Getenv(helperEnv)), &o); err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		os.Exit(3)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	db, err := pgxpool.New(ctx, o.URL)
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		os.Exit(3)
	}
	defer db.Close()
	cl := &copiedList{}
	st, err := copier.Run(ctx, db, copier.Options{
		Medium: o.Medium, StoreRoot: o.Store, MountRoot: o.MountRoot, WorkerID: o.Worker,
		Workers: o.Workers, BatchSize: o.Batch, Lease: o.Lease, Progress: cl,
		Logger: slog.New(slog.NewJSONHandler(os.Stderr, nil)),
	})
	res := helperResult{Stats: st, Copied: cl.out}
	if err != nil {
		res.Err = err.Error()
	}
	json.NewEncoder(os.Stdout).Encode(res)
	if err != nil {
		os.Exit(1)
	}
}

// helper starts the copier in a child process.
func (f *fixture) helper(worker string, workers, batch int) (*exec.Cmd, *bytes.Buffer, *logBuffer) {
	f.t.Helper()
	o := helperOptions{URL: f.url, Medium: string(f.h), Store: f.store, MountRoot: f.mountRoot,
		Worker: worker, Workers: workers, Batch: batch, Lease: time.Minute}
	b, _ := json.Marshal(o)
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"="+string(b))
	var stdout bytes.Buffer
	stderr := &logBuffer{}
	cmd.Stdout, cmd.Stderr = &stdout, stderr
	if err := cmd.Start(); err != nil {
		f.t.Fatalf("starting helper: %v", err)
	}
	return cmd, &stdout, stderr
}

func parseHelper(t testing.TB, stdout *bytes.Buffer, stderr *logBuffer) helperResult {
	t.Helper()
	var r helperResult
	if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
		t.Fatalf("helper output %q: %v\nstderr:\n%s", stdout.String(), err, stderr.String())
	}
	return r
}
