package diagnose

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/HRDAG/ntt/internal/medium"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

var (
	testHash  = medium.MustParse("c9894f1681b5b542eb3a4b75967e9aea").String()
	testHash2 = medium.MustParse("ece03c6779caa14be2b00d380add8475").String()
)

var errEIO = pathErr("read", unix.EIO)

func TestTrackerThresholds(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		health             Health
		checkpoint, giveUp int
	}{
		{HealthOK, 10, 50},
		{HealthIncomplete, 10, 50},
		{HealthCorrupt, 5, 5},
		{HealthFailed, 5, 5},
		{HealthUnknown, 5, 5},
	}
	for _, c := range cases {
		t.Run(string(c.health), func(t *testing.T) {
			tr := NewTracker(DefaultPolicy())
			k := Key{Medium: testHash, Dev: 2049, Ino: 12}
			for n := 1; ; n++ {
				d := tr.Failure(ctx, k, errEIO, Env{Health: c.health})
				require.Equal(t, n, d.RetryCount)
				assert.Equal(t, n == c.checkpoint, d.Checkpoint, "checkpoint at failure %d", n)
				assert.Equal(t, c.health.Degraded(), d.Degraded)
				if n < c.giveUp {
					require.Equal(t, Retry, d.Action, "failure %d", n)
					assert.False(t, d.NeedsEvent() && !d.Checkpoint)
					continue
				}
				require.Equal(t, GiveUp, d.Action)
				assert.Equal(t, StatusFailedPermanent, d.Status, "EIO is permanent")
				assert.Empty(t, d.ClaimedBy)
				assert.Equal(t, ClassIO, d.Class)
				assert.True(t, d.NeedsEvent())
				break
			}
			assert.Equal(t, Settled, tr.Failure(ctx, k, errEIO, Env{Health: c.health}).Action)
			tr.Success(k)
			assert.Zero(t, tr.Failures(k))
			assert.Equal(t, 1, tr.Failure(ctx, k, errEIO, Env{Health: c.health}).RetryCount, "forgotten: counting starts again")
		})
	}
}

func TestTrackerGiveUpStatusByClass(t *testing.T) {
	ctx := context.Background()
	p := Policy{CheckpointAt: 2, GiveUpAt: 3, DegradedCheckpointAt: 2, DegradedGiveUpAt: 3}
	for _, c := range []struct {
		err    error
		status string
		class  Class
	}{
		{pathErr("open", unix.ENOENT), StatusFailedRetryable, ClassMissing},
		{pathErr("open", unix.EACCES), StatusFailedRetryable, ClassPermission},
		{pathErr("read", unix.EIO), StatusFailedPermanent, ClassIO},
		{pathErr("open", unix.ENAMETOOLONG), StatusFailedRetryable, ClassPathTooLong},
		{fmt.Errorf("odd"), StatusFailedRetryable, ClassUnknown},
	} {
		tr := NewTracker(p)
		var d Decision
		for range 3 {
			d = tr.Failure(ctx, Key{Medium: testHash, Ino: 1}, c.err, Env{Health: HealthOK})
		}
		assert.Equal(t, GiveUp, d.Action)
		assert.Equal(t, c.status, d.Status, "%v", c.err)
		assert.Equal(t, c.class, d.Class)
		assert.Equal(t, c.class.ErrorType(), d.ErrorType())
	}
}

func fixtureLog(t *testing.T, name string) *KernelLog {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	require.NoError(t, err)
	return NewKernelLog(bytes.NewReader(b))
}

