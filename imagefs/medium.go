package imagefs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync/atomic"

	"github.com/HRDAG/ntt/internal/medium"
	"github.com/HRDAG/ntt/loopdev"
	"github.com/HRDAG/ntt/loopdev/probe"
)

// A medium read from its image: the image layer of the stack. OpenMedium
// probes the image (loopdev/probe), takes the volumes to read from
// loopdev.Plan — the one function that decides a medium's layout, the one
// a kernel mount follows too — and opens each with its registered reader
// over a section of the image. Nothing is attached or mounted.

// Partition statuses and reasons an image reader adds to loopdev's.
const (
	// StatusRead: the partition's filesystem is read from the image.
	StatusRead = "read"
	// ReasonNoReader: no registered reader knows the filesystem.
	ReasonNoReader = "no_reader"
	// ReasonUnreadable: the reader refused the filesystem (its
	// superblock or volume descriptor does not check out).
	ReasonUnreadable = "unreadable"
)

// ErrNothingReadable: no filesystem of the image could be opened by a
// reader. It is joined with ErrNoReader when no reader knew any of them.
var ErrNothingReadable = errors.New("no filesystem of the image could be read")

// Volume is one filesystem of a medium, open for reading.
type Volume struct {
	// Num is the partition number, 0 for a whole-disk filesystem. It is
	// the catalog's dev for every entry of the volume.
	Num int
	// Prefix is where the volume's files appear below the medium root:
	// "" when the medium has one volume, "/pN" when it has several — as a
	// kernel mount at <root>/<hash> (or <root>/<hash>/pN) shows them.
	Prefix string
	// Offset is the volume's first byte in the image: a Run's Offset plus
	// it is the run's image offset. Size is the volume's length.
	Offset, Size int64
	// FSType is the filesystem type the reader opened (probe's name).
	FSType string
	// FS is the open filesystem.
	FS FS
}

// ImageRuns returns runs shifted from volume to image offsets (holes kept).
func (v *Volume) ImageRuns(runs []Run) []Run {
	out := make([]Run, len(runs))
	for i, r := range runs {
		out[i] = r
		if !r.Hole {
			out[i].Offset += v.Offset
		}
	}
	return out
}

// MediumProblem is structural damage found in one volume of a medium.
type MediumProblem struct {
	// Partition is the volume's partition number (0: whole disk).
	Partition int `json:"partition"`
	// ImageOffset is the damaged structure's byte offset in the image,
	// -1 when the reader could not say.
	ImageOffset int64 `json:"image_offset"`
	Problem
}

func (p *MediumProblem) Error() string {
	return fmt.Sprintf("partition %d: %s at image byte offset %d: %s", p.Partition, p.Kind, p.ImageOffset, p.Detail)
}

// MediumOptions tune OpenMedium.
type MediumOptions struct {
	// Medium is the medium hash (required): it names errors and the
	// layout's paths.
	Medium string
	// Root is the mount root the layout's paths are given under, as if
	// the medium were mounted (default loopdev.DefaultRoot).
	Root string
	// CodePage is passed to every reader (see Options.CodePage).
	CodePage string
	// Report receives every structural problem of every volume, with the
	// volume and the image offset; nil drops them. Readers may call it
	// while the medium is read (ReadDir, Open), from the calling goroutine.
	Report func(*MediumProblem)
}

// Medium is a disk image opened for reading without a mount.
type Medium struct {
	// Hash is the medium hash.
	Hash medium.Hash
	// Image is the image file's path ("" when opened from a reader).
	Image string
	// Size is the image's size in bytes.
	Size int64
	// Probe is what the image holds.
	Probe *probe.Result
	// Layout is the plan (loopdev.Plan), each partition's Status set to
	// StatusRead, skipped (with loopdev's reason) or failed (ReasonNoReader,
	// ReasonUnreadable). Layout.Mount is the medium root <root>/<hash>.
	Layout *loopdev.Layout
	// Volumes are the readable filesystems, in partition order.
	Volumes []*Volume

	closer   io.Closer
	report   func(*MediumProblem)
	problems atomic.Int64
}

// Problems counts the structural problems reported so far.
func (m *Medium) Problems() int64 { return m.problems.Load() }

// OpenMediumFile opens the image file at path (see OpenMedium). Close the
// medium to close the file.
func OpenMediumFile(ctx context.Context, path string, opts MediumOptions) (*Medium, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("medium %s: image: %w", opts.Medium, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("medium %s: image: %w", opts.Medium, err)
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("medium %s: image %s is not a regular file (%s)", opts.Medium, path, st.Mode().Type())
	}
	m, err := OpenMedium(ctx, f, st.Size(), opts)
	if m != nil {
		m.Image = path
		if m.Layout != nil {
			m.Layout.Image = path
		}
	}
	if err != nil {
		f.Close()
		return m, err
	}
	m.closer = f
	return m, nil
}

