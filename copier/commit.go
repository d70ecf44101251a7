package copier

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/HRDAG/ntt/internal/medium"
	"github.com/HRDAG/ntt/internal/schema"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// maxInodeErrors is how many messages inode.errors keeps (the newest);
// error_count counts them all (one inode once logged 188,000).
const maxInodeErrors = 10

type outcomeKind uint8

const (
	released outcomeKind = iota // not processed: the claim goes back
	copied
	failed
	excluded // no non-excluded path: marked EXCLUDED like the loader does
)

// outcome is what became of one claimed inode in a batch.
type outcome struct {
	n    *inode
	kind outcomeKind
	// copied
	blob          string
	mime          string
	created       bool
	damage        json.RawMessage
	read, written int64 // bytes read from the medium, written to the store
	// failed
	dec Decision
	err error
	at  time.Time
}

type problem struct {
	flag    string
	details map[string]any
}

// commitBatch records a batch in one transaction: blobs first (in id
// order, so concurrent batches never deadlock on them), then the inodes,
// the diagnostic events and the medium's problem flags. Only rows still
// claimed by this worker (or, for a held batch, still held) are touched;
// it returns how many copied inodes had lost their claim or hold meanwhile
// (a lease that ran out, a hold whose connection died: another worker
// copies them again, to the same blob).
//
// Blobs already in recorded (rows this run committed) are not inserted into
// blobs again; the batch's blobs are added to it once the batch commits.
//
// Quarantine: the transaction holds the quarantine lock shared (see
// VerifyStore). A blob this batch wrote (created) is correct by
// construction and clears its quarantine mark; an inode whose blob is
// still marked is not recorded as copied but released, its blob id made
// suspect in recorded, so that its next copy writes the blob itself
// instead of trusting what is at its name.
//
// A held batch (held not nil) commits in its hold's transaction. If that
// transaction is gone (a failed attempt, a lost connection), its rows are
// held again first; those another process took meanwhile count as lost.
func commitBatch(ctx context.Context, db *pgxpool.Pool, h medium.Hash, worker string, outs []outcome, problems []problem, recorded *blobSet, held *hold) (lost int64, refusedN int, err error) {
	// Copied inodes a relock did not get back. A call after a failed one
	// (an outage waited out) starts again from the whole batch, and
	// counts what is missing anew.
	var relost int64
	for attempt := 0; ; attempt++ {
		if held != nil && !held.open {
			var gone int64
			if outs, gone, err = held.relock(ctx, db, h, outs); err != nil {
				return 0, 0, err
			}
			relost += gone
		}
		c := prepareCommit(h, worker, outs, recorded, held != nil)
		var refused []string
		lost, refused, err = runCommit(ctx, db, h, c, problems, held)
		if err == nil {
			recorded.add(c.blobIDs)
			recorded.trust(c.createdIDs)
			recorded.refuse(refused)
			return lost + relost, len(refused), nil
		}
		if attempt >= 4 || !transient(err) || ctx.Err() != nil {
			return 0, 0, err
		}
		select {
		case <-ctx.Done():
			return 0, 0, err
		case <-time.After(time.Duration(attempt+1) * 200 * time.Millisecond):
		}
	}
}

// preparedCommit is a batch's commit as statements, for runCommit.
type preparedCommit struct {
	b                   *pgx.Batch
	successQ, refusedQ  *pgx.QueuedQuery
	nSuccess            int64
	blobIDs, createdIDs []string
}

