// Command ntt-enum walks a mounted medium and writes its raw enumeration
// file (one record per directory entry, find-compatible; see package
// enumerate). It is Phase 1 of the runbook:
//
//	sudo bin/ntt-enum /mnt/ntt/$HASH $HASH /tmp/${HASH_SHORT}.raw
//
// The file is written under a temporary name beside OUT.raw and renamed
// into place only when the walk succeeded, so OUT.raw is never partial.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/HRDAG/ntt/enumerate"
	"github.com/HRDAG/ntt/internal/cli"
	"github.com/HRDAG/ntt/internal/medium"
)

const usage = `Usage: ntt-enum [options] MOUNT_POINT MEDIUM_HASH OUT.raw
       ntt-enum [options] --image IMAGE MEDIUM_HASH OUT.raw

Walk the medium mounted at MOUNT_POINT (its partitions pN too, when the
medium has several) and write one record per directory entry to OUT.raw:
type, dev, ino, nlink, size, mtime and path separated by 0x1C, each record
ending in 0x00 -- the same records as
  find MOUNT_POINT -xdev -printf '%y\034%D\034%i\034%n\034%s\034%Ts\034%p\0'
OUT.raw appears only when the walk succeeded (written to a temporary file,
then renamed). Progress goes to stderr: a status line on a terminal, JSON
log lines otherwise; the last JSON line ("enumeration complete") carries the
record count. Symlinks are recorded, never followed; other filesystems
mounted inside the medium are recorded as mount points, never entered.

With --image, the medium is read straight from its image file (FAT, ISO 9660
and the other filesystems package imagefs reads), without root, loop device
or mount: the records are those a mount at <--root>/<hash> would give (dev is
the partition number, ino the filesystem's own id). Structural damage found
on the way is logged; like unreadable entries it keeps OUT.raw from being
written unless --allow-errors is given.

Exit status: 0 success; 1 error (nothing written); 2 OUT.raw already exists
(use --force to replace it).

Options:
`

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

type config struct {
	ignore      string
	workers     int
	stall       time.Duration
	force       bool
	allowErrors bool
	plainDir    bool
	verbose     bool
	image       string
	root        string
	codePage    string
	prefetch    bool
	kernelOnly  bool
}

