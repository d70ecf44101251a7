package dbconn

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// Riding out a catalog outage. A database restart, a failover or a network
// blip ends every session: the programs' next statement fails with
// "terminating connection due to administrator command" (57P01) or cannot
// connect at all. Such an outage should cost its own length, not the run:
// the copier, the loader and the archiver retry a failed catalog step with
// backoff for a bounded time (Retry.Bound, default DefaultRetry), and only
// an outage longer than that ends them. What is retryable is decided here,
// once, by Retryable.

// DefaultRetry is how long a catalog outage is waited out (2 minutes).
const DefaultRetry = 2 * time.Minute

// ErrUnavailable says that the catalog stayed unreachable for longer than
// the retry bound; the error wraps the last failure too.
var ErrUnavailable = errors.New("catalog database unavailable")

// Retryable reports whether err means that the catalog could not be reached
// or the session was lost (the statement may succeed on a new session), as
// opposed to an error of the statement itself (a constraint violation, a
// syntax error, a timeout, a missing table) or a cancelled context:
//   - server errors of class 08 (connection exception), 57P01
//     (admin_shutdown), 57P02 (crash_shutdown), 57P03 (cannot_connect_now:
//     the server is starting or shutting down) and 53300 (too many
//     connections);
//   - a connection attempt that failed without a server error (refused, no
//     socket), a connection pgx already closed, and network errors or an
//     unexpected end of the stream on an established one.
func Retryable(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return retryableCode(pe.Code)
	}
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) || errors.Is(err, pgconn.ErrConnClosed) || pgconn.SafeToRetry(err) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	for _, e := range []error{io.EOF, io.ErrUnexpectedEOF, syscall.ECONNRESET, syscall.ECONNREFUSED,
		syscall.EPIPE, syscall.ECONNABORTED, syscall.ETIMEDOUT, syscall.EHOSTUNREACH, syscall.ENETUNREACH} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

func retryableCode(code string) bool {
	if strings.HasPrefix(code, "08") {
		return true
	}
	switch code {
	case "57P01", "57P02", "57P03", "53300":
		return true
	}
	return false
}

// Retry waits out catalog outages. The zero value retries for DefaultRetry.
type Retry struct {
	// Bound is how long one step keeps trying, from its first failure
	// (0: DefaultRetry; <0: no retry).
	Bound time.Duration
	// Logger gets a warning per failed attempt and a line when the catalog
	// answers again; nil is silent.
	Logger *slog.Logger
	// OnRetry, when set, is called before each wait (tests, progress).
	OnRetry func(what string, err error, wait time.Duration)
}

// Backoff of the waits between attempts.
const (
	firstWait = 200 * time.Millisecond
	maxWait   = 5 * time.Second
)

// Limit is the bound in effect (Bound with its default applied; 0 for none).
func (r Retry) Limit() time.Duration {
	switch {
	case r.Bound == 0:
		return DefaultRetry
	case r.Bound < 0:
		return 0
	}
	return r.Bound
}

// Do runs op until it succeeds, fails with an error that is not Retryable,
// or the catalog has been unreachable for longer than the bound, waiting
// between attempts (0.2 s, doubling up to 5 s). what names the step in the
// log and in the error ("claiming inodes of medium …"). When ctx is done
// during a wait, Do returns the last error. After the bound the error
// wraps ErrUnavailable and the last failure.
func (r Retry) Do(ctx context.Context, what string, op func() error) error {
	limit := r.Limit()
	var first time.Time
	wait := firstWait
	for attempt := 1; ; attempt++ {
		err := op()
		if err == nil {
			if attempt > 1 && r.Logger != nil {
				r.Logger.Info("catalog reachable again", "step", what, "attempts", attempt,
					"outage_s", time.Since(first).Seconds())
			}
			return nil
		}
		if !Retryable(err) || limit == 0 {
			return err
		}
		if first.IsZero() {
			first = time.Now()
		}
		left := limit - time.Since(first)
		if left <= 0 {
			return fmt.Errorf("%w for more than %v (%d attempts) while %s: %w", ErrUnavailable, limit, attempt, what, err)
		}
		w := min(wait, left)
		if r.Logger != nil {
			r.Logger.Warn("catalog unavailable; retrying", "step", what, "attempt", attempt, "err", err.Error(),
				"wait_s", w.Seconds(), "gives_up_in_s", left.Round(time.Second).Seconds())
		}
		if r.OnRetry != nil {
			r.OnRetry(what, err, w)
		}
		t := time.NewTimer(w)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		wait = min(2*wait, maxWait)
	}
}
