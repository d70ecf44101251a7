package cli

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// openPTY opens a real pseudo-terminal: the board's side (a terminal) and
// the side that reads what it wrote.
func openPTY(t *testing.T) (term, reader *os.File) {
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	require.NoError(t, unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0))
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	require.NoError(t, err)
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	// Raw output: no \n → \r\n translation, so the bytes are the board's.
	tio, err := unix.IoctlGetTermios(int(s.Fd()), unix.TCGETS)
	require.NoError(t, err)
	tio.Oflag &^= unix.OPOST
	require.NoError(t, unix.IoctlSetTermios(int(s.Fd()), unix.TCSETS, tio))
	return s, m
}

func TestBoardLogLinesNeverBreakIt(t *testing.T) {
	term, rd := openPTY(t)
	got := make(chan []byte, 1)
	go func() {
		var all bytes.Buffer
		buf := make([]byte, 4096)
		for {
			n, err := rd.Read(buf)
			all.Write(buf[:n])
			if err != nil || bytes.Contains(all.Bytes(), []byte("END")) {
				got <- all.Bytes()
				return
			}
		}
	}()

	b := NewBoard(term, 2, time.Hour) // no timed redraw: only Write draws
	require.True(t, b.Active())
	b.Set(0, "job 1: copy 10/20 files\x1b[2J") // a control byte must not reach the screen
	b.Set(1, "job 2: "+strings.Repeat("x", 500))
	b.Footer("totals")
	fmt.Fprintf(b, "first log line\n")
	fmt.Fprintf(b, "second log line\n")
	b.Close()
	fmt.Fprintf(b, "END\n")

	out := string(<-got)
	// first line printed, then the board drawn below it (3 rows) …
	i := strings.Index(out, "first log line\n")
	require.GreaterOrEqual(t, i, 0, "%q", out)
	rest := out[i+len("first log line\n"):]
	require.True(t, strings.HasPrefix(rest, "job 1: copy 10/20 files [2J\njob 2: "), "%q", rest)
	// … and cleared (3 rows up, erase) before the next log line.
	j := strings.Index(rest, "totals\n\x1b[3F\x1b[Jsecond log line\n")
	require.GreaterOrEqual(t, j, 0, "%q", rest)
	// The long row is cut to the terminal's width: no wrapped row.
	for _, l := range strings.Split(rest, "\n") {
		require.LessOrEqual(t, len([]rune(l)), termWidth(term)+8, "row %q", l)
	}
	// Closing takes the board off; later writes pass through.
	require.True(t, strings.HasSuffix(out, "totals\n\x1b[3F\x1b[JEND\n"), "%q", out[len(out)-40:])
}

func TestBoardOffATerminalPassesLinesThrough(t *testing.T) {
	var buf bytes.Buffer
	b := NewBoard(&buf, 2, time.Millisecond)
	require.False(t, b.Active())
	b.Set(0, "job 1")
	b.Footer("totals")
	fmt.Fprintf(b, "a log line\n")
	b.Close()
	require.Equal(t, "a log line\n", buf.String())
}

func TestStatusFuncIsABoardRow(t *testing.T) {
	var rows []string
	s := NewStatusFunc(func(l string) { rows = append(rows, l) })
	require.True(t, s.Active())
	s.Set("copy: %d files", 3)
	s.Clear()
	require.Equal(t, []string{"copy: 3 files", ""}, rows)
}