// prepareCommit queues the statements that record outs (see commitBatch).
// For a held batch (held set) the rows given back need no statement: the
// commit unlocks them.
func prepareCommit(h medium.Hash, worker string, outs []outcome, recorded *blobSet, held bool) preparedCommit {
	b := &pgx.Batch{}
	table := h.InodeTable()
	holder := worker // whose claims the rows are
	if held {
		holder = "" // nobody's: see Holds
	}

	var blobIDs, createdIDs []string
	sizes := map[string]int64{}
	var cDev, cIno []int64
	var cBlob, cMime []string
	var cCreated []bool
	var cDamage []*string
	var fDev, fIno []int64
	var fMsg, fType, fStatus []string
	var fFinal []bool
	var fClaimedBy, fDamage []*string
	var xDev, xIno, rDev, rIno []int64
	var eDev, eIno []int64
	var eAt []time.Time
	var eRetry []int32
	var eChecks, eAction, eExc []string
	for i := range outs {
		o := &outs[i]
		switch o.kind {
		case copied:
			if _, ok := sizes[o.blob]; !ok && !recorded.has(o.blob) {
				blobIDs = append(blobIDs, o.blob)
				sizes[o.blob] = o.n.Size
			}
			cDev, cIno = append(cDev, o.n.Dev), append(cIno, o.n.Ino)
			cBlob, cMime, cCreated = append(cBlob, o.blob), append(cMime, o.mime), append(cCreated, o.created)
			if o.created {
				createdIDs = append(createdIDs, o.blob)
			}
			cDamage = append(cDamage, jsonOrNil(o.damage))
		case failed:
			d := o.dec
			if d.Action == Settled {
				rDev, rIno = append(rDev, o.n.Dev), append(rIno, o.n.Ino)
				continue
			}
			final := d.Action == Skip || d.Action == GiveUp
			status := "pending"
			var claimedBy *string
			switch d.Action {
			case Skip:
				status = "failed_permanent"
				if d.ClaimedBy != "" {
					cb := d.ClaimedBy
					claimedBy = &cb
				}
			case GiveUp:
				status = d.Status
				if status == "" {
					status = "failed_retryable"
				}
			}
			class := d.Class
			if class == "" {
				class = "error"
			}
			msg := fmt.Sprintf("%s %s: %v", o.at.UTC().Format(time.RFC3339), class, o.err)
			etype := d.ErrorType
			if etype == "" {
				etype = "unknown"
			}
			fDev, fIno = append(fDev, o.n.Dev), append(fIno, o.n.Ino)
			fMsg, fType, fStatus = append(fMsg, msg), append(fType, etype), append(fStatus, status)
			fFinal, fClaimedBy = append(fFinal, final), append(fClaimedBy, claimedBy)
			fDamage = append(fDamage, jsonOrNil(d.Damage))
			if d.Event || d.Checkpoint || final {
				checks := string(d.Checks)
				if len(d.Checks) == 0 {
					checks = "[]"
				}
				eDev, eIno, eAt = append(eDev, o.n.Dev), append(eIno, o.n.Ino), append(eAt, o.at)
				eRetry, eChecks = append(eRetry, int32(d.RetryCount)), append(eChecks, checks)
				eAction, eExc = append(eAction, d.Action.String()), append(eExc, fmt.Sprint(o.err))
			}
		case excluded:
			xDev, xIno = append(xDev, o.n.Dev), append(xIno, o.n.Ino)
		case released:
			rDev, rIno = append(rDev, o.n.Dev), append(rIno, o.n.Ino)
		}
	}
	slices.Sort(blobIDs)
	blobSizes := make([]int64, len(blobIDs))
	for i, id := range blobIDs {
		blobSizes[i] = sizes[id]
	}

	b.Queue(commitPlanning)
	if len(cDev) > 0 {
		b.Queue(`SELECT pg_advisory_xact_lock_shared(hashtextextended($1, 0))`, quarantineLock)
	}
	if len(blobIDs) > 0 {
		b.Queue(`INSERT INTO blobs (blobid, size)
			SELECT * FROM unnest($1::text[], $2::bigint[]) ORDER BY 1
			ON CONFLICT (blobid) DO NOTHING`, blobIDs, blobSizes)
	}
	if len(createdIDs) > 0 {
		slices.Sort(createdIDs)
		b.Queue(`UPDATE blobs SET quarantined_at = NULL WHERE blobid = ANY($1) AND quarantined_at IS NOT NULL`, createdIDs)
	}
	var successQ, refusedQ *pgx.QueuedQuery
	if len(cDev) > 0 {
		successQ = b.Queue(successSQL(table), string(h), holder, cDev, cIno, cBlob, cMime, cCreated, cDamage)
		refusedQ = b.Queue(refusedSQL(table), string(h), holder, cDev, cIno, cBlob)
	}
	if len(fDev) > 0 {
		b.Queue(heldUpdate(table, `
				errors = (coalesce(i.errors, '{}') || u.msg)[greatest(1, cardinality(coalesce(i.errors, '{}')) + 2 - $11::int):],
				error_count = i.error_count + 1,
				error_type = u.etype,
				copied = u.final,
				status = u.status,
				claimed_by = CASE WHEN u.final THEN u.claimed_by END,
				claimed_at = NULL,
				processed_at = CASE WHEN u.final THEN now() ELSE i.processed_at END,
				damage = coalesce(u.damage::jsonb, i.damage)`,
			`unnest($3::bigint[], $4::bigint[], $5::text[], $6::text[], $7::text[], $8::bool[], $9::text[], $10::text[])
				AS u(dev, ino, msg, etype, status, final, claimed_by, damage)`, "", ""),
			string(h), holder, fDev, fIno, fMsg, fType, fStatus, fFinal, fClaimedBy, fDamage, maxInodeErrors)
	}
	if len(xDev) > 0 {
		b.Queue(heldUpdate(table, `copied = true, status = 'success', claimed_by = 'EXCLUDED', claimed_at = NULL, processed_at = now()`,
			keysUnnest, "", ""), string(h), holder, xDev, xIno)
	}
	if len(rDev) > 0 && !held {
		b.Queue(heldUpdate(table, `claimed_by = NULL, claimed_at = NULL`, keysUnnest, "", ""), string(h), holder, rDev, rIno)
	}
	if len(eDev) > 0 {
		b.Queue(`INSERT INTO diagnostic_event (medium_hash, dev, ino, at, worker_id, retry_count, checks, action, exception)
			SELECT $1, u.dev, u.ino, u.at, $2, u.retry, u.checks::jsonb, u.action, u.exc
			FROM unnest($3::bigint[], $4::bigint[], $5::timestamptz[], $6::int[], $7::text[], $8::text[], $9::text[])
				AS u(dev, ino, at, retry, checks, action, exc)`,
			string(h), worker, eDev, eIno, eAt, eRetry, eChecks, eAction, eExc)
	}

	return preparedCommit{b: b, successQ: successQ, refusedQ: refusedQ, nSuccess: int64(len(cDev)), blobIDs: blobIDs, createdIDs: createdIDs}
}

