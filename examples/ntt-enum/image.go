package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/HRDAG/ntt/enumerate"
	"github.com/HRDAG/ntt/imagefs"
	_ "github.com/HRDAG/ntt/imagefs/all"
	"github.com/HRDAG/ntt/internal/cli"
	"github.com/HRDAG/ntt/internal/medium"
)

// runImage enumerates a medium from its image file (--image).
func runImage(c config, hashArg, out string, stdout, stderr io.Writer) int {
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "ntt-enum: "+format+"\n", a...)
		return 1
	}
	h, err := medium.Parse(hashArg)
	if err != nil {
		return fail("%v.", err)
	}
	log := cli.NewLogger(stderr, c.verbose).With("medium", h.String())
	ignore, code := prepareOutput(c, out, stderr)
	if code != 0 {
		return code
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	shown := 0
	m, err := imagefs.OpenMediumFile(ctx, c.image, imagefs.MediumOptions{Medium: string(h), Root: c.root, CodePage: c.codePage,
		Report: func(p *imagefs.MediumProblem) {
			log.Warn("structural damage", "partition", p.Partition, "image_offset", p.ImageOffset, "kind", p.Kind, "detail", p.Detail)
			if cli.IsTerminal(stderr) && shown < 20 {
				fmt.Fprintf(stderr, "\r\033[K⚠ %v\n", p)
			}
			shown++
		}})
	if err != nil {
		return fail("medium %s: reading image %s: %v.", h, c.image, err)
	}
	defer m.Close()
	for _, p := range m.Skipped() {
		log.Info("partition not read", "partition", p.Num, "status", p.Status, "reason", p.Reason, "detail", p.Detail)
	}

	tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".tmp-*")
	if err != nil {
		return fail("cannot create the output beside %s: %v.", out, err)
	}
	defer discard(tmp)
	var mtime int64
	if st, err := os.Stat(c.image); err == nil {
		mtime = st.ModTime().Unix()
	}
	opts := enumerate.ImageOptions{Root: c.root, Ignore: ignore, RootMtime: mtime, ProgressInterval: 10 * time.Second,
		Progress: func(p enumerate.Progress) {
			if !p.Done {
				log.Info("enumeration progress", "entries", p.Entries, "dirs", p.Dirs, "errors", p.Errors, "rate", int64(p.Rate))
			}
		}}
	res, err := enumerate.WalkImage(ctx, m, opts, tmp)
	if err != nil {
		log.Error("enumeration failed", "image", c.image, "err", err.Error(), "records", res.Records, "errors", res.Errors)
		return fail("enumerating image %s for medium %s failed: %v; %s not written.", c.image, h, err, out)
	}
	if res.Errors > 0 && !c.allowErrors {
		log.Error("enumeration incomplete", "image", c.image, "records", res.Records, "errors", res.Errors)
		return fail("%d structural problem(s) found in %s (logged above); %s not written. "+
			"Pass --allow-errors to write the readable part.", res.Errors, c.image, out)
	}
	if err := commit(tmp, out); err != nil {
		return fail("%v.", err)
	}
	log.Info("enumeration complete", "image", c.image, "reader", "image", "out", out, "records", res.Records, "bytes", res.Bytes,
		"ignored", res.Ignored, "dirs", res.Dirs, "errors", res.Errors, "elapsed_s", res.Elapsed.Seconds())
	fmt.Fprintf(stdout, "✓ Enumeration complete: %d records written to %s\n", res.Records, out)
	if res.Errors > 0 {
		fmt.Fprintf(stderr, "⚠ %d structural problem(s) were found; what could be read is in %s\n", res.Errors, out)
	}
	return 0
}