// The kernel log check confirms beyond-end-of-device only for the medium's
// own devices: the same log skips loop0's inode and not loop1's.
func TestTrackerKernelLogAttribution(t *testing.T) {
	ctx := context.Background()
	kl := fixtureLog(t, "kmsg-linux-6.18-shrunk-loop.txt")
	tr := NewTracker(DefaultPolicy())
	mine := Env{Health: HealthUnknown, KernelLog: kl, Devices: []string{"/dev/loop0"}, WorkerID: "test-worker"}
	other := Env{Health: HealthUnknown, KernelLog: kl, Devices: []string{"loop1"}, WorkerID: "test-worker"}
	otherHash := "ece03c6779caa14be2b00d380add8475"

	var dm, do Decision
	for range 5 {
		dm = tr.Failure(ctx, Key{Medium: testHash, Dev: 1, Ino: 12}, errEIO, mine)
		do = tr.Failure(ctx, Key{Medium: otherHash, Dev: 1, Ino: 12}, errEIO, other)
	}
	require.True(t, dm.Checkpoint)
	assert.Equal(t, Skip, dm.Action)
	assert.Equal(t, ClassBeyondEOF, dm.Class)
	assert.Equal(t, "DIAGNOSTIC_SKIP:BEYOND_EOF", dm.ClaimedBy)
	assert.Equal(t, StatusFailedPermanent, dm.Status)
	assert.Equal(t, ProblemBeyondEOF, dm.Problem)
	require.Len(t, dm.Checks, 1)
	assert.Equal(t, KernelLogCheck, dm.Checks[0].Name)
	assert.Equal(t, ResultBeyondEOF, dm.Checks[0].Result)
	assert.Len(t, dm.Checks[0].Lines, 5)
	assert.Contains(t, dm.Checks[0].Lines[4], "loop0: rw=0, sector=15160")

	require.True(t, do.Checkpoint)
	assert.Equal(t, GiveUp, do.Action, "loop1 had no errors: nothing confirmed, degraded cap reached")
	assert.Equal(t, ClassIO, do.Class)
	assert.Equal(t, ResultClean, do.Checks[0].Result)
	assert.Empty(t, do.Checks[0].Lines)

	lines := dm.LogLines()
	require.Len(t, lines, 2)
	assert.Equal(t, "🔍 DIAGNOSTIC CHECKPOINT ino=12 dev=1 medium=c9894f1681b5b542eb3a4b75967e9aea retry=5 class=beyond_eof checks=kernel_log:beyond_eof action=skip", lines[0])
	assert.Equal(t, "⏭️ SKIPPED ino=12 reason=DIAGNOSTIC_SKIP:BEYOND_EOF dev=1 medium=c9894f1681b5b542eb3a4b75967e9aea retry=5", lines[1])
	assert.True(t, strings.HasPrefix(lines[1][strings.Index(lines[1], "SKIPPED"):], "SKIPPED ino=12 reason=DIAGNOSTIC_SKIP:BEYOND_EOF"), "the seed's grep")

	var checks []Check
	require.NoError(t, json.Unmarshal(dm.ChecksJSON(), &checks))
	assert.Equal(t, dm.Checks, checks)
	assert.JSONEq(t, `[]`, string(Decision{}.ChecksJSON()))
}

// A corrupt structure is proven by the structure itself: at the checkpoint
// the file is skipped as CORRUPT with no kernel log, extents or mapfile.
func TestTrackerCorruptSkipsWithoutEvidence(t *testing.T) {
	ctx := context.Background()
	tr := NewTracker(DefaultPolicy())
	err := fmt.Errorf("reading /big.bin: %w: FAT chain of cluster 7 ends early", ErrCorrupt)
	var d Decision
	for range 20 {
		if d = tr.Failure(ctx, Key{Medium: testHash, Ino: 9}, err, Env{Health: HealthUnknown}); d.Checkpoint {
			break
		}
		require.Equal(t, Retry, d.Action)
	}
	require.True(t, d.Checkpoint)
	assert.Equal(t, Skip, d.Action)
	assert.Equal(t, ClassCorrupt, d.Class)
	assert.Equal(t, "DIAGNOSTIC_SKIP:CORRUPT", d.ClaimedBy)
	assert.Equal(t, StatusFailedPermanent, d.Status)
	assert.Equal(t, ProblemCorrupt, d.Problem)
	assert.Equal(t, ErrorTypeIO, d.ErrorType())
}

