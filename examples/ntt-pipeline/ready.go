package main

// Readiness: what the images directory and the catalog say of each medium,
// at one moment. A medium is taken by the queue only when nothing is
// writing its image (no open file for writing under /proc, no ddrescue
// naming it — the pre-flight's findDdrescue), its image and mapfile have
// not changed for the settle time, and the catalog does not say it is
// archived. Everything here reads; nothing changes a medium.
//
// The /proc scanners take the proc root as a path so that tests run them
// on fixture directories as well as on the real /proc.

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/HRDAG/ntt/internal/medium"
	"github.com/HRDAG/ntt/internal/schema"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sys/unix"
)

// Medium states, as status shows them and the queue decides on them.
const (
	stateImaging            = "imaging"  // a process writes the image or mapfile, or ddrescue names it
	stateSettling           = "settling" // image or mapfile changed within the settle time
	stateReady              = "ready"    // nothing done yet, or an interrupted run to resume
	stateEnumerated         = "enumerated"
	stateLoaded             = "loaded"
	stateCopying            = "copying"
	stateCopied             = "copied" // every inode copied, not yet archived
	stateArchived           = "archived"
	stateArchivedUnreadable = "archived unreadable"
	stateFailed             = "failed"
	stateMissing            = "missing" // in the catalog, not archived, no image in the directory
)

// failureFlags are the medium.problems flags that mean a phase failed (as
// opposed to warnings such as enum_unreadable_entries or unrescued_bytes):
// a medium with one of them current is shown as failed until a later run
// resolves it.
var failureFlags = func() map[string]bool {
	m := map[string]bool{"image_missing": true, "mapfile_unreadable": true}
	for _, f := range preflightCleared {
		m[f] = true
	}
	for _, fs := range phaseCleared {
		for _, f := range fs {
			m[f] = true
		}
	}
	return m
}()

// flagArchivedUnreadable marks a medium sealed without its files copied
// because its image holds no filesystem that can be read.
const flagArchivedUnreadable = "archived_unreadable"

// imageFile is one <hash>.img in the images directory.
type imageFile struct {
	Hash    medium.Hash
	Path    string
	Size    int64
	ModTime time.Time // the newest of the image's and its mapfile's
}

// scanImages lists every <hash>.img of dir whose name is a medium hash,
// sorted by hash. Other files (and .img files not named by a hash) are
// not media and are left out.
func scanImages(dir string) ([]imageFile, error) {
	// Absolute: /proc's fd links are compared with these paths.
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("images directory: %w", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("images directory: %w", err)
	}
	var out []imageFile
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".img")
		if !ok || e.IsDir() {
			continue
		}
		h, err := medium.Parse(name)
		if err != nil {
			continue
		}
		img := filepath.Join(dir, e.Name())
		fi, err := os.Stat(img)
		if err != nil {
			continue // removed meanwhile (archived by another run)
		}
		f := imageFile{Hash: h, Path: img, Size: fi.Size(), ModTime: fi.ModTime()}
		if mi, err := os.Stat(filepath.Join(dir, h.MapFileName())); err == nil && mi.ModTime().After(f.ModTime) {
			f.ModTime = mi.ModTime()
		}
		out = append(out, f)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Hash < out[j].Hash })
	return out, nil
}

// fileWriter is a process holding a file open for writing.
type fileWriter struct {
	PID  int    `json:"pid"`
	Path string `json:"path"`
	Comm string `json:"command"`
}

