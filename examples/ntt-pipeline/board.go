package main

// The queue's live board on a terminal: one row per job (medium, phase,
// the phase's own progress line with its rate and ETA) and a totals row,
// drawn by cli.Board at the bottom of stderr. Log lines and the queue's
// start/end lines are printed above it, never into it. The phase of each
// job is read from the "phase started" log records its pipeline emits, so
// the single-medium pipeline needs no change to feed the board.

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/HRDAG/ntt/internal/cli"
	"github.com/HRDAG/ntt/internal/medium"
)

// board is the queue's view of the jobs; nil-safe methods do nothing off
// a terminal.
type board struct {
	b     *cli.Board
	mu    sync.Mutex
	slots []slot
	start time.Time
	// totals
	total, done, failed, running int
	bytesTotal, bytesDone        int64
	skipped                      int
}

type slot struct {
	hash     medium.Hash
	phase    string
	progress string
	started  time.Time
}

func newBoard(b *cli.Board) *board {
	if !b.Active() {
		return nil
	}
	return &board{b: b, start: time.Now()}
}

func (bd *board) resize(n int) {
	if bd == nil {
		return
	}
	bd.mu.Lock()
	bd.slots = make([]slot, n)
	bd.mu.Unlock()
	bd.b.Resize(n)
}

func (bd *board) setTotals(total int, bytes int64, skipped int) {
	if bd == nil {
		return
	}
	bd.mu.Lock()
	bd.total, bd.bytesTotal, bd.skipped = total, bytes, skipped
	bd.mu.Unlock()
	bd.footer()
}

func (bd *board) started(i int, h medium.Hash) {
	if bd == nil {
		return
	}
	bd.mu.Lock()
	bd.slots[i] = slot{hash: h, phase: "starting", started: time.Now()}
	bd.running++
	bd.mu.Unlock()
	bd.row(i)
	bd.footer()
}

func (bd *board) ended(i int, size int64, failed bool) {
	if bd == nil {
		return
	}
	bd.mu.Lock()
	bd.slots[i] = slot{}
	bd.running--
	bd.done++
	bd.bytesDone += size
	if failed {
		bd.failed++
	}
	bd.mu.Unlock()
	bd.row(i)
	bd.footer()
}

// phase is called for every "phase started" record of a job.
func (bd *board) phase(h medium.Hash, name string) {
	if bd == nil {
		return
	}
	bd.mu.Lock()
	i := bd.find(h)
	if i >= 0 {
		bd.slots[i].phase, bd.slots[i].progress = name, ""
	}
	bd.mu.Unlock()
	if i >= 0 {
		bd.row(i)
	}
}

// progress is a job's status line (cli.Status text: "copy: 10/20 files,
// 3.1 MB/s, ETA 4s").
func (bd *board) progress(i int, line string) {
	if bd == nil {
		return
	}
	bd.mu.Lock()
	bd.slots[i].progress = line
	bd.mu.Unlock()
	bd.row(i)
}

func (bd *board) find(h medium.Hash) int {
	for i, s := range bd.slots {
		if s.hash == h {
			return i
		}
	}
	return -1
}

func (bd *board) row(i int) {
	bd.mu.Lock()
	s := bd.slots[i]
	bd.mu.Unlock()
	if s.hash == "" {
		bd.b.Set(i, fmt.Sprintf("job %d  idle", i+1))
		return
	}
	text := s.progress
	if text == "" {
		text = s.phase
	}
	bd.b.Set(i, fmt.Sprintf("job %d  %s  %-9s %s  (%s)", i+1, s.hash.Short(), s.phase, text, time.Since(s.started).Round(time.Second)))
}

func (bd *board) footer() {
	if bd == nil {
		return
	}
	bd.mu.Lock()
	defer bd.mu.Unlock()
	el := time.Since(bd.start)
	eta := "-"
	if bd.bytesDone > 0 {
		eta = cli.ETA(float64(bd.bytesDone), float64(bd.bytesTotal), el)
	}
	bd.b.Footer(fmt.Sprintf("media %d/%d done (%d failed), %d running, %d waiting, %d skipped  ·  %s of %s  ·  %s elapsed, ETA %s",
		bd.done, bd.total, bd.failed, bd.running, bd.total-bd.done-bd.running, bd.skipped,
		human(bd.bytesDone), human(bd.bytesTotal), el.Round(time.Second), eta))
}

// tick keeps the elapsed time and the jobs' ages moving until ctx ends.
func (bd *board) tick(ctx context.Context) {
	if bd == nil {
		return
	}
	go cli.Redraw(ctx.Done(), time.Second, func() {
		bd.footer()
		bd.mu.Lock()
		n := len(bd.slots)
		bd.mu.Unlock()
		for i := range n {
			bd.row(i)
		}
	})
}

// phaseWatch passes every record on to next (when next takes its level)
// and tells the board of each job's "phase started".
type phaseWatch struct {
	next slog.Handler
	job  medium.Hash
	bd   *board
}

// Enabled: "phase started" is an Info record, so Info and above are
// always seen; Debug records are built only when a handler takes them.
func (h phaseWatch) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelInfo || h.next.Enabled(ctx, l)
}

func (h phaseWatch) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "phase started" && h.job != "" {
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "phase" {
				h.bd.phase(h.job, a.Value.String())
				return false
			}
			return true
		})
	}
	if !h.next.Enabled(ctx, r.Level) {
		return nil
	}
	return h.next.Handle(ctx, r)
}

func (h phaseWatch) WithAttrs(as []slog.Attr) slog.Handler {
	for _, a := range as {
		if a.Key == "job" {
			h.job = medium.Hash(a.Value.String())
		}
	}
	h.next = h.next.WithAttrs(as)
	return h
}

func (h phaseWatch) WithGroup(n string) slog.Handler {
	h.next = h.next.WithGroup(n)
	return h
}

// terminalHandler is cli's terminal format (no time, "LEVEL msg k=v")
// written above the board.
func terminalHandler(w io.Writer, level slog.Level) slog.Handler {
	return slog.NewTextHandler(w, &slog.HandlerOptions{Level: level,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		}})
}