// refusedSQL releases the claims of copied inodes whose blob is
// quarantined ($3, $4: their keys, $5: their blobs), returning those blobs.
// It first asks once whether any blob is quarantined at all (almost never),
// as a scalar subquery in blobid order, which only blobs_quarantined_idx
// answers cheaply. Written as EXISTS, the planner took a sequential scan
// of the whole of blobs, once per batch, whenever blobs had grown since it
// was last analyzed (a store filling up, which is every first copy): 13 ms
// at 200,000 blobs, 2 of the 25 s the deep bench tree took.
func refusedSQL(table string) string {
	return heldUpdate(table, `claimed_by = NULL, claimed_at = NULL`,
		`unnest($3::bigint[], $4::bigint[], $5::text[]) AS u(dev, ino, blobid)`,
		`(SELECT blobid FROM blobs WHERE quarantined_at IS NOT NULL ORDER BY blobid LIMIT 1) IS NOT NULL
			AND EXISTS (SELECT 1 FROM blobs b WHERE b.blobid = u.blobid AND b.quarantined_at IS NOT NULL)`,
		`u.blobid`)
}

// successSQL records copied inodes ($3, $4: their keys; $5 to $8: blob,
// MIME type, whether the blob was new, damage) held by worker $2, except
// those whose blob is quarantined.
func successSQL(table string) string {
	return heldUpdate(table, `copied = true, status = 'success', blobid = u.blobid, mime_type = u.mime,
			processed_at = now(), by_hash_created = u.created, claimed_by = NULL, claimed_at = NULL,
			error_type = NULL, damage = u.damage::jsonb`,
		`unnest($3::bigint[], $4::bigint[], $5::text[], $6::text[], $7::bool[], $8::text[])
			AS u(dev, ino, blobid, mime, created, damage)`,
		`NOT EXISTS (SELECT 1 FROM blobs b WHERE b.blobid = u.blobid AND b.quarantined_at IS NOT NULL)`, "")
}

