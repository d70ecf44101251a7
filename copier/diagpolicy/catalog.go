package diagpolicy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/HRDAG/ntt/copier"
	"github.com/HRDAG/ntt/diagnose"
	"github.com/HRDAG/ntt/internal/medium"
	"github.com/HRDAG/ntt/internal/schema"
	"github.com/HRDAG/ntt/loopdev"
	"github.com/jackc/pgx/v5"
)

// What the copier records about a medium's source before copying.
//
// The runbook loads without --image, so the catalog may not know the
// image; the mounted medium does (Locate). The copier records the image
// path, the medium's health and the layout's findings (partitions left out,
// journals not replayed), because it is the first program of the runbook
// that has both the catalog and the mount: ntt-mount-helper has no catalog,
// and ntt-loader reads only a raw file, maybe on another host.
//
// Damage: a file copied while no mapfile was known gets no damage check.
// Such a run records the problem damage_unchecked; the first run that finds
// the mapfile maps the files already copied (copier.CheckDamage), then
// records the health and marks damage_unchecked resolved. A medium with
// copied files and no health recorded (catalogued before this was kept) is
// checked the same way. medium.health is recorded only after that check, so
// a run that dies in it leaves the check to the next one.

// FlagDamageUnchecked is the medium.problems flag of files copied without a
// damage check (no mapfile known). Its details get "resolved_at" when the
// copied files were checked.
const FlagDamageUnchecked = "damage_unchecked"

// RecordSource records what Locate found: medium.image_path when an image
// was found, and each of the layout's findings (loopdev.Layout.Findings)
// merged into medium.problems. It returns the findings, for the caller to
// show.
func RecordSource(ctx context.Context, q schema.Querier, hash string, src Source) ([]loopdev.Finding, error) {
	h, err := medium.Parse(hash)
	if err != nil {
		return nil, err
	}
	if src.Image != "" {
		if _, err := q.Exec(ctx, `
			INSERT INTO medium (medium_hash, image_path) VALUES ($1, $2)
			ON CONFLICT (medium_hash) DO UPDATE SET image_path = excluded.image_path
			WHERE medium.image_path IS DISTINCT FROM excluded.image_path`, string(h), src.Image); err != nil {
			return nil, fmt.Errorf("medium %s: recording the image path: %w", h, err)
		}
	}
	var fs []loopdev.Finding
	if src.Layout != nil {
		fs = src.Layout.Findings()
		if err := RecordFindings(ctx, q, hash, fs); err != nil {
			return fs, err
		}
	}
	return fs, nil
}

// RecordFindings merges a layout's findings into medium.problems, one flag
// each (loopdev.Problems).
func RecordFindings(ctx context.Context, q schema.Querier, hash string, fs []loopdev.Finding) error {
	h, err := medium.Parse(hash)
	if err != nil {
		return err
	}
	for flag, details := range loopdev.Problems(fs) {
		if err := schema.MergeProblem(ctx, q, h, flag, details); err != nil {
			return err
		}
	}
	return nil
}

// NeedsDamageCheck reports whether files of the medium were copied without
// a damage check: damage_unchecked is recorded and not resolved, or files
// were copied and no health was ever recorded.
func NeedsDamageCheck(ctx context.Context, q schema.Querier, hash string) (bool, error) {
	h, err := medium.Parse(hash)
	if err != nil {
		return false, err
	}
	var unchecked, noHealth, copied bool
	err = q.QueryRow(ctx, fmt.Sprintf(`
		SELECT coalesce(problems ? $2 AND NOT (problems -> $2 ? 'resolved_at'), false), health IS NULL,
			EXISTS (SELECT 1 FROM %s WHERE medium_hash = $1 AND copied AND fs_type = 'f' AND status = 'success')
		FROM medium WHERE medium_hash = $1`, h.InodeTable()), string(h), FlagDamageUnchecked).Scan(&unchecked, &noHealth, &copied)
	if err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return false, nil
		}
		return false, fmt.Errorf("medium %s: reading its damage state: %w", h, err)
	}
	return copied && (unchecked || noHealth), nil
}

