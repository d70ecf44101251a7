package diagnose

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
)

// The words operators grep copier logs for (the seed's runbook:
// grep "DIAGNOSTIC CHECKPOINT\|SKIPPED"). Every line is built here so the
// wording lives in one place.
const (
	LogCheckpoint = "DIAGNOSTIC CHECKPOINT"
	LogSkipped    = "SKIPPED"
	LogGaveUp     = "GAVE UP"
	// SkipPrefix starts claimed_by of an auto-skipped inode:
	// DIAGNOSTIC_SKIP:<CLASS>.
	SkipPrefix = "DIAGNOSTIC_SKIP:"
)

// LogLines are the log lines for d, in order; none for a plain retry.
//
//	🔍 DIAGNOSTIC CHECKPOINT ino=12 dev=2049 medium=<h> retry=10 class=beyond_eof checks=kernel_log:beyond_eof,extents:beyond_eof action=skip
//	⏭️ SKIPPED ino=12 reason=DIAGNOSTIC_SKIP:BEYOND_EOF dev=2049 medium=<h> retry=10
//	GAVE UP ino=12 dev=2049 medium=<h> retry=50 class=io status=failed_permanent
func (d Decision) LogLines() []string {
	var out []string
	if d.Checkpoint {
		out = append(out, d.CheckpointLine())
	}
	switch d.Action {
	case Skip:
		out = append(out, d.SkipLine())
	case GiveUp:
		out = append(out, fmt.Sprintf("%s ino=%d dev=%d medium=%s retry=%d class=%s status=%s",
			LogGaveUp, d.Key.Ino, d.Key.Dev, d.Key.Medium, d.RetryCount, d.Class, d.Status))
	}
	return out
}

// CheckpointLine is the "🔍 DIAGNOSTIC CHECKPOINT …" line.
func (d Decision) CheckpointLine() string {
	checks := make([]string, len(d.Checks))
	for i, c := range d.Checks {
		checks[i] = c.Name + ":" + c.Result
	}
	cs := strings.Join(checks, ",")
	if cs == "" {
		cs = "none"
	}
	return fmt.Sprintf("🔍 %s ino=%d dev=%d medium=%s retry=%d class=%s checks=%s action=%s",
		LogCheckpoint, d.Key.Ino, d.Key.Dev, d.Key.Medium, d.RetryCount, d.Class, cs, d.Action)
}

// SkipLine is the seed's "⏭️ SKIPPED ino=X reason=DIAGNOSTIC_SKIP:BEYOND_EOF"
// line (with dev, medium and retry count after it).
func (d Decision) SkipLine() string {
	return fmt.Sprintf("⏭️ %s ino=%d reason=%s dev=%d medium=%s retry=%d",
		LogSkipped, d.Key.Ino, d.ClaimedBy, d.Key.Dev, d.Key.Medium, d.RetryCount)
}

// Log writes LogLines to logger at level Warn, each with the decision's
// fields as attributes. A nil logger is silent.
func (d Decision) Log(ctx context.Context, logger *slog.Logger) {
	if logger == nil {
		return
	}
	for _, line := range d.LogLines() {
		logger.LogAttrs(ctx, slog.LevelWarn, line,
			slog.String("medium", string(d.Key.Medium)),
			slog.Int64("dev", d.Key.Dev),
			slog.Int64("ino", d.Key.Ino),
			slog.Int("retry", d.RetryCount),
			slog.String("class", d.Class.String()),
			slog.String("action", d.Action.String()),
		)
	}
}

// ChecksJSON is diagnostic_event.checks: the checks performed, as a JSON
// array (never null).
func (d Decision) ChecksJSON() []byte {
	checks := make([]Check, len(d.Checks))
	for i, c := range d.Checks {
		c.Detail = DBText(c.Detail)
		c.Lines = append([]string(nil), c.Lines...)
		for j := range c.Lines {
			c.Lines[j] = DBText(c.Lines[j])
		}
		checks[i] = c
	}
	b, err := json.Marshal(checks)
	if err != nil { // strings only: cannot happen
		return []byte("[]")
	}
	return b
}
