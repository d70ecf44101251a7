package loopdev

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/HRDAG/ntt/internal/medium"
	"github.com/HRDAG/ntt/loopdev/probe"
)

// Layout says where a medium is mounted. It marshals to the JSON that
// ntt-mount-helper prints. Every later phase (enumerate, load, copy) takes
// the medium root from Mount, never from its own guess: a multi-partition
// medium is walked from the base path, which holds p1, p2 ….
type Layout struct {
	Medium string `json:"medium"`
	Image  string `json:"image,omitempty"`
	// Layout is "single" (one filesystem at Mount) or "multi" (several
	// partitions at Mount/pN; Mount itself is a plain directory).
	Layout string `json:"layout"`
	// Device, FSType and Offset describe the single filesystem; empty for
	// multi (see Partitions).
	Device string `json:"device"`
	// Mount is the medium root, <root>/<hash>, for either layout.
	Mount  string `json:"mount"`
	FSType string `json:"fstype"`
	Offset int64  `json:"offset"`
	// Table is the partition table found: mbr, gpt, apm, or "".
	Table string `json:"table,omitempty"`
	// Partitions lists every partition of the table with what was done
	// with it (empty for a whole-disk filesystem). A hybrid disc's are its
	// two views instead (PartitionStatus.View; see Plan).
	Partitions []PartitionStatus `json:"partitions"`
	// AlreadyMounted is set when Mount found the medium mounted and
	// returned the existing layout.
	AlreadyMounted bool `json:"already_mounted,omitempty"`
	// ImageSize is the image file's size in bytes when it was probed (0
	// when Status could not read the image).
	ImageSize int64 `json:"image_size,omitempty"`
	// DirtyJournal is set when the whole-disk filesystem's journal needs
	// recovery: it is mounted without replaying it (partitions have their
	// own flag).
	DirtyJournal bool `json:"dirty_journal,omitempty"`
}

// PartitionStatus is one partition's outcome.
type PartitionStatus struct {
	Num    int    `json:"num"`
	Device string `json:"device"`
	Mount  string `json:"mount"`
	FSType string `json:"fstype"`
	// Status is mounted, skipped or failed.
	Status string `json:"status"`
	// Reason is a keyword for skipped and failed partitions (Reason*).
	Reason string `json:"reason,omitempty"`
	// Detail says more, in words, e.g. the mount error or the byte counts
	// of a truncated partition.
	Detail string `json:"detail,omitempty"`
	Offset int64  `json:"offset"`
	Size   int64  `json:"size"`
	// Type is the table's partition type (0x83, a GUID, Apple_HFS).
	Type string `json:"type,omitempty"`
	// LVM is the recorded metadata of an LVM member.
	LVM *probe.LVM `json:"lvm,omitempty"`
	// DirtyJournal: the filesystem's journal needs recovery (a disk pulled
	// while mounted); it is mounted without replaying it, so its files are
	// those of the last checkpoint.
	DirtyJournal bool `json:"dirty_journal,omitempty"`
	// View is set on the partitions of a hybrid disc (see Plan), which
	// are its views of the one medium, not entries of its table: which
	// side it is and where it was found, in words ("ISO 9660 side: the
	// whole disc", "HFS side: Apple partition map entry 2").
	View string `json:"view,omitempty"`
}

// Partition statuses.
const (
	StatusMounted = "mounted"
	StatusSkipped = "skipped"
	StatusFailed  = "failed"
)

// Reasons for skipped and failed partitions.
const (
	ReasonTruncated    = "truncated"     // extent runs past the end of the image
	ReasonExtended     = "extended"      // MBR extended container (its logicals are listed)
	ReasonSwap         = "swap"          // swap or hibernation area
	ReasonRAID         = "raid_member"   // Linux md member
	ReasonLVM          = "lvm_member"    // LVM physical volume (metadata recorded)
	ReasonNoFilesystem = "no_filesystem" // nothing known at its start
	ReasonPartitionMap = "partition_map" // APM map, driver or free-space entry
	ReasonWholeDisk    = "whole_disk"    // hybrid disc: the whole disk is mounted instead
	ReasonMountFailed  = "mount_failed"  // every filesystem type tried failed
	ReasonNotMounted   = "not_mounted"   // (Status) mountable but not mounted now
)