// findWriters scans procRoot (/proc) for processes that hold one of paths
// open for writing: each /proc/PID/fd/N link naming one of them, with
// O_WRONLY or O_RDWR in /proc/PID/fdinfo/N's flags. Processes that vanish
// or cannot be read during the scan are passed over (a writer we may not
// inspect is still found by its command line through findDdrescue). The
// result maps each written path to its writers.
func findWriters(procRoot string, paths []string) (map[string][]fileWriter, error) {
	want := make(map[string]bool, len(paths))
	for _, p := range paths {
		want[p] = true
	}
	entries, err := os.ReadDir(procRoot)
	if err != nil {
		return nil, fmt.Errorf("scanning processes: %w", err)
	}
	found := map[string][]fileWriter{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		fdDir := filepath.Join(procRoot, e.Name(), "fd")
		fds, err := os.ReadDir(fdDir)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			target, err := os.Readlink(filepath.Join(fdDir, fd.Name()))
			if err != nil || !want[target] {
				continue
			}
			flags, err := fdFlags(filepath.Join(procRoot, e.Name(), "fdinfo", fd.Name()))
			if err != nil || flags&unix.O_ACCMODE == unix.O_RDONLY {
				continue
			}
			comm, _ := os.ReadFile(filepath.Join(procRoot, e.Name(), "comm"))
			found[target] = append(found[target], fileWriter{PID: pid, Path: target, Comm: strings.TrimSpace(string(comm))})
		}
	}
	return found, nil
}

// fdFlags reads the octal "flags:" line of a /proc/PID/fdinfo/N file.
func fdFlags(path string) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "flags:"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 8, 64)
			if err != nil {
				return 0, fmt.Errorf("%s: flags %q: %w", path, v, err)
			}
			return int(n), nil
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("%s: no flags line", path)
}

// problem is one current flag of medium.problems.
type problem struct {
	Flag  string    `json:"flag"`
	At    time.Time `json:"at"`
	Error string    `json:"error,omitempty"`
	Phase string    `json:"phase,omitempty"`
}

// currentProblems are the flags of a medium.problems object without
// resolved_at, newest first. Flags written by hand (not objects) count as
// current with no time.
func currentProblems(problems map[string]any) []problem {
	var out []problem
	for flag, v := range problems {
		p := problem{Flag: flag}
		if m, ok := v.(map[string]any); ok {
			if _, resolved := m[schema.ResolvedAtKey]; resolved {
				continue
			}
			if s, ok := m["at"].(string); ok {
				p.At, _ = time.Parse(time.RFC3339Nano, s)
			}
			p.Error, _ = m["error"].(string)
			p.Phase, _ = m["phase"].(string)
		}
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].At.Equal(out[j].At) {
			return out[i].At.After(out[j].At)
		}
		return out[i].Flag < out[j].Flag
	})
	return out
}

// mediumStatus is one row of the processing-queue table.
type mediumStatus struct {
	Hash  medium.Hash `json:"medium_hash"`
	Image string      `json:"image,omitempty"`
	State string      `json:"state"`
	// Detail says why: the writer, the failed flag, the copy's progress.
	Detail     string       `json:"detail,omitempty"`
	CopiedPct  float64      `json:"copied_percent"`
	ImageBytes int64        `json:"image_bytes"`
	Health     string       `json:"health,omitempty"`
	Files      int64        `json:"files"`
	DedupPct   float64      `json:"dedup_rate_percent"`
	Problem    *problem     `json:"last_problem,omitempty"`
	Writers    []fileWriter `json:"writers,omitempty"`
	ModTime    time.Time    `json:"modified,omitzero"`
}

// processable reports whether the queue takes the medium: neither being
// imaged nor settling nor archived nor without an image. A failed medium
// is taken again (the rerun resumes it).
func (s mediumStatus) processable() bool {
	switch s.State {
	case stateImaging, stateSettling, stateArchived, stateArchivedUnreadable, stateMissing:
		return false
	}
	return s.Image != ""
}

// readiness is how the images directory and the catalog are read.
type readiness struct {
	images   string        // images directory ("" = catalog only)
	work     string        // where raw enumeration files are left
	procRoot string        // "/proc"
	settle   time.Duration // quiet time an image needs before it is ready
	now      func() time.Time
}