func run(args []string, stdout, stderr io.Writer) int {
	var c config
	fs := flag.NewFlagSet("ntt-enum", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.ignore, "ignore", "", "leave out paths matching any regular expression in `FILE` (one per line, # comments)")
	fs.IntVar(&c.workers, "workers", enumerate.DefaultWorkers, "directories read at once (`N`)")
	fs.DurationVar(&c.stall, "stall-timeout", enumerate.DefaultStallTimeout, "fail when the walk makes no progress for `D` (a dying disk)")
	fs.BoolVar(&c.prefetch, "prefetch", false, "read an ext medium's inode tables and directory blocks ahead of the walk (see enumerate's package doc)")
	fs.BoolVar(&c.kernelOnly, "kernel-walk", false, "walk through system calls only, even where a read-only ext medium could be read from its block device (see enumerate's package doc)")
	fs.BoolVar(&c.force, "force", false, "replace an existing OUT.raw")
	fs.BoolVar(&c.allowErrors, "allow-errors", false, "write OUT.raw even if some directories or entries could not be read (they are logged)")
	fs.BoolVar(&c.plainDir, "allow-unmounted", false, "walk MOUNT_POINT even if nothing is mounted there")
	fs.BoolVar(&c.verbose, "v", false, "log debug events")
	fs.StringVar(&c.image, "image", "", "read the medium from image `FILE` instead of a mount")
	fs.StringVar(&c.root, "root", "/mnt/ntt", "with --image: the mount root `DIR` the paths are spelled under (<DIR>/<hash>/…)")
	fs.StringVar(&c.codePage, "code-page", "", "with --image: code page of 8.3 FAT names (default cp437)")
	fs.Usage = func() {
		io.WriteString(fs.Output(), usage)
		fs.PrintDefaults()
	}
	if code, ok := cli.ParseFlags(fs, stdout, stderr, func() error { return fs.Parse(args) }); !ok {
		return code
	}
	if c.image != "" {
		if fs.NArg() != 2 {
			fmt.Fprintf(stderr, "ntt-enum: with --image, expected MEDIUM_HASH OUT.raw, got %d argument(s); see --help.\n", fs.NArg())
			return 1
		}
		return runImage(c, fs.Arg(0), fs.Arg(1), stdout, stderr)
	}
	if fs.NArg() != 3 {
		fmt.Fprintf(stderr, "ntt-enum: expected MOUNT_POINT MEDIUM_HASH OUT.raw, got %d argument(s); see --help.\n", fs.NArg())
		return 1
	}
	mount, hashArg, out := fs.Arg(0), fs.Arg(1), fs.Arg(2)
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "ntt-enum: "+format+"\n", a...)
		return 1
	}
	h, err := medium.Parse(hashArg)
	if err != nil {
		return fail("%v.", err)
	}
	if c.workers < 1 {
		return fail("--workers must be at least 1, got %d.", c.workers)
	}
	term := cli.IsTerminal(stderr)
	log := cli.NewLogger(stderr, c.verbose).With("medium", h.String())

	enter, err := checkMount(mount, h, c.plainDir)
	if err != nil {
		return fail("%v.", err)
	}
	ignore, code := prepareOutput(c, out, stderr)
	if code != 0 {
		return code
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".tmp-*")
	if err != nil {
		return fail("cannot create the output beside %s: %v.", out, err)
	}
	defer discard(tmp)

	shown := 0
	opts := enumerate.Options{
		Workers:      c.workers,
		Ignore:       ignore,
		EnterMounts:  enter,
		StallTimeout: c.stall,
		Prefetch:     c.prefetch,
		KernelOnly:   c.kernelOnly,
		OnError: func(e *enumerate.EntryError) error {
			// The library already logged it as JSON; on a terminal show a
			// readable line, but not thousands of them.
			if term {
				if shown < 20 {
					fmt.Fprintf(stderr, "\r\033[K⚠ cannot %v\n", e)
				} else if shown == 20 {
					fmt.Fprintf(stderr, "\r\033[K⚠ more errors follow; they are counted at the end\n")
				}
				shown++
			}
			return nil
		},
	}
	if !term {
		opts.Logger = log // one JSON line per unreadable entry
	}
	if term {
		opts.ProgressInterval = 500 * time.Millisecond
		opts.Progress = func(p enumerate.Progress) {
			if p.Done {
				fmt.Fprint(stderr, "\r\033[K")
				return
			}
			fmt.Fprintf(stderr, "\r\033[K%s entries  %s/s  %s dirs  %d errors  %s",
				cli.Group(p.Entries), cli.Group(int64(p.Rate)), cli.Group(p.Dirs), p.Errors, p.Elapsed.Round(time.Second))
		}
	} else {
		opts.ProgressInterval = 10 * time.Second
		opts.Progress = func(p enumerate.Progress) {
			if !p.Done {
				log.Info("enumeration progress", "entries", p.Entries, "dirs", p.Dirs,
					"errors", p.Errors, "rate", int64(p.Rate), "elapsed_s", p.Elapsed.Seconds())
			}
		}
	}
	log.Debug("enumeration started", "mount_point", mount, "out", out, "workers", c.workers, "enter_mounts", enter)

	res, err := enumerate.Walk(ctx, []string{mount}, opts, tmp)
	if err != nil {
		log.Error("enumeration failed", "mount_point", mount, "err", err.Error(), "records", res.Records, "errors", res.Errors)
		return fail("enumerating %s for medium %s failed: %v; %s not written.", mount, h, err, out)
	}
	if res.Errors > 0 && !c.allowErrors {
		log.Error("enumeration incomplete", "mount_point", mount, "records", res.Records, "errors", res.Errors)
		return fail("%d director(ies) or entries under %s could not be read (logged above); %s not written. "+
			"Pass --allow-errors to write the readable part.", res.Errors, mount, out)
	}
	if res.Records == 0 {
		return fail("no records from %s; %s not written.", mount, out)
	}
	if err := commit(tmp, out); err != nil {
		return fail("%v.", err)
	}
	log.Info("enumeration complete", "mount_point", mount, "out", out, "records", res.Records, "bytes", res.Bytes,
		"ignored", res.Ignored, "dirs", res.Dirs, "errors", res.Errors, "elapsed_s", res.Elapsed.Seconds(),
		"rate", int64(float64(res.Records)/max(res.Elapsed.Seconds(), 1e-9)),
		"direct_roots", res.Direct.Roots, "direct_devices", res.Direct.Devices, "direct_inode_table_bytes", res.Direct.InodeTableBytes,
		"direct_directory_bytes", res.Direct.DirectoryBytes, "direct_skipped", res.Direct.Skipped, "direct_s", res.Direct.Elapsed.Seconds(),
		"prefetch_devices", res.Prefetch.Devices, "prefetch_inode_table_bytes", res.Prefetch.InodeTableBytes,
		"prefetch_directory_bytes", res.Prefetch.DirectoryBytes, "prefetch_skipped", res.Prefetch.Skipped, "prefetch_s", res.Prefetch.Elapsed.Seconds())
	fmt.Fprintf(stdout, "✓ Enumeration complete: %d records written to %s\n", res.Records, out)
	if res.Errors > 0 {
		fmt.Fprintf(stderr, "⚠ %d director(ies) or entries could not be read and are missing from %s\n", res.Errors, out)
	}
	return 0
}

