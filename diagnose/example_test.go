package diagnose_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/HRDAG/ntt/diagnose"
	"github.com/jackc/pgx/v5/pgxpool"
)

// How a copier uses the package: one tracker and one kernel log per
// process, an Env per medium, a decision per failure.
func Example_copier() {
	ctx := context.Background()
	h := "c9894f1681b5b542eb3a4b75967e9aea" // the medium hash
	logger := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	var db *pgxpool.Pool // the catalog

	// Before copying: health from the mapfile (recomputed every run),
	// the medium's loop devices, the kernel log from now on.
	report, m, err := diagnose.HealthOf("/data/fast/img/" + h + ".map")
	if err != nil {
		logger.Error("reading mapfile", "err", err)
		return
	}
	_ = diagnose.RecordHealth(ctx, db, h, report)
	image := "/data/fast/img/" + h + ".img"
	devices, _ := diagnose.MediumDevices(image)
	kl, err := diagnose.OpenKernelLog(diagnose.KernelLogOptions{})
	if err != nil {
		logger.Warn("no kernel-log checks", "err", err)
	}
	tracker := diagnose.NewTracker(diagnose.DefaultPolicy())
	env := diagnose.Env{
		Health: report.Health, KernelLog: kl, Devices: devices,
		MountPoint: "/mnt/ntt/" + h, Image: image, WorkerID: "test-worker",
	}
	if len(devices) > 0 {
		env.MountDevice = devices[0] // the device of the file's partition
	}
	if m != nil {
		env.Bad = m.BadRanges()
	}

	// For each file that fails:
	key := diagnose.Key{Medium: h, Dev: 2049, Ino: 12}
	fileEnv := env
	fileEnv.Path = filepath.Join(env.MountPoint, "docs/report.doc")
	_, readErr := os.ReadFile(fileEnv.Path)
	d := tracker.Failure(ctx, key, readErr, fileEnv)
	d.Log(ctx, logger) // 🔍 DIAGNOSTIC CHECKPOINT …, ⏭️ SKIPPED ino=12 reason=DIAGNOSTIC_SKIP:BEYOND_EOF …
	_ = diagnose.RecordDecision(ctx, db, d)
	switch d.Action {
	case diagnose.Retry:
		// release the claim; the inode comes back later
	case diagnose.Skip, diagnose.GiveUp:
		_ = diagnose.MarkFinal(ctx, db, d)
	case diagnose.Settled:
		// another worker recorded the final decision
	}
	// And for each file that copies: tracker.Success(key).
}