// collect returns the status of every medium in the images directory or
// the catalog, sorted by hash.
func (r readiness) collect(ctx context.Context, db *pgxpool.Pool) ([]mediumStatus, error) {
	var files []imageFile
	if r.images != "" {
		var err error
		if files, err = scanImages(r.images); err != nil {
			return nil, err
		}
	}
	return r.classify(ctx, db, files, true)
}

// classify returns the status of each image file; with allCatalog, also of
// every medium the catalog knows (without an image: archived or missing).
func (r readiness) classify(ctx context.Context, db *pgxpool.Pool, files []imageFile, allCatalog bool) ([]mediumStatus, error) {
	now := time.Now
	if r.now != nil {
		now = r.now
	}
	byHash := map[medium.Hash]*mediumStatus{}
	var watched []string
	for _, f := range files {
		byHash[f.Hash] = &mediumStatus{Hash: f.Hash, Image: f.Path, ImageBytes: f.Size, ModTime: f.ModTime}
		watched = append(watched, f.Path, filepath.Join(filepath.Dir(f.Path), f.Hash.MapFileName()))
	}
	writers, err := findWriters(r.procRoot, watched)
	if err != nil {
		return nil, err
	}
	if err := r.readCatalog(ctx, db, byHash, allCatalog); err != nil {
		return nil, err
	}
	out := make([]mediumStatus, 0, len(byHash))
	for _, s := range byHash {
		r.decide(s, writers, now())
		out = append(out, *s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Hash < out[j].Hash })
	return out, nil
}

