// Command ntt-diagnose answers the pre-flight and damage questions about a
// medium: how much of it ddrescue rescued (health), which bytes of a file
// were not rescued or lie past the end of the image (file), what the kernel
// said about the medium's loop devices (kmsg), whether its mount is still
// good (mount). It is a thin wrapper around package diagnose.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/HRDAG/ntt/diagnose"
)

const usage = `Usage: ntt-diagnose COMMAND [ARGS]

Commands:
  health MAPFILE
      Grade a GNU ddrescue mapfile: rescued bytes and percentage, bad ranges,
      and health (ok = 100%, incomplete >= 90%, corrupt >= 20%, else failed).
      A missing mapfile is health "unknown" (exit 0), never "failed".
  file IMAGE MAPFILE PATH
      PATH is a file in the mounted IMAGE. Map its extents (FIEMAP, else
      FIBMAP) onto the image, shifted by the loop device's offset, and list
      the byte ranges that the mapfile marks as not rescued or that lie past
      the end of the image. MAPFILE may be missing ("-" for none).
  kmsg [--follow] [--file LOG] LOOPDEV...
      Kernel messages attributed to these loop devices only (/dev/loop3 or
      loop3): beyond-end-of-device, I/O errors, filesystem errors. Reads the
      whole kernel ring buffer (needs root when dmesg_restrict is set), or
      LOG saved from 'cat /dev/kmsg'. --follow prints new events as they come.
  mount MOUNT_POINT LOOPDEV
      Is MOUNT_POINT still a readable mount of LOOPDEV? Exit 0 if so, 1 if not.
  devices IMAGE
      The loop devices attached to IMAGE (one per partition).

Output is JSON on stdout; errors go to stderr as one sentence.
Exit status: 0 ok, 1 error (or an unhealthy mount).
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, "ntt-diagnose: no command given (health, file, kmsg, mount, devices); see --help.\n")
		return 1
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	cmd, rest := args[0], args[1:]
	fs := flag.NewFlagSet("ntt-diagnose "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	follow := fs.Bool("follow", false, "kmsg: keep printing new events until interrupted")
	logFile := fs.String("file", "", "kmsg: read kernel log text from `LOG` instead of /dev/kmsg")
	if err := fs.Parse(rest); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, usage)
			return 0
		}
		return 1
	}
	rest = fs.Args()
	nargs := map[string]int{"health": 1, "file": 3, "mount": 2, "devices": 1}
	if n, ok := nargs[cmd]; ok && len(rest) != n {
		fmt.Fprintf(stderr, "ntt-diagnose: %s takes %d argument(s), got %d; see --help.\n", cmd, n, len(rest))
		return 1
	}
	out := json.NewEncoder(stdout)
	out.SetIndent("", "  ")
	var err error
	code := 0
	switch cmd {
	case "health":
		var r diagnose.HealthReport
		r, _, err = diagnose.HealthOf(rest[0])
		if err == nil {
			err = out.Encode(r)
		}
	case "file":
		err = fileCmd(ctx, out, rest[0], rest[1], rest[2])
	case "kmsg":
		if len(rest) == 0 {
			fmt.Fprint(stderr, "ntt-diagnose: kmsg needs at least one loop device; see --help.\n")
			return 1
		}
		err = kmsgCmd(ctx, stdout, rest, *logFile, *follow)
	case "mount":
		var st diagnose.MountStatus
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		st, err = diagnose.CheckMount(cctx, rest[0], rest[1])
		cancel()
		if err == nil {
			err = out.Encode(st)
			if !st.Healthy() {
				code = 1
			}
		}
	case "devices":
		var devs []string
		devs, err = diagnose.MediumDevices(rest[0])
		if err == nil {
			if devs == nil {
				devs = []string{}
			}
			err = out.Encode(map[string]any{"image": rest[0], "devices": devs})
		}
	default:
		fmt.Fprintf(stderr, "ntt-diagnose: unknown command %q; see --help.\n", cmd)
		return 1
	}
	if err != nil {
		fmt.Fprintf(stderr, "ntt-diagnose: %s: %v.\n", cmd, err)
		return 1
	}
	return code
}

type fileReport struct {
	diagnose.FileDamage
	Mapfile        string          `json:"mapfile"`
	MapfilePresent bool            `json:"mapfile_present"`
	Health         diagnose.Health `json:"health"`
}

func fileCmd(ctx context.Context, out *json.Encoder, image, mapfile, path string) error {
	r := fileReport{Mapfile: mapfile, Health: diagnose.HealthUnknown}
	var bad []diagnose.Range
	if mapfile != "-" {
		m, err := diagnose.ReadMapfile(mapfile)
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			return err
		default:
			r.MapfilePresent, r.Health, bad = true, m.Health(), m.BadRanges()
		}
	}
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	fd, err := diagnose.InspectFile(cctx, path, diagnose.FileDamageOptions{Image: image, Bad: bad})
	if err != nil {
		return err
	}
	r.FileDamage = fd
	return out.Encode(r)
}

func kmsgCmd(ctx context.Context, stdout io.Writer, devices []string, logFile string, follow bool) error {
	want := map[string]bool{}
	for _, d := range devices {
		want[diagnose.DeviceName(d)] = true
	}
	lines := json.NewEncoder(stdout)
	var onEvent func(diagnose.KernelEvent)
	if follow {
		onEvent = func(ev diagnose.KernelEvent) {
			if want[ev.Device] {
				_ = lines.Encode(ev)
			}
		}
	}
	var kl *diagnose.KernelLog
	if logFile != "" {
		if follow {
			return errors.New("--follow reads /dev/kmsg, not a saved log")
		}
		f, err := os.Open(logFile)
		if err != nil {
			return err
		}
		defer f.Close()
		kl = diagnose.NewKernelLog(f)
	} else {
		var err error
		kl, err = diagnose.OpenKernelLog(diagnose.KernelLogOptions{FromStart: true, OnEvent: onEvent})
		if err != nil {
			return err
		}
	}
	defer kl.Close()
	if err := kl.Poll(); err != nil {
		return err
	}
	if follow {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
				if err := kl.Poll(); err != nil {
					return err
				}
			}
		}
	}
	evs := kl.Events(devices)
	summary := map[string]diagnose.DeviceEvents{}
	for d := range want {
		summary[d] = evs[d] // devices with nothing show zero counts
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(map[string]any{"devices": summary, "lost_records": kl.Lost()})
}
