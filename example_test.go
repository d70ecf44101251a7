package ntt_test

import (
	"context"
	"log"
	"os"

	"github.com/HRDAG/ntt/archive"
	"github.com/HRDAG/ntt/copier"
	"github.com/HRDAG/ntt/enumerate"
	"github.com/HRDAG/ntt/loader"
	"github.com/HRDAG/ntt/loopdev"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Example processes one medium through every phase with the packages
// directly, as ntt-pipeline does (without its resume logic, metrics and
// diagnose policy). It is compiled with the tests; running it needs root,
// an image and a catalog database.
func Example() {
	ctx := context.Background()
	hash := os.Getenv("HASH") // a plain string: every public entry point validates it
	image := "/data/fast/img/" + hash + ".img"

	db, err := pgxpool.New(ctx, os.Getenv("NTT_DB_URL")) // migrated by `ntt-loader migrate`
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()

	// 1. Mount read-only (one loop device per partition) and enumerate.
	layout, err := loopdev.Mount(ctx, loopdev.MountSpec{Medium: hash, Image: image})
	if err != nil {
		log.Fatal(err)
	}
	defer loopdev.Unmount(ctx, hash, loopdev.DefaultRoot, &loopdev.UnmountOptions{Image: image})
	partitions, err := enumerate.PartitionMounts(layout.Mount)
	if err != nil {
		log.Fatal(err)
	}
	raw, err := os.CreateTemp("", hash[:8]+".raw")
	if err != nil {
		log.Fatal(err)
	}
	defer os.Remove(raw.Name())
	if _, err := enumerate.Walk(ctx, []string{layout.Mount}, enumerate.Options{EnterMounts: partitions}, raw); err != nil {
		log.Fatal(err)
	}

	// 2. Load the records into the medium's partitions, all or nothing.
	if _, err := raw.Seek(0, 0); err != nil {
		log.Fatal(err)
	}
	if _, err := loader.Load(ctx, db, hash, raw, loader.Options{ImagePath: image}); err != nil {
		log.Fatal(err)
	}

	// 3. Copy every file once into the deduplicated store.
	st, err := copier.Run(ctx, db, copier.Options{Medium: hash, Workers: 4, StoreRoot: "/data/cold"})
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("%d files copied, %d deduplicated", st.Copied, st.Deduped)

	// 4. Seal the image files, verify, mark the medium done, remove sources.
	res, err := archive.Complete(ctx, db, archive.Spec{Medium: hash, Dest: "/data/cold/img-read"}, archive.CompleteOptions{})
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("archived to %s", res.Path)
}