// Layout kinds.
const (
	LayoutSingle = "single"
	LayoutMulti  = "multi"
)

// Sentinel errors of Mount, testable with errors.Is.
var (
	// ErrNotADisk: the image is an archive or compressed file.
	ErrNotADisk = errors.New("archive, not a disk")
	// ErrErased: the image is empty or every sampled byte is the same.
	ErrErased = errors.New("erased or empty image")
	// ErrNothingMounted: no filesystem of the image could be mounted.
	ErrNothingMounted = errors.New("no filesystem could be mounted")
	// ErrMountTimeout: mount(2) did not return within the timeout.
	ErrMountTimeout = errors.New("mount timed out")
	// ErrNotMounted: Status found no mount of the medium.
	ErrNotMounted = errors.New("not mounted")
	// ErrMountPointBusy: the medium's mount directory exists and is not
	// an empty directory, so mounting would hide or mix content.
	ErrMountPointBusy = errors.New("mount point is not an empty directory")
)

// MountPoints lists the directories that hold the medium's filesystems.
func (l *Layout) MountPoints() []string {
	if l.Layout == LayoutSingle {
		return []string{l.Mount}
	}
	var out []string
	for _, p := range l.Partitions {
		if p.Status == StatusMounted {
			out = append(out, p.Mount)
		}
	}
	return out
}

// target is one filesystem Mount will try to mount.
type target struct {
	num      int   // partition number; 0 for the whole disk
	offset   int64 // in the image
	size     int64 // 0 = to the end
	fstypes  []string
	part     int // index in Layout.Partitions, -1 for the whole disk
	recovery bool
}

// Volume is one filesystem of a medium that its layout says to read: what
// Mount mounts through a loop device, and what an image reader (package
// imagefs) opens as a section of the image. Both take their volumes from
// Plan, so a medium has the same layout whichever way it is read.
type Volume struct {
	// Num is the partition number (the catalog's dev for an image
	// reader); 0 for a whole-disk filesystem.
	Num int
	// Offset and Size locate the volume in the image; Size 0 means "to
	// the end of the image".
	Offset, Size int64
	// Content is what probe found there (Type, Alternates, …).
	Content *probe.Content
	// Part indexes Layout.Partitions; -1 for a whole-disk filesystem.
	Part int
}

// MountTypes are the kernel filesystem types Mount tries for v, in order.
func (v Volume) MountTypes() []string {
	return mountTypes(v.Content.Type, v.Content.Alternates...)
}

