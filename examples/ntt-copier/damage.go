package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/HRDAG/ntt/copier"
	"github.com/HRDAG/ntt/copier/diagpolicy"
	"github.com/HRDAG/ntt/internal/cli"
	"github.com/HRDAG/ntt/internal/dbconn"
	"github.com/HRDAG/ntt/internal/medium"
	"github.com/HRDAG/ntt/loopdev"
	"github.com/jackc/pgx/v5/pgxpool"
)

// locate finds the medium's image and mapfile (diagpolicy.Locate) and
// prepares the diagnose policy for them.
func locate(ctx context.Context, pool *pgxpool.Pool, c *config, h medium.Hash, log *slog.Logger) (diagpolicy.Source, *diagpolicy.Policy, error) {
	var catalog *string
	if err := pool.QueryRow(ctx, `SELECT image_path FROM medium WHERE medium_hash = $1`, string(h)).Scan(&catalog); err != nil {
		catalog = nil
	}
	opts := diagpolicy.LocateOptions{Image: c.image, MountRoot: c.root, ImagesDirs: []string{c.images}}
	if catalog != nil {
		opts.CatalogImage = *catalog
	}
	src, err := diagpolicy.Locate(string(h), opts)
	if err != nil {
		return src, nil, err
	}
	if opts.CatalogImage != "" && src.Image != opts.CatalogImage {
		log.Warn("the image is not where the catalog says", "medium", h, "catalog", opts.CatalogImage, "image", src.Image, "image_from", src.From)
	}
	pol, err := diagpolicy.New(diagpolicy.Options{Medium: string(h), Image: src.Image, Mapfile: src.Mapfile})
	return src, pol, err
}

// prepare records what was found about the medium before copying: its
// image path and the layout's findings (warned about), then either
// damage_unchecked (no mapfile) or, with a mapfile, the damage of files
// copied before it was known and the health.
func prepare(ctx context.Context, pool *pgxpool.Pool, h medium.Hash, src diagpolicy.Source, pol *diagpolicy.Policy, mountRoot string, log *slog.Logger) error {
	findings, err := diagpolicy.RecordSource(ctx, pool, string(h), src)
	if err != nil {
		return err
	}
	logFindings(log, h, findings)
	_, err = pol.PrepareDamage(ctx, pool, src, mountRoot, log)
	return err
}

// logFindings warns about partitions left out of the catalog and notes
// journals that were not replayed.
func logFindings(log *slog.Logger, h medium.Hash, fs []loopdev.Finding) {
	for _, f := range fs {
		if f.Note() {
			log.Info("note: "+f.String(), "medium", h, "problem", f.Flag)
		} else {
			log.Warn("not in the catalog: "+f.String(), "medium", h, "problem", f.Flag)
		}
	}
}

// checkDamage is `ntt-copier damage`: map every copied file onto the
// mapfile now and record what is found.
func checkDamage(ctx context.Context, c *config, stdout, stderr io.Writer) int {
	if c.hash == "" {
		return failf(stderr, "damage needs --medium-hash; see --help.")
	}
	h, err := medium.Parse(c.hash)
	if err != nil {
		return failf(stderr, "%v.", errText(err))
	}
	log := cli.NewLogger(stderr, c.verbose)
	pool, err := dbconn.Open(ctx, dbconn.Options{URL: c.db, MaxConns: 3, Private: dbconn.Announce("ntt-copier", stderr)})
	if err != nil {
		return failf(stderr, "%v.", errText(err))
	}
	defer pool.Close()
	src, pol, err := locate(ctx, pool, c, h, log)
	if err != nil {
		return failf(stderr, "%v.", errText(err))
	}
	defer pol.Close()
	hr := pol.Health()
	if !hr.Present {
		return failf(stderr, "medium %s: no ddrescue mapfile found (looked for %s); nothing to check the copied files against", h, strings.Join(src.Looked, ", "))
	}
	findings, err := diagpolicy.RecordSource(ctx, pool, string(h), src)
	if err != nil {
		return failf(stderr, "%v.", errText(err))
	}
	logFindings(log, h, findings)
	var rep copier.DamageCheckReport
	if m := pol.DamageMapper(); m != nil {
		if rep, err = copier.CheckDamage(ctx, pool, copier.DamageCheckOptions{Medium: string(h), MountRoot: c.root, Damage: m, Logger: log}); err != nil {
			return failf(stderr, "%v.", errText(err))
		}
	} else {
		log.Info("the mapfile has no unrescued range: no file can be damaged", "medium", h, "mapfile", hr.Mapfile)
	}
	if err := diagpolicy.RecordChecked(ctx, pool, string(h), hr, &rep); err != nil {
		return failf(stderr, "%v.", errText(err))
	}
	if cli.IsTerminal(stdout) {
		fmt.Fprintf(stdout, "✓ Damage of medium %s against %s (%s, %.2f%% rescued): %s files checked, %s damaged (%s newly recorded), %s could not be checked\n",
			h, hr.Mapfile, hr.Health, hr.RescuedPct, cli.Group(rep.Checked), cli.Group(rep.Damaged), cli.Group(rep.Recorded), cli.Group(rep.Unchecked))
	} else {
		json.NewEncoder(stdout).Encode(map[string]any{"medium": string(h), "image": src.Image, "mapfile": hr.Mapfile,
			"health": hr.Health, "rescued_pct": hr.RescuedPct, "checked": rep.Checked, "damaged": rep.Damaged,
			"recorded": rep.Recorded, "unchecked": rep.Unchecked, "elapsed_s": rep.Elapsed.Seconds()})
	}
	if rep.Unchecked > 0 {
		fmt.Fprintf(stderr, "ntt-copier: medium %s: %d copied files could not be checked (see the log).\n", h, rep.Unchecked)
	}
	return 0
}