// keysUnnest is the batch's keys alone ($3, $4), for heldUpdate.
const keysUnnest = `unnest($3::bigint[], $4::bigint[]) AS u(dev, ino)`

// heldUpdate is every statement that settles a worker's claims, and the
// heartbeat's renewal of them: UPDATE table SET set for each row of keys
// (an unnest of the batch's arrays AS u, with at least dev and ino) that
// worker $2 still holds on medium $1 and for which cond (over i, the row,
// and u) holds, returning returning.
//
// A commit must find each row by its primary key, whatever else the
// process holds, and the planner's statistics, taken before the run when
// nothing was claimed, say nothing about claimed_by:
//   - Compared with "=", claimed_by matched the claimed index, which the
//     planner expected to give one row. A worker id is one process, so
//     that index holds every batch of all its workers: each commit read
//     them all (auto_explain on the wide bench tree). On a 300k-row
//     medium with 8 batches held, a throwaway benchmark of commitBatch
//     took 17.7 ms a commit (median), but 1.6 s at p90 and 3.3 s at
//     most: PostgreSQL switched to a generic plan by itself (forced to
//     plan each commit anew, 21 ms median, 32 ms at most).
//   - Compared with IS NOT DISTINCT FROM, which no index answers, it was
//     estimated to match one row, and on media of 30k-75k rows the
//     planner looped over the keys once per row of a sequential scan of
//     the medium: 1.4-2.3 s a commit.
//
// Here claimed_by is compared through coalesce. No index answers that
// (with an empty $2 it would match NULL too, so the claimed index's
// predicate, claimed_by IS NOT NULL, is not implied; worker ids are never
// empty), and an expression without statistics is estimated at 0.5 % of
// the rows, so on a medium of 200 rows or more a sequential scan is not
// mistaken for a one-row input. The commit's transaction also turns
// sequential scans off (commitPlanning): on a 60k-row medium the planner
// still preferred one scan of the whole medium and a hash join (15 ms) to
// 1000 lookups by the primary key (9 ms). A row renewed or stolen while the statement runs is
// rechecked by PostgreSQL at its newest version, as for any UPDATE.
//
// A statement built around the keys instead (the rows locked in a CTE by
// primary-key lookups, then updated by ctid) had no bad plan but cost
// more: 26-28 ms a commit of 1000 in that benchmark, against 15.9 ms
// (median; 18.9 ms p90, 22.7 ms at most) here; and reading by ctid with
// the statement's snapshot missed rows renewed meanwhile.
// TestHeldUpdatesFindRowsByKey checks the plans, custom and generic;
// TestCommitAfterRenewal the renewal.
func heldUpdate(table, set, keys, cond, returning string) string {
	if cond != "" {
		cond = " AND " + cond
	}
	if returning != "" {
		returning = " RETURNING " + returning
	}
	return fmt.Sprintf(`
		UPDATE %[1]s AS i SET %[2]s
		FROM %[3]s
		WHERE i.medium_hash = $1 AND i.dev = u.dev AND i.ino = u.ino
		  AND coalesce(i.claimed_by, '') = $2 AND NOT i.copied%[4]s%[5]s`, table, set, keys, cond, returning)
}

