package cli

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// Board is a block of status rows at the bottom of a terminal — one per
// job of a program that runs several at once, plus a totals row — that
// log lines never break: Write clears the block, prints the line above
// it and draws the block again. Rows are cut to the terminal's width so
// that none wraps (a wrapped row would throw off the redraw). Off a
// terminal the board draws nothing and Write passes lines through.
//
// It is safe for concurrent use.
type Board struct {
	mu     sync.Mutex
	w      io.Writer
	on     bool
	rows   []string
	footer string
	drawn  int  // rows on the screen now
	dirty  bool // rows changed since the last draw
	stop   chan struct{}
	closed bool
}

// NewBoard returns a board of n rows on w, redrawn at most every interval
// (active only if w is a terminal). Close it to take the block off the
// screen.
func NewBoard(w io.Writer, n int, interval time.Duration) *Board {
	b := &Board{w: w, on: IsTerminal(w), rows: make([]string, n), stop: make(chan struct{})}
	if b.on {
		go Redraw(b.stop, interval, func() {
			b.mu.Lock()
			defer b.mu.Unlock()
			if b.dirty && !b.closed {
				b.clear()
				b.draw()
			}
		})
	}
	return b
}

// Active reports whether the board is drawn.
func (b *Board) Active() bool { return b != nil && b.on }

// Set replaces row i's text.
func (b *Board) Set(i int, text string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if i >= 0 && i < len(b.rows) && b.rows[i] != text {
		b.rows[i], b.dirty = text, true
	}
}

// Resize sets the number of job rows (rows past n are dropped).
func (b *Board) Resize(n int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	rows := make([]string, n)
	copy(rows, b.rows)
	b.rows, b.dirty = rows, true
}

// Footer replaces the totals row below the job rows.
func (b *Board) Footer(text string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.footer != text {
		b.footer, b.dirty = text, true
	}
}

// Write prints p (whole lines) above the board.
func (b *Board) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.on || b.closed {
		return b.w.Write(p)
	}
	b.clear()
	n, err := b.w.Write(p)
	if len(p) > 0 && p[len(p)-1] != '\n' {
		b.w.Write([]byte{'\n'})
	}
	b.draw()
	return n, err
}

// Close takes the board off the screen; later writes pass through.
func (b *Board) Close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return
	}
	b.closed = true
	close(b.stop)
	if b.on {
		b.clear()
	}
}

// clear moves the cursor to the board's first row and erases to the end
// of the screen.
func (b *Board) clear() {
	if b.drawn > 0 {
		fmt.Fprintf(b.w, "\x1b[%dF\x1b[J", b.drawn)
		b.drawn = 0
	}
}

func (b *Board) draw() {
	empty := b.footer == ""
	for _, r := range b.rows {
		empty = empty && r == ""
	}
	if empty {
		return // nothing to show yet
	}
	width := termWidth(b.w)
	var buf bytes.Buffer
	n := 0
	for _, r := range append(append([]string(nil), b.rows...), b.footer) {
		buf.WriteString(cut(r, width-1))
		buf.WriteByte('\n')
		n++
	}
	b.w.Write(buf.Bytes())
	b.drawn, b.dirty = n, false
}

func termWidth(w io.Writer) int {
	if f, ok := w.(*os.File); ok {
		if ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ); err == nil && ws.Col > 0 {
			return int(ws.Col)
		}
	}
	return 80
}

// cut shortens s to n runes, without control characters that would move
// the cursor.
func cut(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:max(0, n-1)]) + "…"
}
