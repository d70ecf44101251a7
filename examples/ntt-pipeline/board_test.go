package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"testing"

	"github.com/HRDAG/ntt/internal/testenv"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// openPTY opens a real pseudo-terminal: the program's side and the side
// that reads what it wrote (output post-processing off, so the bytes are
// the program's).
func openPTY(t *testing.T) (term, reader *os.File) {
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	require.NoError(t, unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0))
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	require.NoError(t, err)
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	require.NoError(t, err)
	tio, err := unix.IoctlGetTermios(int(s.Fd()), unix.TCGETS)
	require.NoError(t, err)
	tio.Oflag &^= unix.OPOST
	require.NoError(t, unix.IoctlSetTermios(int(s.Fd()), unix.TCSETS, tio))
	require.NoError(t, unix.IoctlSetWinsize(int(s.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 40, Col: 160}))
	return s, m
}

// On a terminal the queue draws its board, and every start/end and log
// line is printed on a line of its own above it, never into a row; the
// routine lines stay out.
func TestQueueBoardOnATerminal(t *testing.T) {
	e := newEnv(t)
	queueMedia(t, e)
	term, rd := openPTY(t)
	got := make(chan []byte)
	go func() {
		var all bytes.Buffer
		buf := make([]byte, 1<<16)
		for {
			n, err := rd.Read(buf)
			all.Write(buf[:n])
			if err != nil {
				got <- all.Bytes()
				return
			}
		}
	}()
	cmd := exec.Command(testenv.Binary(t), e.queueArgs("--all", "--jobs", "2")...)
	cmd.Stdout, cmd.Stderr = term, term
	require.NoError(t, cmd.Run())
	term.Close() // the reader sees EIO once no one holds the terminal
	out := <-got

	require.Regexp(t, `job [12]  [0-9a-f]{8}  `, string(out), "a job row was drawn")
	require.Contains(t, string(out), "media 0/4 done")
	require.NotContains(t, string(out), "Batch completed")
	// Every start/end line and every log line begins a line: right after a
	// newline or after the board was cleared (ESC [ n F ESC [ J).
	lines := regexp.MustCompile(`\[\d/\d\] (start|archived)|level=WARN`)
	found := lines.FindAllIndex(out, -1)
	require.GreaterOrEqual(t, len(found), 8, "four media started and archived: %q", out)
	for _, loc := range found {
		before := out[:loc[0]]
		ok := len(before) == 0 || bytes.HasSuffix(before, []byte("\n")) || regexp.MustCompile(`\x1b\[\d+F\x1b\[J$`).Match(before)
		require.True(t, ok, "a line was written into the board: %q", out[max(0, loc[0]-80):loc[1]])
	}
}