// checkMount refuses a missing or non-directory mount point, a mount point
// named for another medium, and (unless plainDir) a directory where nothing
// is mounted. It returns the partition mounts the walk must enter.
func checkMount(mount string, h medium.Hash, plainDir bool) ([]string, error) {
	st, err := os.Stat(mount)
	if err != nil {
		return nil, fmt.Errorf("mount point %s: %w", mount, errors.Unwrap(err))
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("mount point %s is not a directory", mount)
	}
	if other, err := medium.Parse(filepath.Base(filepath.Clean(mount))); err == nil && other != h {
		return nil, fmt.Errorf("mount point %s belongs to medium %s, not %s", mount, other, h)
	}
	enter, err := enumerate.PartitionMounts(mount)
	if err != nil {
		return nil, err
	}
	if len(enter) == 0 && !plainDir {
		var stx unix.Statx_t
		if err := unix.Statx(unix.AT_FDCWD, mount, 0, unix.STATX_TYPE, &stx); err == nil &&
			stx.Attributes&unix.STATX_ATTR_MOUNT_ROOT == 0 {
			return nil, fmt.Errorf("nothing is mounted at %s (check: ntt-mount-helper status %s); "+
				"pass --allow-unmounted to walk it as a plain directory", mount, h)
		}
	}
	return enter, nil
}

// discard removes the temporary output; after commit renamed it into place
// there is nothing left under its name, and both calls are no-ops.
func discard(tmp *os.File) {
	tmp.Close()
	os.Remove(tmp.Name())
}

// commit makes the temporary file durable and renames it into place.
func commit(tmp *os.File, out string) error {
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", tmp.Name(), err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		return fmt.Errorf("chmod %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("closing %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return fmt.Errorf("renaming into place: %w", err)
	}
	if d, err := os.Open(filepath.Dir(out)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// prepareOutput loads the --ignore patterns and refuses to overwrite OUT
// without --force; a non-zero code is the exit status to return.
func prepareOutput(c config, out string, stderr io.Writer) (*enumerate.Matcher, int) {
	var ignore *enumerate.Matcher
	if c.ignore != "" {
		var err error
		if ignore, err = enumerate.LoadIgnoreFile(c.ignore); err != nil {
			fmt.Fprintf(stderr, "ntt-enum: %v.\n", err)
			return nil, 1
		}
	}
	if _, err := os.Lstat(out); err == nil && !c.force {
		fmt.Fprintf(stderr, "ntt-enum: %s already exists; remove it or pass --force to replace it.\n", out)
		return nil, 2
	}
	return ignore, 0
}
