package main

import (
	"sync/atomic"
	"time"

	"github.com/HRDAG/ntt/archive"
	"github.com/HRDAG/ntt/copier"
	"github.com/HRDAG/ntt/internal/cli"
)

// The progress adapters turn each package's progress callbacks into the
// terminal's status line (off a terminal, the JSON log says enough).

type loaderProgress struct{ status *cli.Status }

func (l loaderProgress) Phase(name string) { l.status.Set("load: %s", name) }
func (l loaderProgress) Records(records, offset int64) {
	l.status.Set("load: %s records read (%s)", cli.SI(float64(records)), human(offset))
}

type copyProgress struct {
	status       *cli.Status
	start        time.Time
	total, bytes atomic.Int64
	files, done  atomic.Int64
	last         atomic.Int64 // unix nanos of the last redraw
}

func (c *copyProgress) Started(t copier.Totals) {
	c.files.Store(t.Files)
	c.total.Store(t.Bytes)
}

func (c *copyProgress) FileDone(r copier.FileResult) {
	c.done.Add(1)
	c.bytes.Add(r.Size)
	now := time.Now().UnixNano()
	if last := c.last.Load(); now-last < int64(200*time.Millisecond) || !c.last.CompareAndSwap(last, now) {
		return
	}
	el := time.Since(c.start)
	b := float64(c.bytes.Load())
	c.status.Set("copy: %d/%d files, %.1f MB/s, ETA %s", c.done.Load(), c.files.Load(), b/1e6/el.Seconds(), cli.ETA(b, float64(c.total.Load()), el))
}

func (c *copyProgress) BatchDone(copier.BatchResult) {}

type archiveProgress struct {
	archive.NopProgress
	status *cli.Status
	start  time.Time
}

func (a archiveProgress) Bytes(p archive.Phase, done int64) {
	a.status.Set("archive %v: %s (%.1f MB/s)", p, human(done), float64(done)/1e6/time.Since(a.start).Seconds())
}