// imageFileOf describes one image named on the command line; its name
// must be <hash>.img.
func imageFileOf(path string) (imageFile, error) {
	h, err := medium.Parse(strings.TrimSuffix(filepath.Base(path), ".img"))
	if err != nil {
		return imageFile{}, fmt.Errorf("image %s: %w", path, err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return imageFile{}, fmt.Errorf("image %s: %w", path, err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return imageFile{}, err
	}
	f := imageFile{Hash: h, Path: abs, Size: fi.Size(), ModTime: fi.ModTime()}
	if mi, err := os.Stat(filepath.Join(filepath.Dir(abs), h.MapFileName())); err == nil && mi.ModTime().After(f.ModTime) {
		f.ModTime = mi.ModTime()
	}
	return f, nil
}

// catalogRow is what one query reads of a medium: its row and its inode
// counts.
type catalogRow struct {
	copyDone                          *time.Time
	enumDone                          *time.Time
	health, imagePath                 *string
	problems                          map[string]any
	files, filesCopied, filesNew      int64
	inodes, pending, claimed, blobbed int64
}

// readCatalog fills every medium's catalog columns, adding the media the
// catalog knows that the directory does not hold.
func (r readiness) readCatalog(ctx context.Context, db *pgxpool.Pool, byHash map[medium.Hash]*mediumStatus, allCatalog bool) error {
	rows, err := db.Query(ctx, `
		SELECT m.medium_hash, m.copy_done, m.enum_done, m.health, m.image_path, m.problems,
		       coalesce(c.files, 0), coalesce(c.files_copied, 0), coalesce(c.files_new, 0),
		       coalesce(c.inodes, 0), coalesce(c.pending, 0), coalesce(c.claimed, 0), coalesce(c.blobbed, 0)
		FROM medium m LEFT JOIN (
			SELECT medium_hash,
			       count(*) FILTER (WHERE fs_type = 'f') AS files,
			       count(*) FILTER (WHERE fs_type = 'f' AND copied) AS files_copied,
			       count(*) FILTER (WHERE fs_type = 'f' AND by_hash_created) AS files_new,
			       count(*) AS inodes,
			       count(*) FILTER (WHERE NOT copied AND claimed_by IS NULL) AS pending,
			       count(*) FILTER (WHERE NOT copied AND claimed_by IS NOT NULL) AS claimed,
			       count(*) FILTER (WHERE fs_type = 'f' AND blobid IS NOT NULL) AS blobbed
			FROM inode GROUP BY medium_hash) c USING (medium_hash)`)
	if err != nil {
		return fmt.Errorf("reading the catalog's media: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var hs string
		var c catalogRow
		if err := rows.Scan(&hs, &c.copyDone, &c.enumDone, &c.health, &c.imagePath, &c.problems,
			&c.files, &c.filesCopied, &c.filesNew, &c.inodes, &c.pending, &c.claimed, &c.blobbed); err != nil {
			return fmt.Errorf("reading the catalog's media: %w", err)
		}
		h, err := medium.Parse(hs)
		if err != nil {
			continue // not a medium NTT could have made; status cannot name its tables
		}
		s, ok := byHash[h]
		if !ok && !allCatalog {
			continue
		}
		if !ok {
			s = &mediumStatus{Hash: h}
			byHash[h] = s
		}
		r.apply(s, c)
	}
	return rows.Err()
}

func (r readiness) apply(s *mediumStatus, c catalogRow) {
	if c.health != nil {
		s.Health = *c.health
	}
	s.Files = c.files
	if c.files > 0 {
		s.CopiedPct = 100 * float64(c.filesCopied) / float64(c.files)
	}
	if c.blobbed > 0 {
		s.DedupPct = 100 * float64(c.blobbed-c.filesNew) / float64(c.blobbed)
	}
	ps := currentProblems(c.problems)
	if len(ps) > 0 {
		s.Problem = &ps[0]
	}
	switch {
	case c.copyDone != nil && hasFlag(ps, flagArchivedUnreadable):
		s.State = stateArchivedUnreadable
	case c.copyDone != nil:
		s.State = stateArchived
	}
	for _, p := range ps {
		if failureFlags[p.Flag] && s.State == "" {
			s.State, s.Detail = stateFailed, p.Flag
			break
		}
	}
	if s.State != "" {
		return
	}
	switch {
	case c.enumDone == nil:
		// Not loaded yet: enumerated or ready, decided with the files.
	case c.pending+c.claimed == 0:
		s.State = stateCopied
	case c.filesCopied == 0 && c.claimed == 0:
		s.State = stateLoaded
	default:
		s.State = stateCopying
	}
}

func hasFlag(ps []problem, flag string) bool {
	for _, p := range ps {
		if p.Flag == flag {
			return true
		}
	}
	return false
}

// decide settles a medium's state from its files once the catalog has
// spoken: archived stays archived; a writer makes it imaging (whatever the
// catalog says, it must not be touched), a recent change settling.
func (r readiness) decide(s *mediumStatus, writers map[string][]fileWriter, now time.Time) {
	if s.State == stateArchived || s.State == stateArchivedUnreadable {
		return
	}
	if s.Image == "" {
		s.State, s.Detail = stateMissing, "no "+s.Hash.ImageFileName()+" in the images directory"
		return
	}
	s.Writers = append(writers[s.Image], writers[filepath.Join(filepath.Dir(s.Image), s.Hash.MapFileName())]...)
	if len(s.Writers) > 0 {
		w := s.Writers[0]
		s.State, s.Detail = stateImaging, fmt.Sprintf("pid %d (%s) writes %s", w.PID, w.Comm, filepath.Base(w.Path))
		return
	}
	if procs, err := findDdrescue(r.procRoot, s.Image, s.Hash); err == nil && len(procs) > 0 {
		s.State, s.Detail = stateImaging, fmt.Sprintf("pid %d: %s", procs[0].PID, procs[0].Cmdline)
		return
	}
	if age := now.Sub(s.ModTime); age < r.settle {
		s.State, s.Detail = stateSettling, fmt.Sprintf("changed %s ago (settle time %s)", age.Round(time.Second), r.settle)
		return
	}
	switch s.State {
	case stateCopying:
		s.Detail = fmt.Sprintf("%.0f %%", s.CopiedPct)
	case "":
		s.State = stateReady
		if r.work != "" {
			if _, err := os.Stat(filepath.Join(r.work, s.Hash.RawFileName())); err == nil {
				s.State = stateEnumerated
			}
		}
	}
}