// OpenMedium probes an image of size bytes read through r, plans its
// layout as a mount would (loopdev.Plan: whole disk or partitions,
// truncated, swap, RAID, LVM and empty partitions skipped with a reason),
// and opens every planned volume with its reader, each over a section of
// r. A volume no reader can open is recorded in Layout (failed, with the
// reason) and the others are opened; as for a mount, a filesystem at byte
// 16384 (Zip disks) is tried when none could be. When nothing can be read
// the error wraps ErrNothingReadable (and ErrNoReader when no reader knew
// any of the filesystems); the returned Medium, non-nil once the image
// was probed, still says what each partition was.
func OpenMedium(ctx context.Context, r io.ReaderAt, size int64, opts MediumOptions) (*Medium, error) {
	h, err := medium.Parse(opts.Medium)
	if err != nil {
		return nil, err
	}
	root := opts.Root
	if root == "" {
		root = loopdev.DefaultRoot
	}
	res, err := probe.Probe(r, size)
	if err != nil {
		return nil, fmt.Errorf("medium %s: probing the image: %w", h, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	lay, vols, err := loopdev.Plan(res, h, root)
	m := &Medium{Hash: h, Size: size, Probe: res, Layout: lay, report: opts.Report}
	if err != nil {
		return m, err
	}
	var failures []string
	noReader := 0
	open := func(v loopdev.Volume) {
		vsize := v.Size
		if vsize <= 0 || v.Offset+vsize > size {
			vsize = size - v.Offset
		}
		prefix := ""
		mount := lay.Mount
		if lay.Layout == loopdev.LayoutMulti {
			prefix = fmt.Sprintf("/p%d", v.Num)
			mount = h.PartitionMountPath(root, v.Num)
		}
		vo := Options{CodePage: opts.CodePage, Report: m.reportFor(v.Num, v.Offset)}
		types := append([]string{v.Content.Type}, v.Content.Alternates...)
		var fsys FS
		var errs []string
		unknown := 0
		for _, t := range types {
			f, err := Open(t, io.NewSectionReader(r, v.Offset, vsize), vsize, vo)
			if err == nil {
				fsys = f
				break
			}
			if errors.Is(err, ErrNoReader) {
				unknown++
			}
			errs = append(errs, err.Error())
		}
		var ps *loopdev.PartitionStatus
		if v.Part >= 0 {
			ps = &lay.Partitions[v.Part]
		}
		if fsys == nil {
			reason := ReasonUnreadable
			if unknown == len(types) {
				reason = ReasonNoReader
				noReader++
			}
			detail := strings.Join(errs, "; ")
			failures = append(failures, fmt.Sprintf("partition %d (%s): %s", v.Num, v.Content.Type, detail))
			if ps != nil {
				ps.Status, ps.Reason, ps.Detail = loopdev.StatusFailed, reason, detail
			}
			return
		}
		m.Volumes = append(m.Volumes, &Volume{Num: v.Num, Prefix: prefix, Offset: v.Offset, Size: vsize, FSType: fsys.Type(), FS: fsys})
		if ps != nil {
			ps.Status, ps.Reason, ps.Detail, ps.Mount, ps.FSType = StatusRead, "", "", mount, fsys.Type()
		}
		if lay.Layout == loopdev.LayoutSingle {
			lay.FSType, lay.Offset = fsys.Type(), v.Offset
		}
	}
	for _, v := range vols {
		open(v)
	}
	tried := len(vols)
	if len(m.Volumes) == 0 {
		if v := loopdev.ZipVolume(r, size); v != nil {
			lay.Layout = loopdev.LayoutSingle
			tried++
			open(*v)
		}
	}
	if len(m.Volumes) == 0 {
		detail := "no filesystem found"
		if len(failures) > 0 {
			detail = strings.Join(failures, "; ")
		}
		err := fmt.Errorf("medium %s: %w: %s", h, ErrNothingReadable, detail)
		if tried > 0 && noReader == tried {
			// Each failure already says "<FS>: no image reader yet";
			// ErrNoReader is wrapped for errors.Is, not repeated.
			var names []string
			for _, t := range Types() {
				names = append(names, FSName(t))
			}
			err = &noReaderError{msg: fmt.Sprintf("%v; image readers exist for %s only (--read mount needs a kernel with the driver)",
				err, strings.Join(names, ", ")), errs: []error{err, ErrNoReader}}
		}
		return m, err
	}
	return m, nil
}

// reportFor returns the Report of a volume's Options: its problems go to
// the medium's Report with the partition and the image offset.
func (m *Medium) reportFor(num int, off int64) func(*Problem) {
	return func(p *Problem) {
		m.problems.Add(1)
		if m.report == nil {
			return
		}
		mp := &MediumProblem{Partition: num, ImageOffset: -1, Problem: *p}
		if p.Offset >= 0 {
			mp.ImageOffset = off + p.Offset
		}
		m.report(mp)
	}
}

// Walk walks volume v (see Walk); the walk's own problems (a cycle, an
// unreadable directory) go to the medium's Report like the reader's.
func (m *Medium) Walk(ctx context.Context, v *Volume, fn WalkFunc) error {
	return Walk(ctx, v.FS, &Options{Report: m.reportFor(v.Num, v.Offset)}, fn)
}

// Close closes the image file if OpenMediumFile opened it.
func (m *Medium) Close() error {
	if m == nil || m.closer == nil {
		return nil
	}
	err := m.closer.Close()
	m.closer = nil
	return err
}

// Skipped lists the partitions that are not read, with their reasons.
func (m *Medium) Skipped() []loopdev.PartitionStatus {
	var out []loopdev.PartitionStatus
	if m == nil || m.Layout == nil {
		return nil
	}
	for _, p := range m.Layout.Partitions {
		if p.Status != StatusRead {
			out = append(out, p)
		}
	}
	return out
}

// Volume returns the volume with partition number num, or nil.
func (m *Medium) Volume(num int) *Volume {
	for _, v := range m.Volumes {
		if v.Num == num {
			return v
		}
	}
	return nil
}

// noReaderError is OpenMedium's error when no volume has a reader: its
// message names the filesystems found and the readers there are; it wraps
// ErrNothingReadable and ErrNoReader.
type noReaderError struct {
	msg  string
	errs []error
}

func (e *noReaderError) Error() string   { return e.msg }
func (e *noReaderError) Unwrap() []error { return e.errs }
