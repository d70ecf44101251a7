package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/HRDAG/ntt/internal/cli"
	"github.com/HRDAG/ntt/internal/dbconn"
)

// defaultImages is where the runbook keeps the images waiting (the seed's
// /data/fast/img).
const defaultImages = "/data/fast/img"

const statusUsage = `Usage: ntt-pipeline status [options]

Print the processing queue: every medium in the images directory or in the
catalog, with its state (imaging, settling, ready, enumerated, loaded,
copying n %, copied, archived, archived unreadable, failed: flag, missing),
image size, health, files, dedup rate and last current problem. It only
reads: nothing is changed.

Exit status: 0 printed; 1 error.

Options:
`

func runStatus(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("ntt-pipeline status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var db, state, images, work string
	var settle time.Duration
	var asJSON bool
	fs.StringVar(&db, "db", "", "catalog database `URL`")
	fs.StringVar(&state, "state", "", "`DIR` of the private database (default "+dbconn.DefaultStateDir()+")")
	fs.StringVar(&images, "images", defaultImages, "images `DIR` (<hash>.img, .map, logs)")
	fs.StringVar(&work, "work", "/tmp", "`DIR` of the raw enumeration files (an unloaded <hash8>.raw there is 'enumerated')")
	fs.DurationVar(&settle, "settle", 30*time.Second, "an image or mapfile changed within `D` is still settling")
	fs.BoolVar(&asJSON, "json", false, "print JSON (an array of media) instead of a table")
	fs.Usage = func() { io.WriteString(fs.Output(), statusUsage); fs.PrintDefaults() }
	if code, ok := cli.ParseFlags(fs, stdout, stderr, func() error { return fs.Parse(args) }); !ok {
		return code
	}
	if fs.NArg() != 0 {
		fs.Usage()
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	pool, err := dbconn.Open(ctx, dbconn.Options{URL: db, Logger: cli.NewLogger(stderr, false), Private: &dbconn.Private{
		Dir: state, Say: func(l string) { fmt.Fprintln(stderr, "ntt-pipeline:", l) }}})
	if err != nil {
		fmt.Fprintf(stderr, "ntt-pipeline status: %v\n", err)
		return 1
	}
	defer pool.Close()
	r := readiness{images: images, work: work, procRoot: "/proc", settle: settle}
	media, err := r.collect(ctx, pool)
	if err != nil {
		fmt.Fprintf(stderr, "ntt-pipeline status: %s: %v\n", images, err)
		return 1
	}
	if asJSON {
		if media == nil {
			media = []mediumStatus{}
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(media); err != nil {
			fmt.Fprintf(stderr, "ntt-pipeline status: %v\n", err)
			return 1
		}
		return 0
	}
	writeStatusTable(stdout, media)
	return 0
}

// stateText is the state as the table shows it: "copying 42 %",
// "failed: mount_failed".
func (s mediumStatus) stateText() string {
	switch s.State {
	case stateCopying:
		return fmt.Sprintf("copying %.0f %%", s.CopiedPct)
	case stateFailed:
		return "failed: " + s.Detail
	}
	return s.State
}

func writeStatusTable(w io.Writer, media []mediumStatus) {
	if len(media) == 0 {
		fmt.Fprintln(w, "No media in the images directory or the catalog.")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "MEDIUM\tSTATE\tSIZE\tHEALTH\tFILES\tDEDUP\tLAST PROBLEM")
	counts := map[string]int{}
	for _, s := range media {
		counts[s.State]++
		size, health, files, dedup, prob := "-", "-", "-", "-", "-"
		if s.ImageBytes > 0 || s.Image != "" {
			size = human(s.ImageBytes)
		}
		if s.Health != "" {
			health = s.Health
		}
		if s.Files > 0 {
			files = cli.Group(s.Files)
			dedup = fmt.Sprintf("%.0f %%", s.DedupPct)
		}
		if s.Problem != nil {
			prob = s.Problem.Flag
			if s.Problem.Error != "" {
				prob += ": " + oneLine(s.Problem.Error, 60)
			}
		}
		if s.State == stateImaging || s.State == stateSettling {
			prob = s.Detail
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.Hash, s.stateText(), size, health, files, dedup, prob)
	}
	tw.Flush()
	var parts []string
	for _, st := range []string{stateArchived, stateArchivedUnreadable, stateCopied, stateCopying, stateLoaded, stateEnumerated,
		stateReady, stateSettling, stateImaging, stateFailed, stateMissing} {
		if n := counts[st]; n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, st))
		}
	}
	fmt.Fprintf(w, "%d media: %s\n", len(media), strings.Join(parts, ", "))
}

// oneLine shortens an error for a table cell.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		return s[:n-1] + "…"
	}
	return s
}