func TestTrackerIOConfirmedByKernel(t *testing.T) {
	ctx := context.Background()
	kl := fixtureLog(t, "kmsg-linux-6.18-truncated-backing.txt")
	tr := NewTracker(DefaultPolicy())
	env := Env{Health: HealthIncomplete, KernelLog: kl, Devices: []string{"loop0"}}
	var d Decision
	for n := 1; n <= 10; n++ {
		d = tr.Failure(ctx, Key{Medium: testHash, Ino: 7}, errEIO, env)
		if n < 10 {
			require.Equal(t, Retry, d.Action)
		}
	}
	assert.True(t, d.Checkpoint)
	assert.Equal(t, Skip, d.Action)
	assert.Equal(t, ClassIO, d.Class)
	assert.Equal(t, "DIAGNOSTIC_SKIP:IO", d.ClaimedBy)
	assert.Equal(t, ProblemIOConfirmed, d.Problem)

	// A missing file is not explained by I/O errors on the device.
	tr2 := NewTracker(DefaultPolicy())
	for range 10 {
		d = tr2.Failure(ctx, Key{Medium: testHash, Ino: 8}, pathErr("open", unix.ENOENT), env)
	}
	assert.True(t, d.Checkpoint)
	assert.Equal(t, Retry, d.Action)
	assert.Equal(t, ClassMissing, d.Class)
}

// The tracker under 8 goroutines: every inode reaches its checkpoint exactly
// once and exactly one caller receives its final decision, at the cap.
func TestTrackerConcurrent(t *testing.T) {
	for _, health := range []Health{HealthOK, HealthFailed} {
		t.Run(string(health), func(t *testing.T) {
			ctx := context.Background()
			tr := NewTracker(DefaultPolicy())
			const inodes, workers = 50, 8
			var checkpoints, finals, settled [inodes]atomic.Int32
			var checkpointAt, finalAt [inodes]atomic.Int32
			var wg sync.WaitGroup
			for w := range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					done := make([]bool, inodes)
					left := inodes
					for i := w; left > 0; i = (i + 1) % inodes {
						if done[i] {
							continue
						}
						d := tr.Failure(ctx, Key{Medium: testHash, Dev: 3, Ino: int64(i)}, errEIO, Env{Health: health})
						if d.Checkpoint {
							checkpoints[i].Add(1)
							checkpointAt[i].Store(int32(d.RetryCount))
						}
						switch d.Action {
						case GiveUp, Skip:
							finals[i].Add(1)
							finalAt[i].Store(int32(d.RetryCount))
							done[i], left = true, left-1
						case Settled:
							settled[i].Add(1)
							done[i], left = true, left-1
						}
					}
				}()
			}
			wg.Wait()
			cp, gu := DefaultPolicy().thresholds(health.Degraded())
			for i := range inodes {
				assert.Equal(t, int32(1), checkpoints[i].Load(), "inode %d checkpoints", i)
				assert.Equal(t, int32(1), finals[i].Load(), "inode %d final decisions", i)
				assert.Equal(t, int32(cp), checkpointAt[i].Load())
				assert.Equal(t, int32(gu), finalAt[i].Load())
				assert.Equal(t, int32(workers-1), settled[i].Load(), "every other worker is told Settled")
				assert.Equal(t, gu, tr.Failures(Key{Medium: testHash, Dev: 3, Ino: int64(i)}))
			}
		})
	}
}

func TestDecisionLog(t *testing.T) {
	var buf bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&buf, nil))
	d := Decision{Action: GiveUp, Key: Key{Medium: testHash, Dev: 2, Ino: 99}, Class: ClassMissing,
		RetryCount: 50, Status: StatusFailedRetryable}
	d.Log(context.Background(), logger)
	assert.Contains(t, buf.String(), `"msg":"GAVE UP ino=99 dev=2 medium=c9894f1681b5b542eb3a4b75967e9aea retry=50 class=missing status=failed_retryable"`)
	assert.Contains(t, buf.String(), `"ino":99`)
	Decision{}.Log(context.Background(), nil) // silent, no panic
	assert.Empty(t, Decision{Action: Retry}.LogLines())
}