// Plan turns a probe result into the medium's layout: every partition with
// its status (skipped ones with their reason; readable ones left as
// failed/not_mounted until a mount or a reader takes them) and the volumes
// to read, in table order, with the layout kind (single or multi) and the
// mount points under root. This is the one function that decides a
// medium's layout; Mount, Status and the image reader all use it. It only
// computes: nothing is read, attached or mounted. A medium whose plan has
// no volume and no error may still hold a filesystem at byte 16384 (see
// ZipVolume).
func Plan(res *probe.Result, mediumHash medium.Hash, root string) (*Layout, []Volume, error) {
	h := mediumHash
	lay := &Layout{Medium: string(h), Mount: h.MountPath(root), Table: res.Table, Partitions: []PartitionStatus{}, ImageSize: res.Size}
	switch res.Kind {
	case probe.KindArchive:
		return lay, nil, fmt.Errorf("medium %s: %w (%s data at byte 0)", h, ErrNotADisk, res.Archive)
	case probe.KindErased:
		return lay, nil, fmt.Errorf("medium %s: %w (every sampled byte is 0x%02x)", h, ErrErased, res.ErasedByte)
	case probe.KindEmpty:
		return lay, nil, fmt.Errorf("medium %s: %w (zero bytes)", h, ErrErased)
	}
	// Hybrid discs (APM or MBR in the ISO system area) and partitionless
	// media: the whole disk is the filesystem.
	whole := res.Whole != nil && res.Whole.Usage == probe.UsageFilesystem &&
		(res.Table == "" || isOptical(res.Whole.Type) || !hasFilesystem(res.Partitions))
	if whole && isOptical(res.Whole.Type) {
		if lay, vols, ok := planHybrid(res, lay); ok {
			return lay, vols, nil
		}
	}
	var vols []Volume
	for _, p := range res.Partitions {
		ps := PartitionStatus{Num: p.Num, Offset: p.Start, Size: p.Size, Type: p.Type}
		if p.Content != nil {
			ps.FSType = p.Content.Type
			ps.DirtyJournal = p.Content.NeedsRecovery
		}
		switch {
		case p.Extended:
			ps.Status, ps.Reason = StatusSkipped, ReasonExtended
			ps.FSType = ""
		case p.Truncated:
			ps.Status, ps.Reason = StatusSkipped, ReasonTruncated
			ps.Detail = fmt.Sprintf("partition %d spans bytes %d–%d but the image has %d bytes", p.Num, p.Start, p.End(), res.Size)
		case whole:
			ps.Status, ps.Reason = StatusSkipped, ReasonWholeDisk
		case p.Content == nil:
			ps.Status = StatusSkipped
			ps.Reason = ReasonNoFilesystem
			if isAPMMeta(p.Type) {
				ps.Reason = ReasonPartitionMap
			}
		case p.Content.Usage == probe.UsageSwap:
			ps.Status, ps.Reason = StatusSkipped, ReasonSwap
		case p.Content.Usage == probe.UsageRAID:
			ps.Status, ps.Reason = StatusSkipped, ReasonRAID
			ps.Detail = "md superblock version " + p.Content.Version
		case p.Content.Usage == probe.UsageLVM:
			ps.Status, ps.Reason = StatusSkipped, ReasonLVM
			ps.LVM = p.Content.LVM
		case len(mountTypes(p.Content.Type)) == 0:
			ps.Status, ps.Reason = StatusSkipped, ReasonNoFilesystem
			ps.Detail = p.Content.Type + " is not a mountable filesystem"
		default:
			// Pending until Mount (or a reader) takes it; Status keeps
			// this for a mountable partition that is not mounted now.
			ps.Status, ps.Reason = StatusFailed, ReasonNotMounted
			vols = append(vols, Volume{Num: p.Num, Offset: p.Start, Size: p.Size, Content: p.Content, Part: len(lay.Partitions)})
		}
		lay.Partitions = append(lay.Partitions, ps)
	}
	if whole {
		vols = []Volume{{Content: res.Whole, Part: -1}}
		lay.DirtyJournal = res.Whole.NeedsRecovery
	}
	lay.Layout = LayoutSingle
	if len(vols) > 1 {
		lay.Layout = LayoutMulti
	}
	if len(vols) == 0 && res.Whole != nil {
		// A whole-disk member (swap, RAID, LVM) with no table.
		return lay, nil, fmt.Errorf("medium %s: %w: the whole disk is a %s", h, ErrNothingMounted, res.Whole.Type)
	}
	return lay, vols, nil
}

// A hybrid disc is one medium with two views: its whole disc is ISO 9660
// (or a UDF bridge) for PCs, and an HFS or HFS+ volume whose allocation
// blocks are the same sectors shows the same files to a Mac, with Mac
// names, types and forks, and often files of its own (the Finder's
// Desktop DB) — or the two sides hold different trees. Neither view holds
// the other, so both are read: view 1 (/p1) is the ISO 9660 side, the
// whole disc; view 2 (/p2) is the HFS side, an Apple_HFS entry of the
// disc's partition map (genisoimage -hfs -part, xorriso -hfsplus) or,
// without a map, the volume at byte 0 whose master directory block is at
// byte 1024 (genisoimage -hfs). The numbers are the views', not the map's
// entries (the map's own entry 1 never holds a filesystem): the catalog's
// dev 1 and 2. A file on both sides is catalogued twice and stored once,
// its content being the same bytes.