// MarkDamageUnchecked records damage_unchecked before a copy run without a
// mapfile, when files are left to copy (they will be copied unchecked).
func MarkDamageUnchecked(ctx context.Context, q schema.Querier, hash string, src Source) error {
	h, err := medium.Parse(hash)
	if err != nil {
		return err
	}
	var pending bool
	if err := q.QueryRow(ctx, fmt.Sprintf(`SELECT EXISTS (SELECT 1 FROM %s WHERE medium_hash = $1 AND NOT copied AND fs_type = 'f')`,
		h.InodeTable()), string(h)).Scan(&pending); err != nil {
		return fmt.Errorf("medium %s: counting files left to copy: %w", h, err)
	}
	if !pending {
		return nil
	}
	return schema.MergeProblem(ctx, q, h, FlagDamageUnchecked, map[string]any{
		"reason":      "files copied without a ddrescue mapfile: damage (unrescued bytes read as zeros) could not be checked",
		"looked_for":  src.Looked,
		"image":       src.Image,
		"remedy":      "put <hash>.map beside the image and run ntt-copier again, or ntt-copier damage --medium-hash HASH",
		"recorded_by": "ntt-copier",
	})
}

// RecordChecked records the medium's health from its mapfile (with the
// unrescued_bytes problem, diagnose.RecordHealth) and marks an unresolved
// damage_unchecked resolved, with what the check found (rep is nil when no
// file needed checking).
func RecordChecked(ctx context.Context, q schema.Querier, hash string, health diagnose.HealthReport, rep *copier.DamageCheckReport) error {
	h, err := medium.Parse(hash)
	if err != nil {
		return err
	}
	if !health.Present {
		return fmt.Errorf("medium %s: no mapfile to record the health of", h)
	}
	if err := diagnose.RecordHealth(ctx, q, string(h), health); err != nil {
		return err
	}
	var unresolved bool
	if err := q.QueryRow(ctx, `SELECT coalesce(problems ? $2 AND NOT (problems -> $2 ? 'resolved_at'), false)
		FROM medium WHERE medium_hash = $1`, string(h), FlagDamageUnchecked).Scan(&unresolved); err != nil {
		return fmt.Errorf("medium %s: reading its problems: %w", h, err)
	}
	if !unresolved {
		return nil
	}
	// The flag keeps what the check found, then is marked resolved the one
	// way every program marks a problem resolved.
	d := map[string]any{"mapfile": health.Mapfile}
	if rep != nil {
		d["checked"], d["damaged"], d["unchecked"] = rep.Checked, rep.Damaged, rep.Unchecked
	}
	if err := schema.MergeProblem(ctx, q, h, FlagDamageUnchecked, d); err != nil {
		return err
	}
	_, err = schema.ResolveProblems(ctx, q, h, FlagDamageUnchecked)
	return err
}

// PrepareDamage makes the catalog's damage record whole before a copy run
// of the medium mounted at <mountRoot>/<hash> (mountRoot "": read from its
// image, nothing mounted). Without a mapfile it records
// damage_unchecked (the files left to copy go unchecked). With one, it
// first checks the files copied without a check (NeedsDamageCheck;
// copier.CheckDamage), then records the health and resolves
// damage_unchecked (RecordChecked). It returns the check's report, nil when
// none ran.
func (p *Policy) PrepareDamage(ctx context.Context, q schema.Querier, src Source, mountRoot string, log *slog.Logger) (*copier.DamageCheckReport, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := string(p.h)
	if !p.health.Present {
		log.Warn("no ddrescue mapfile: files are copied without a damage check (recorded as "+FlagDamageUnchecked+")",
			"medium", h, "looked_for", strings.Join(src.Looked, ", "))
		return nil, MarkDamageUnchecked(ctx, q, h, src)
	}
	var rep *copier.DamageCheckReport
	if m := p.DamageMapper(); m != nil {
		need, err := NeedsDamageCheck(ctx, q, h)
		if err != nil {
			return nil, err
		}
		if need && mountRoot == "" {
			// Read from the image, nothing is mounted to map files through
			// FIEMAP; the copier maps what it copies now from the reader's
			// runs. The earlier files stay unchecked, and say so.
			log.Warn("files copied before the mapfile was known are not checked while reading the image: mount the medium and run `ntt-copier damage`",
				"medium", h, "mapfile", p.health.Mapfile)
			if err := diagnose.RecordHealth(ctx, q, h, p.health); err != nil {
				return nil, err
			}
			return nil, MarkDamageUnchecked(ctx, q, h, src)
		}
		if need {
			log.Info("checking the damage of files copied before the mapfile was known", "medium", h, "mapfile", p.health.Mapfile)
			r, err := copier.CheckDamage(ctx, q, copier.DamageCheckOptions{Medium: h, MountRoot: mountRoot, Damage: m, Logger: log})
			if err != nil {
				return nil, err
			}
			rep = &r
		}
	}
	return rep, RecordChecked(ctx, q, h, p.health, rep)
}
