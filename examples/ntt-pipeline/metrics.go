package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"
)

// Metrics are the seed's "Metrics to collect", for one run of one medium.
type Metrics struct {
	Medium  string    `json:"medium_hash"`
	Image   string    `json:"image"`
	Started time.Time `json:"started"`
	// Reader is how the medium's files were reached: mount or image.
	Reader string  `json:"reader"`
	Total  float64 `json:"total_seconds"`

	Phases []PhaseMetric `json:"phases"`

	EnumRecords     int64   `json:"enum_records"`
	EnumSeconds     float64 `json:"enum_seconds"`
	EnumRate        float64 `json:"enum_records_per_second"`
	LoadSeconds     float64 `json:"load_seconds"`
	DedupeSeconds   float64 `json:"load_dedupe_seconds"`
	Inodes          int64   `json:"inodes"`
	Paths           int64   `json:"paths"`
	CopySeconds     float64 `json:"copy_seconds"`
	FilesCopied     int64   `json:"files_copied"`
	FilesDeduped    int64   `json:"files_deduped"`
	BytesRead       int64   `json:"bytes_read"`
	BytesWritten    int64   `json:"bytes_written"`
	CopyMBps        float64 `json:"copy_mb_per_second"`
	CopyFilesPerSec float64 `json:"copy_files_per_second"`
	DedupRatePct    float64 `json:"dedup_rate_percent"`
	Checkpoints     int64   `json:"diagnostic_checkpoints"`
	AutoSkips       int64   `json:"auto_skip_events"`
	Failed          int64   `json:"failed_inodes"`
	ArchivePath     string  `json:"archive_path,omitempty"`
	ArchiveBytes    int64   `json:"archive_bytes"`
	ImageBytes      int64   `json:"image_bytes"`
	ArchiveRatio    float64 `json:"archive_ratio"`
	ArchiveSeconds  float64 `json:"archive_seconds"`
	Health          string  `json:"health"`
	RescuedPct      float64 `json:"rescued_percent"`
	// MapfilePresent: the pre-flight found and read the ddrescue mapfile;
	// without one, health is unknown and RescuedPct was never measured.
	MapfilePresent bool `json:"mapfile_present"`
	// Layout lists the partitions left out of the catalog (truncated,
	// skipped, not mounted) and the journals not replayed, as recorded in
	// medium.problems.
	Layout []LayoutProblem `json:"layout_problems"`
	// StructuralProblems counts the damage the image reader found in the
	// medium's filesystem structures (recorded in medium.problems).
	StructuralProblems int64 `json:"structural_problems"`
}

// PhaseMetric is one phase's outcome: ran, skipped because the catalog
// says it is done, or failed.
type PhaseMetric struct {
	Name    string  `json:"name"`
	Outcome string  `json:"outcome"` // ran | skipped | failed
	Seconds float64 `json:"seconds"`
	Note    string  `json:"note,omitempty"`
}

func (m *Metrics) writeJSON(path string) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func (m *Metrics) writeTable(w io.Writer) {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "Medium\t%s\n", m.Medium)
	fmt.Fprintf(tw, "Reader\t%s\n", orDash(m.Reader))
	for _, p := range m.Phases {
		note := ""
		if p.Note != "" {
			note = "  (" + p.Note + ")"
		}
		fmt.Fprintf(tw, "Phase %s\t%s in %.2fs%s\n", p.Name, p.Outcome, p.Seconds, note)
	}
	fmt.Fprintf(tw, "Mapfile health\t%s\n", m.healthText())
	for _, l := range m.Layout {
		if l.Note() {
			fmt.Fprintf(tw, "Note\t%s\n", l.Text)
		} else {
			fmt.Fprintf(tw, "Not catalogued\t%s (%s)\n", l.Text, l.Problem)
		}
	}
	fmt.Fprintf(tw, "Enumeration\t%d records in %.2fs (%.0f records/s)\n", m.EnumRecords, m.EnumSeconds, m.EnumRate)
	fmt.Fprintf(tw, "Load\t%d inodes, %d paths in %.2fs (dedupe %.2fs)\n", m.Inodes, m.Paths, m.LoadSeconds, m.DedupeSeconds)
	fmt.Fprintf(tw, "Copy\t%d files, %.1f MB/s, %.0f files/s in %.2fs\n", m.FilesCopied, m.CopyMBps, m.CopyFilesPerSec, m.CopySeconds)
	fmt.Fprintf(tw, "Dedup rate\t%.1f%% of files already in by-hash\n", m.DedupRatePct)
	fmt.Fprintf(tw, "Diagnostics\t%d checkpoints, %d auto-skips, %d failed\n", m.Checkpoints, m.AutoSkips, m.Failed)
	if m.StructuralProblems > 0 {
		fmt.Fprintf(tw, "Structural damage\t%d problems found by the image reader\n", m.StructuralProblems)
	}
	if m.ArchivePath != "" {
		fmt.Fprintf(tw, "Archive\t%s: %s for a %s image (ratio %.3f) in %.2fs\n", m.ArchivePath, human(m.ArchiveBytes), human(m.ImageBytes), m.ArchiveRatio, m.ArchiveSeconds)
	}
	fmt.Fprintf(tw, "Total\t%.2fs\n", m.Total)
	tw.Flush()
}

// healthText is the mapfile's verdict, never a percentage that was not
// measured.
func (m *Metrics) healthText() string {
	switch {
	case m.Health == "":
		return "not checked"
	case !m.MapfilePresent:
		return "no mapfile (health unknown)"
	}
	return fmt.Sprintf("%s (%.2f%% rescued)", m.Health, m.RescuedPct)
}

func human(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for x := n / unit; x >= unit; x /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