// planHybrid plans a hybrid disc as its two views, or reports false when
// the disc has no HFS side (a plain CD, or an APM whose entries hold no
// HFS volume: the whole disc is then read alone).
func planHybrid(res *probe.Result, lay *Layout) (*Layout, []Volume, bool) {
	iso := PartitionStatus{Num: 1, Offset: 0, Size: res.Size, FSType: res.Whole.Type,
		View: sideName(res.Whole) + " side: the whole disc"}
	var mac PartitionStatus
	var macContent *probe.Content
	for _, p := range res.Partitions {
		if p.Content != nil && (p.Content.Type == "hfs" || p.Content.Type == "hfsplus") {
			mac = PartitionStatus{Num: 2, Offset: p.Start, Size: p.Size, FSType: p.Content.Type, Type: p.Type,
				View: fmt.Sprintf("%s side: %s entry %d", sideName(p.Content), tableName(res.Table), p.Num)}
			if p.Truncated {
				mac.Status, mac.Reason = StatusSkipped, ReasonTruncated
				mac.Detail = fmt.Sprintf("partition %d spans bytes %d–%d but the image has %d bytes", p.Num, p.Start, p.End(), res.Size)
			}
			macContent = p.Content
			break
		}
	}
	if macContent == nil && res.Hybrid != nil {
		macContent = res.Hybrid
		mac = PartitionStatus{Num: 2, Offset: 0, Size: res.Size, FSType: res.Hybrid.Type,
			View: sideName(res.Hybrid) + " side: the whole disc, its volume header at byte 1024"}
	}
	if macContent == nil {
		return nil, nil, false
	}
	lay.Partitions = []PartitionStatus{iso, mac}
	vols := []Volume{{Num: 1, Content: res.Whole, Part: 0}}
	lay.Partitions[0].Status, lay.Partitions[0].Reason = StatusFailed, ReasonNotMounted
	if mac.Status == "" {
		lay.Partitions[1].Status, lay.Partitions[1].Reason = StatusFailed, ReasonNotMounted
		size := mac.Size
		if mac.Offset == 0 {
			size = 0 // the whole disc
		}
		vols = append(vols, Volume{Num: 2, Offset: mac.Offset, Size: size, Content: macContent, Part: 1})
	}
	lay.Layout = LayoutSingle
	if len(vols) > 1 {
		lay.Layout = LayoutMulti
	}
	return lay, vols, true
}

// sideName names a hybrid disc's side by its filesystem.
func sideName(c *probe.Content) string {
	switch c.Type {
	case "iso9660":
		return "ISO 9660"
	case "udf":
		for _, a := range c.Alternates {
			if a == "iso9660" {
				return "UDF and ISO 9660"
			}
		}
		return "UDF"
	case "hfs":
		return "HFS"
	case "hfsplus":
		return "HFS+"
	}
	return c.Type
}

// tableName names a partition table in words.
func tableName(table string) string {
	switch table {
	case "apm":
		return "Apple partition map"
	case "mbr":
		return "MBR"
	case "gpt":
		return "GPT"
	}
	return table
}

// ZipOffset is where Zip disks keep their filesystem, behind a table the
// probe may not know.
const ZipOffset = zipOffset

// ZipVolume returns the filesystem at byte 16384 of an image of size bytes
// (Zip disks), or nil when there is none a mount could take: tried when
// nothing of a medium's plan could be mounted or read.
func ZipVolume(r io.ReaderAt, size int64) *Volume {
	if size <= zipOffset {
		return nil
	}
	c, _ := probe.Identify(r, zipOffset, size-zipOffset)
	if c == nil || c.Usage != probe.UsageFilesystem || len(mountTypes(c.Type)) == 0 {
		return nil
	}
	return &Volume{Offset: zipOffset, Content: c, Part: -1}
}

// planMount is Plan in Mount's terms: the volumes as mount targets.
func planMount(res *probe.Result, h medium.Hash, root string) (*Layout, []target, error) {
	lay, vols, err := Plan(res, h, root)
	var targets []target
	for _, v := range vols {
		targets = append(targets, v.target())
	}
	return lay, targets, err
}