// commitPlanning is the first statement of a commit's transaction: no
// sequential scan, for heldUpdate's sake (the blobs rows and the
// quarantine checks are found by their indexes anyway).
const commitPlanning = `SELECT set_config('enable_seqscan', 'off', true)`

func runCommit(ctx context.Context, db *pgxpool.Pool, h medium.Hash, c preparedCommit, problems []problem, held *hold) (lost int64, refused []string, err error) {
	var updated int64
	if c.successQ != nil {
		c.successQ.Exec(func(tag pgconn.CommandTag) error { updated = tag.RowsAffected(); return nil })
	}
	if c.refusedQ != nil {
		c.refusedQ.Query(func(rows pgx.Rows) error {
			refused = refused[:0]
			for rows.Next() {
				var id string
				if err := rows.Scan(&id); err != nil {
					return err
				}
				refused = append(refused, id)
			}
			return rows.Err()
		})
	}
	// record runs the commit's statements in a transaction open on q.
	record := func(q interface {
		querier
		pipeliner
	}) error {
		if c.b.Len() > 0 {
			if err := q.SendBatch(ctx, c.b).Close(); err != nil {
				return err
			}
		}
		for _, p := range problems {
			if err := schema.MergeProblem(ctx, q, h, p.flag, p.details); err != nil {
				return err
			}
		}
		return nil
	}
	if held != nil {
		err = record(held.conn)
		if err == nil {
			err = commitOpen(ctx, held.conn)
		}
		if err != nil {
			held.rollback()
		} else {
			held.open = false
		}
	} else {
		err = pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error { return record(tx) })
	}
	if err != nil {
		return 0, nil, fmt.Errorf("medium %s: recording batch: %w", h, err)
	}
	return c.nSuccess - updated - int64(len(refused)), refused, nil
}

// transient reports whether a failed commit is worth another try at once:
// deadlocks, serialization failures, lock timeouts. A lost connection is
// retried by the caller, for as long as an outage is waited out.
func transient(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code {
		case "40001", "40P01", "55P03":
			return true
		}
	}
	return false
}

func jsonOrNil(j json.RawMessage) *string {
	if len(j) == 0 || string(j) == "null" {
		return nil
	}
	s := string(j)
	return &s
}

// blobSet remembers the blob ids whose blobs rows this run has committed,
// so that a medium full of duplicates does not insert the same row at
// every batch (a conflict costs the database an index probe and the row's
// checks). Nothing deletes blobs rows, so a remembered row stays there.
// It forgets everything when full: an id then costs one more insert.
//
// It also holds the suspect ids: blobs a commit found quarantined, which
// this run writes again instead of deduping against, until a batch that
// wrote one commits.
type blobSet struct {
	mu      sync.Mutex
	ids     map[string]struct{}
	suspect map[string]struct{}
}

// refuse forgets ids and makes them suspect.
func (s *blobSet) refuse(ids []string) {
	if s == nil || len(ids) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.suspect == nil {
		s.suspect = map[string]struct{}{}
	}
	for _, id := range ids {
		delete(s.ids, id)
		s.suspect[id] = struct{}{}
	}
}

// trust ends the suspicion of ids (written by this run, and recorded).
func (s *blobSet) trust(ids []string) {
	if s == nil || len(ids) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range ids {
		delete(s.suspect, id)
	}
}

// suspected reports whether id is suspect.
func (s *blobSet) suspected(id string) bool {
	if s == nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.suspect[id]
	return ok
}

const blobSetMax = 1 << 18 // ids (about 25 MiB)

func (s *blobSet) has(id string) bool {
	if s == nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.ids[id]
	return ok
}

func (s *blobSet) add(ids []string) {
	if s == nil || len(ids) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ids == nil || len(s.ids)+len(ids) > blobSetMax {
		s.ids = make(map[string]struct{}, len(ids))
	}
	for _, id := range ids {
		s.ids[id] = struct{}{}
	}
}
