// Command ntt-mount-helper mounts a medium's disk image read-only under
// <root>/<hash>, reports its status, unmounts it, and reaps stale loop
// devices. It is a thin wrapper around package loopdev.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/HRDAG/ntt/internal/cli"
	"github.com/HRDAG/ntt/loopdev"
)

const usage = `Usage: ntt-mount-helper [--root DIR] [--timeout D] COMMAND

Commands:
  mount HASH IMAGE   attach IMAGE read-only and mount it at ROOT/HASH (one
                     filesystem) or ROOT/HASH/pN (several); print the layout
                     as JSON. NTT's stale loop devices are reaped first
                     (as reap does). If the medium is already mounted,
                     print its layout.
  unmount HASH       unmount ROOT/HASH and its partitions, detach every loop
                     device of its image, remove the directories; print JSON.
  status HASH        print the layout as JSON; exit 0 if mounted, 1 if not.
  reap               detach NTT's loop devices whose backing file was deleted
                     (unmounting them first); print what was done as JSON.
                     NTT's: backed by a file named HASH.img or kept in an
                     --images DIR, or mounted under ROOT. Other
                     deleted-backing loops are left alone and listed.

JSON goes to stdout, the log to stderr (text on a terminal, JSON lines
otherwise). Partitions left unmounted (truncated by the end of the image,
swap, RAID/LVM members, no filesystem, refused by the kernel) are warned
about on stderr, and dirty journals mounted without replay are noted; the
copier records them in medium.problems. Exit status: 0 ok, 1 error (or "not mounted" for status).

Options:
`

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("ntt-mount-helper", flag.ContinueOnError)
	fs.SetOutput(stderr)
	root := fs.String("root", loopdev.DefaultRoot, "mount root `DIR`")
	timeout := fs.Duration("timeout", loopdev.DefaultMountTimeout, "give up on a mount(2) after `D`")
	verbose := fs.Bool("v", false, "log debug events")
	imagesDir := fs.String("images", "", "`DIR` holding NTT's images: stale loops of files deleted from it are NTT's (IMAGE's directory always counts)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	if code, ok := cli.ParseFlags(fs, stdout, stderr, func() error { return fs.Parse(args) }); !ok {
		return code
	}
	log := cli.NewLogger(stderr, *verbose)
	var images []string
	if *imagesDir != "" {
		images = []string{*imagesDir}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	rest := fs.Args()
	if len(rest) == 0 {
		fmt.Fprintln(stderr, "ntt-mount-helper: no command given (mount, unmount, status, reap); see --help.")
		return 1
	}
	want := map[string]int{"mount": 3, "unmount": 2, "status": 2, "reap": 1}
	n, ok := want[rest[0]]
	if !ok {
		fmt.Fprintf(stderr, "ntt-mount-helper: unknown command %q; see --help.\n", rest[0])
		return 1
	}
	if len(rest) != n {
		fmt.Fprintf(stderr, "ntt-mount-helper: %s takes %d argument(s), got %d; see --help.\n", rest[0], n-1, len(rest)-1)
		return 1
	}

	switch rest[0] {
	case "mount":
		lay, err := loopdev.Mount(ctx, loopdev.MountSpec{
			Medium: rest[1], Image: rest[2], Root: *root, Timeout: *timeout, ImagesDirs: images, Logger: log,
		})
		if err != nil {
			fmt.Fprintf(stderr, "ntt-mount-helper: %v\n", err)
			if lay != nil {
				warnFindings(log, lay)
				printJSON(stdout, lay)
			}
			return 1
		}
		warnFindings(log, lay)
		printJSON(stdout, lay)
		return 0
	case "unmount":
		rep, err := loopdev.Unmount(ctx, rest[1], *root, &loopdev.UnmountOptions{Timeout: *timeout, Logger: log})
		if rep != nil {
			printJSON(stdout, rep)
		}
		if err != nil {
			fmt.Fprintf(stderr, "ntt-mount-helper: %v\n", err)
			return 1
		}
		return 0
	case "status":
		lay, err := loopdev.Status(rest[1], *root)
		if errors.Is(err, loopdev.ErrNotMounted) {
			printJSON(stdout, map[string]any{"medium": rest[1], "mounted": false})
			return 1
		}
		if err != nil {
			fmt.Fprintf(stderr, "ntt-mount-helper: %v\n", err)
			return 1
		}
		warnFindings(log, lay)
		printJSON(stdout, lay)
		return 0
	default: // reap
		rep, err := loopdev.Reap(ctx, loopdev.ReapOptions{Root: *root, ImagesDirs: images, Timeout: *timeout, Logger: log})
		if err != nil {
			fmt.Fprintf(stderr, "ntt-mount-helper: %v\n", err)
			return 1
		}
		printJSON(stdout, rep)
		if len(rep.Errors) > 0 {
			fmt.Fprintf(stderr, "ntt-mount-helper: %d stale loop device(s) could not be cleaned up\n", len(rep.Errors))
			return 1
		}
		return 0
	}
}

// warnFindings logs (stderr) what the layout leaves out of the catalog —
// truncated, skipped, unmounted partitions, at warning level — and notes
// journals that were not replayed. ntt-mount-helper has no catalog:
// ntt-copier (and ntt-pipeline) record the same findings in medium.problems.
func warnFindings(log *slog.Logger, lay *loopdev.Layout) {
	for _, f := range lay.Findings() {
		attrs := []any{"medium", lay.Medium, "problem", f.Flag, "partition", f.Partition, "offset", f.Offset,
			"size", f.Size, "image_size", f.ImageSize}
		if f.Note() {
			log.Info("note: "+f.String(), attrs...)
		} else {
			log.Warn("not in the catalog: "+f.String(), attrs...)
		}
	}
}

func printJSON(w io.Writer, v any) {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