func (v Volume) target() target {
	return target{num: v.Num, offset: v.Offset, size: v.Size, fstypes: v.MountTypes(), part: v.Part,
		recovery: v.Content.NeedsRecovery}
}

func hasFilesystem(ps []probe.Partition) bool {
	for _, p := range ps {
		if p.Content != nil && p.Content.Usage == probe.UsageFilesystem {
			return true
		}
	}
	return false
}

func isOptical(t string) bool { return t == "iso9660" || t == "udf" }

func isAPMMeta(t string) bool {
	return t == "Apple_partition_map" || t == "Apple_Free" || t == "Apple_Void" ||
		strings.HasPrefix(t, "Apple_Driver") || t == "Apple_Patches"
}

// mountTypes maps a probed type to the kernel filesystem types to try, in
// order. ISO9660 and UDF are each tried after the other fails.
func mountTypes(t string, alternates ...string) []string {
	var out []string
	add := func(s ...string) {
		for _, x := range s {
			dup := false
			for _, y := range out {
				dup = dup || x == y
			}
			if !dup {
				out = append(out, x)
			}
		}
	}
	switch t {
	case "ext2", "ext3", "ext4", "vfat", "exfat", "hfs", "hfsplus", "xfs", "btrfs", "squashfs":
		add(t)
	case "ntfs":
		add("ntfs3", "ntfs")
	case "iso9660":
		add("iso9660")
	case "udf":
		add("udf")
	default:
		return nil
	}
	for _, a := range alternates {
		add(mountTypes(a)...)
	}
	if isOptical(t) {
		add("iso9660", "udf")
	}
	return out
}

// Mount flags for every medium: read-only evidence, nothing executable,
// no device nodes or set-uid honoured, no atime writes.
const mountFlags = unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC | unix.MS_NOATIME

// mountData is the per-type option string. Journal replay writes to the
// device, which is read-only: ext4 noload, ext3 norecovery (the same
// switch under its ext3 name), xfs norecovery, btrfs skips log replay.
func mountData(fstype string) string {
	switch fstype {
	case "ext4":
		return "noload"
	case "ext3":
		return "norecovery"
	case "xfs":
		return "norecovery"
	case "btrfs":
		return "rescue=nologreplay"
	}
	return ""
}

// partitionMount is where target t goes in layout kind kind.
func partitionMount(h medium.Hash, root, kind string, num int) string {
	if kind == LayoutMulti {
		return h.PartitionMountPath(root, num)
	}
	return h.MountPath(root)
}

func cleanRoot(root string) string {
	if root == "" {
		root = DefaultRoot
	}
	if abs, err := filepath.Abs(root); err == nil {
		root = abs
	}
	if r, err := filepath.EvalSymlinks(root); err == nil {
		root = r
	}
	return root
}

// Flags of medium.problems for what a layout says (see Layout.Findings).
// loopdev has no catalog: the first program that has one records them.
const (
	// FlagPartitionTruncated: a partition runs past the end of the image
	// and was not mounted; its files are not in the catalog.
	FlagPartitionTruncated = "partition_truncated"
	// FlagPartitionSkipped: swap, a RAID or LVM member, or no known
	// filesystem; nothing of it is in the catalog.
	FlagPartitionSkipped = "partition_skipped"
	// FlagPartitionNotMounted: a filesystem that every mount attempt
	// refused (or, from Status, one that is not mounted now).
	FlagPartitionNotMounted = "partition_not_mounted"
	// FlagJournalNotReplayed: a note, not an error. The journal needs
	// recovery and was not replayed (the medium is evidence, mounted
	// read-only with noload/norecovery): the files are those of the
	// filesystem's last checkpoint, without the journal's last transactions.
	FlagJournalNotReplayed = "journal_not_replayed"
)

// Finding is one thing about a medium's layout that an archivist must be
// told: a partition whose files are not catalogued, or a journal that was
// not replayed. Extended containers (their logical partitions are listed
// themselves), partition-map entries and the table entries of a hybrid disc
// mounted whole lose nothing and are not findings.
type Finding struct {
	Flag      string `json:"-"`
	Partition int    `json:"partition"` // 0: the whole disk
	Offset    int64  `json:"offset"`    // in the image, bytes
	Size      int64  `json:"size"`      // bytes (0: to the end of the image)
	End       int64  `json:"end"`       // Offset + Size
	ImageSize int64  `json:"image_size,omitempty"`
	FSType    string `json:"fstype,omitempty"`
	Reason    string `json:"reason,omitempty"` // the partition's Reason
	Detail    string `json:"detail,omitempty"`
}

