package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/HRDAG/ntt/enumerate"
	"github.com/HRDAG/ntt/imagefs"
	_ "github.com/HRDAG/ntt/imagefs/all" // the image readers
	"github.com/HRDAG/ntt/internal/cli"
	"github.com/HRDAG/ntt/internal/schema"
	"github.com/HRDAG/ntt/loopdev"
	"github.com/HRDAG/ntt/loopdev/probe"
)

// The two ways to reach a medium's files (design.md): the kernel mount
// (loopdev: root, a loop device and the kernel's filesystem driver) and the
// image reader (imagefs: user space, no root). A medium is catalogued and
// copied by one of them — the catalog's dev and ino are the reader's — so
// the reader that enumerated a medium (medium.reader) is the one a rerun
// copies with.
const (
	readAuto  = "auto"
	readMount = "mount"
	readImage = "image"
)

// chooseReader decides how this run reaches the medium's files: the reader
// recorded when it was enumerated, else --read, with auto mounting when
// root and the kernel has every filesystem the medium's layout reads
// (/proc/filesystems), and reading the image otherwise.
func (p *pipeline) chooseReader(ctx context.Context, enumerated bool) (string, error) {
	var recorded *string
	if err := p.db.QueryRow(ctx, `SELECT reader FROM medium WHERE medium_hash = $1`, string(p.c.hash)).Scan(&recorded); err != nil {
		return "", fmt.Errorf("reading the medium's reader: %w", err)
	}
	want := p.c.read
	if enumerated {
		have := readMount // catalogued before readers were recorded: by a mount
		if recorded != nil {
			have = *recorded
		}
		if want != readAuto && want != have {
			return "", fmt.Errorf("the medium was catalogued with --read %s, and its catalog's inode numbers are that reader's: "+
				"rerun with --read %s (or --read auto)", have, have)
		}
		return have, nil
	}
	if want != readAuto {
		return want, nil
	}
	if os.Geteuid() != 0 {
		p.log.Info("reader: image (not running as root)", "medium", string(p.c.hash))
		return readImage, nil
	}
	types, err := p.mediumTypes()
	if err != nil {
		// Mount reports what is wrong with the image in its own words.
		return readMount, nil
	}
	kernel, err := kernelFilesystems("/proc/filesystems")
	if err != nil {
		return "", err
	}
	for _, t := range types {
		if !kernel[t] {
			p.log.Info("reader: image (the kernel has no driver for the medium's filesystem)", "medium", string(p.c.hash), "fstype", t)
			return readImage, nil
		}
	}
	p.log.Info("reader: mount", "medium", string(p.c.hash), "fstypes", types)
	return readMount, nil
}

// mediumTypes lists, per volume the layout reads, the first kernel type a
// mount would try.
func (p *pipeline) mediumTypes() ([]string, error) {
	f, err := os.Open(p.c.image)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	res, err := probe.Probe(f, st.Size())
	if err != nil {
		return nil, err
	}
	_, vols, err := loopdev.Plan(res, p.c.hash, p.c.root)
	if err != nil {
		return nil, err
	}
	if len(vols) == 0 {
		if v := loopdev.ZipVolume(f, st.Size()); v != nil {
			vols = append(vols, *v)
		}
	}
	if len(vols) == 0 {
		return nil, errors.New("no filesystem found")
	}
	var out []string
	for _, v := range vols {
		out = append(out, v.MountTypes()[0])
	}
	return out, nil
}

// kernelFilesystems reads the filesystem types the running kernel has.
func kernelFilesystems(path string) (map[string]bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading the kernel's filesystems: %w", err)
	}
	defer f.Close()
	out := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 0 {
			out[fields[len(fields)-1]] = true
		}
	}
	return out, sc.Err()
}

// recordReader writes the reader on the medium row.
func (p *pipeline) recordReader(ctx context.Context) error {
	if _, err := p.db.Exec(ctx, `UPDATE medium SET reader = $2 WHERE medium_hash = $1`, string(p.c.hash), p.reader); err != nil {
		return fmt.Errorf("recording the medium's reader: %w", err)
	}
	return nil
}

// maxProblemsRecorded bounds the structural problems kept in
// medium.problems (all are counted and logged).
const maxProblemsRecorded = 100

// enumerateImage is Phase 1 with the image reader: the medium is read
// from its image without a mount, and its structural damage is recorded in
// medium.problems (structural_damage) while the rest is enumerated.
func (p *pipeline) enumerateImage(ctx context.Context, raw string) (int64, error) {
	var problems []*imagefs.MediumProblem
	var count int64
	m, err := imagefs.OpenMediumFile(ctx, p.c.image, imagefs.MediumOptions{Medium: string(p.c.hash), Root: p.c.root,
		CodePage: p.c.codePage, Report: func(mp *imagefs.MediumProblem) {
			count++
			if len(problems) < maxProblemsRecorded {
				problems = append(problems, mp)
			}
			p.log.Warn("structural damage", "medium", string(p.c.hash), "partition", mp.Partition, "image_offset", mp.ImageOffset,
				"kind", mp.Kind, "detail", mp.Detail)
		}})
	if err != nil {
		return 0, failed("enumerate", "enum_failed", err)
	}
	defer m.Close()
	var skipped []map[string]any
	for _, s := range m.Skipped() {
		skipped = append(skipped, map[string]any{"partition": s.Num, "status": s.Status, "reason": s.Reason, "detail": s.Detail})
		p.log.Info("partition not read", "medium", string(p.c.hash), "partition", s.Num, "status", s.Status, "reason", s.Reason)
	}
	if err := os.MkdirAll(p.c.work, 0o755); err != nil {
		return 0, failed("enumerate", "enum_failed", err)
	}
	tmp, err := os.CreateTemp(p.c.work, "."+p.c.hash.Short()+".raw-*")
	if err != nil {
		return 0, failed("enumerate", "enum_failed", err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	var mtime int64
	if st, err := os.Stat(p.c.image); err == nil {
		mtime = st.ModTime().Unix()
	}
	res, err := enumerate.WalkImage(ctx, m, enumerate.ImageOptions{Root: p.c.root, Ignore: p.ignore, RootMtime: mtime,
		Progress: func(pr enumerate.Progress) {
			p.status.Set("enumerate (image): %s entries (%s/s)", cli.SI(float64(pr.Entries)), cli.SI(pr.Rate))
		}}, tmp)
	p.m.EnumRecords, p.m.EnumSeconds = res.Records, res.Elapsed.Seconds()
	if res.Elapsed > 0 {
		p.m.EnumRate = float64(res.Records) / res.Elapsed.Seconds()
	}
	if count > 0 {
		// Recorded whatever happens next: the damage is the image's.
		if rerr := schema.MergeProblem(ctx, p.db, p.c.hash, "structural_damage", map[string]any{
			"count": count, "problems": problems, "reader": readImage}); rerr != nil {
			p.log.Error("could not record the structural damage", "medium", string(p.c.hash), "error", rerr)
		}
	}
	if len(skipped) > 0 {
		if rerr := schema.MergeProblem(ctx, p.db, p.c.hash, "partitions_not_read", map[string]any{"partitions": skipped}); rerr != nil {
			p.log.Error("could not record the partitions not read", "medium", string(p.c.hash), "error", rerr)
		}
	}
	err = commitRaw(tmp, raw, res.Records, err)
	if err != nil {
		return res.Records, failed("enumerate", "enum_failed", err)
	}
	p.m.StructuralProblems = count
	p.log.Info("✓ Enumeration complete", "records", res.Records, "file", raw, "errors", res.Errors, "reader", readImage)
	return res.Records, nil
}
