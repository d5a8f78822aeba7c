package counter

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/tagcount/tagcount/migrations"
)

// ApplyResult reports what one apply transaction did.
type ApplyResult struct {
	// Requested is the number of distinct event ids asked for.
	Requested int
	// Applied is the number of outbox rows found, added and deleted. Ids
	// not found (already applied, or never committed) contribute nothing.
	Applied int
	// Deltas holds, for every tag_counts row written, the delta added.
	// Tags whose found deltas sum to zero are not written.
	Deltas map[int64]int64
	// Counts holds, for tag_counts rows written, the count after the
	// transaction. ApplyBatch reports every written tag; a writer asks only
	// for tags whose count it does not know yet.
	Counts map[int64]int64
	// Attempts is the number of transactions tried (1 without a deadlock or
	// lock-wait retry).
	Attempts int
}

// applyChunk is the largest IN list of one statement of an apply
// transaction; larger batches run several statements in one transaction.
const applyChunk = 5000

// applyMaxAttempts bounds the deadlock / lock-wait retries of one apply.
const applyMaxAttempts = 20

// applyOpts tunes an apply; the zero value is what ApplyBatch does.
type applyOpts struct {
	// readCount, if set, says which written tags' counts to read back;
	// nil reads all.
	readCount func(tag int64) bool
	// portable forces SELECT ... FOR UPDATE + DELETE even on MariaDB.
	portable bool
}

// ApplyBatch applies the outbox rows with the given ids in one transaction
// at READ COMMITTED: it locks and deletes the rows that still exist (by
// primary key), adds their summed deltas per tag to tag_counts in one
// multi-row upsert in ascending tag order, and commits. Duplicate and
// missing ids are harmless. On MySQL the rows are read with SELECT ... FOR
// UPDATE and then deleted; on MariaDB one DELETE ... RETURNING does both
// (measured about a third faster; same locks, same result).
//
// A deadlock or lock-wait timeout rolls the transaction back and retries
// it. The returned error is the last failure after the retries, or any
// other database error, or ctx's; then nothing was applied (unless the
// connection broke during COMMIT, when the outcome is unknown — applying
// the same ids again is always safe).
func ApplyBatch(ctx context.Context, db *migrations.DB, ids []int64) (ApplyResult, error) {
	return applyBatch(ctx, db, ids, applyOpts{})
}

func applyBatch(ctx context.Context, db *migrations.DB, ids []int64, o applyOpts) (ApplyResult, error) {
	ids = slices.Clone(ids)
	slices.Sort(ids)
	ids = slices.Compact(ids)
	var res ApplyResult
	res.Requested = len(ids)
	if len(ids) == 0 {
		return res, nil
	}
	returning := !o.portable && db.MariaDB
	for {
		res.Attempts++
		r, err := applyOnce(ctx, db, ids, returning, o.readCount)
		if err == nil {
			r.Requested, r.Attempts = res.Requested, res.Attempts
			return r, nil
		}
		if !migrations.IsLockConflict(err) || res.Attempts >= applyMaxAttempts || ctx.Err() != nil {
			return res, fmt.Errorf("counter: apply %d events: %w", len(ids), err)
		}
		backoff := time.Duration(1+rand.IntN(10*res.Attempts)) * time.Millisecond
		if err := Sleep(ctx, backoff); err != nil {
			return res, fmt.Errorf("counter: apply %d events: %w", len(ids), err)
		}
	}
}

// applyOnce runs one apply transaction for sorted, distinct ids.
func applyOnce(ctx context.Context, db *migrations.DB, ids []int64, returning bool, readCount func(int64) bool) (res ApplyResult, err error) {
	tx, err := db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	if err != nil {
		return res, err
	}
	defer func() {
		if err != nil {
			tx.Rollback()
		}
	}()
	sums := make(map[int64]int64)
	found := make([]int64, 0, min(len(ids), applyChunk))
	for start := 0; start < len(ids); start += applyChunk {
		chunk := ids[start:min(start+applyChunk, len(ids))]
		var q string
		if returning {
			q = migrations.IDList("DELETE FROM tag_events WHERE id IN (", chunk, ") RETURNING id, tag_id, delta")
		} else {
			q = migrations.IDList("SELECT id, tag_id, delta FROM tag_events WHERE id IN (", chunk, ") FOR UPDATE")
		}
		rows, err := tx.QueryContext(ctx, q)
		if err != nil {
			return res, err
		}
		if found, err = scanEvents(rows, found[:0], sums); err != nil {
			return res, err
		}
		res.Applied += len(found)
		if returning || len(found) == 0 {
			continue
		}
		if _, err := tx.ExecContext(ctx, migrations.IDList("DELETE FROM tag_events WHERE id IN (", found, ")")); err != nil {
			return res, err
		}
	}
	tags := make([]int64, 0, len(sums))
	for tag, d := range sums {
		if d != 0 {
			tags = append(tags, tag)
		}
	}
	slices.Sort(tags)
	if len(tags) > 0 {
		if err := upsertCounts(ctx, tx, tags, sums); err != nil {
			return res, err
		}
		res.Deltas = make(map[int64]int64, len(tags))
		for _, tag := range tags {
			res.Deltas[tag] = sums[tag]
		}
		read := tags
		if readCount != nil {
			read = make([]int64, 0, len(tags))
			for _, tag := range tags {
				if readCount(tag) {
					read = append(read, tag)
				}
			}
		}
		if len(read) > 0 {
			// The rows are locked by the upsert, so this reads the counts
			// this transaction commits; the writer tiers tags by them.
			rows, err := tx.QueryContext(ctx, migrations.IDList("SELECT tag_id, count FROM tag_counts WHERE tag_id IN (", read, ")"))
			if err != nil {
				return res, err
			}
			res.Counts = make(map[int64]int64, len(read))
			if err := scanCounts(rows, res.Counts); err != nil {
				return res, err
			}
		}
	}
	if err := tx.Commit(); err != nil {
		return res, err
	}
	return res, nil
}

// scanEvents reads (id, tag_id, delta) rows, appending ids to found and
// adding deltas to sums, and closes rows.
func scanEvents(rows *sql.Rows, found []int64, sums map[int64]int64) ([]int64, error) {
	defer rows.Close()
	for rows.Next() {
		var id, tag, delta int64
		if err := rows.Scan(&id, &tag, &delta); err != nil {
			return found, err
		}
		found = append(found, id)
		sums[tag] += delta
	}
	return found, rows.Err()
}

// scanCounts reads (tag_id, count) rows into counts and closes rows.
func scanCounts(rows *sql.Rows, counts map[int64]int64) error {
	defer rows.Close()
	for rows.Next() {
		var tag, count int64
		if err := rows.Scan(&tag, &count); err != nil {
			return err
		}
		counts[tag] = count
	}
	return rows.Err()
}