// Note reports whether the finding is information (a journal not
// replayed) rather than content left out of the catalog.
func (f Finding) Note() bool { return f.Flag == FlagJournalNotReplayed }

// String says it in one sentence, for stderr and summaries.
func (f Finding) String() string {
	what := "the whole disk"
	if f.Partition > 0 {
		what = fmt.Sprintf("partition %d", f.Partition)
	}
	if f.FSType != "" {
		what += " (" + f.FSType + ")"
	}
	switch f.Flag {
	case FlagPartitionTruncated:
		return fmt.Sprintf("%s spans bytes %d–%d but the image ends at %d: it was not mounted and none of its files are catalogued",
			what, f.Offset, f.End, f.ImageSize)
	case FlagPartitionSkipped:
		s := fmt.Sprintf("%s (bytes %d–%d) was not mounted: %s", what, f.Offset, f.End, strings.ReplaceAll(f.Reason, "_", " "))
		if f.Detail != "" {
			s += " (" + f.Detail + ")"
		}
		return s
	case FlagPartitionNotMounted:
		s := fmt.Sprintf("%s (bytes %d–%d) is not mounted", what, f.Offset, f.End)
		if f.Detail != "" {
			s += ": " + f.Detail
		}
		return s
	case FlagJournalNotReplayed:
		return what + ": the journal needs recovery and was not replayed (read-only evidence); its files are those of the last checkpoint"
	}
	return what + ": " + f.Flag
}

// Findings lists the layout's findings, partitions in table order, then
// journals not replayed.
func (l *Layout) Findings() []Finding {
	var out, notes []Finding
	for _, p := range l.Partitions {
		f := Finding{Partition: p.Num, Offset: p.Offset, Size: p.Size, End: p.Offset + p.Size,
			ImageSize: l.ImageSize, FSType: p.FSType, Reason: p.Reason, Detail: p.Detail}
		switch {
		case p.Status == StatusSkipped && p.Reason == ReasonTruncated:
			f.Flag = FlagPartitionTruncated
		case p.Status == StatusSkipped && (p.Reason == ReasonSwap || p.Reason == ReasonRAID ||
			p.Reason == ReasonLVM || p.Reason == ReasonNoFilesystem):
			f.Flag = FlagPartitionSkipped
		case p.Status == StatusFailed:
			f.Flag = FlagPartitionNotMounted
		}
		if f.Flag != "" {
			out = append(out, f)
		}
		if p.DirtyJournal && p.Status == StatusMounted {
			f.Flag, f.Reason, f.Detail = FlagJournalNotReplayed, "", ""
			notes = append(notes, f)
		}
	}
	if l.DirtyJournal {
		notes = append(notes, Finding{Flag: FlagJournalNotReplayed, Offset: l.Offset, Size: max(l.ImageSize-l.Offset, 0),
			End: l.ImageSize, ImageSize: l.ImageSize, FSType: l.FSType})
	}
	return append(out, notes...)
}

// Problems groups findings by flag as medium.problems details: for each
// flag, {"partitions": [findings…], "image_size": N, "severity": "warning"
// or "note"}. One entry per flag holds every partition, because a flag
// recorded again replaces its previous details.
func Problems(findings []Finding) map[string]map[string]any {
	out := map[string]map[string]any{}
	for _, f := range findings {
		d, ok := out[f.Flag]
		if !ok {
			sev := "warning"
			if f.Note() {
				sev = "note"
			}
			d = map[string]any{"partitions": []Finding{}, "severity": sev}
			if f.ImageSize > 0 {
				d["image_size"] = f.ImageSize
			}
			out[f.Flag] = d
		}
		d["partitions"] = append(d["partitions"].([]Finding), f)
	}
	return out
}
