package poster

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/tagcount/tagcount/counter/tags"
	"github.com/tagcount/tagcount/migrations"
)

// Errors of tag wrangling. The HTTP layer maps each to a status.
var (
	// ErrTagNotFound: the tag to make a synonym (or undo) does not exist.
	ErrTagNotFound = errors.New("tag not found")
	// ErrCanonicalNotFound: the canonical tag named does not exist.
	ErrCanonicalNotFound = errors.New("no tag has that id")
	// ErrSynonymTypeMismatch: a tag can only be a synonym of a tag of its
	// own type.
	ErrSynonymTypeMismatch = errors.New("a tag can only be a synonym of a tag of the same type")
	// ErrSynonymOfItself: a tag named as its own canonical tag.
	ErrSynonymOfItself = errors.New("a tag cannot be a synonym of itself")
	// ErrNotCanonical: the canonical tag named is itself a synonym
	// (synonyms do not chain).
	ErrNotCanonical = errors.New("the tag named is itself a synonym; synonyms do not chain")
	// ErrHasSynonyms: the tag has synonyms of its own, so it cannot become
	// one (synonyms do not chain).
	ErrHasSynonyms = errors.New("the tag has synonyms of its own; synonyms do not chain")
	// ErrNotSynonym: undoing a synonym of a tag that is not one.
	ErrNotSynonym = errors.New("the tag is not a synonym")
	// ErrJobNotFound: no wrangling job has that id.
	ErrJobNotFound = errors.New("wrangling job not found")
)

// States of a wrangling job, as stored in wrangling_jobs.state.
const (
	JobRunning    = "running"
	JobDone       = "done"
	JobSuperseded = "superseded" // a later switch of the same tag took over
)

// Job is a wrangling job: it re-files every work tagged with TagID under
// the canonical tag the tag now maps to (SynonymOf, or the tag itself when
// 0: an undo), moving the filter numbers through the outbox.
type Job struct {
	ID        int64
	TagID     int64
	SynonymOf int64
	// CanonicalID is the canonical tag whose filter the works enter (a
	// synonym made: SynonymOf) or leave (an undo: the tag's former
	// canonical).
	CanonicalID   int64
	State         string
	WorksExamined int64
	// FilterChanges is how many times a work entered or left a tag's
	// filter (work_filters rows written).
	FilterChanges int64
	RowsWritten   int64
	// MaxRowsPerTx is the most rows one of its transactions wrote.
	MaxRowsPerTx int
	CreatedAt    time.Time
	FinishedAt   time.Time // zero while running
}

// MakeSynonym makes tag tagID a synonym of canonicalID (or points it at
// another canonical tag) and starts the job that re-files its works; it
// returns the job as created. It returns ErrTagNotFound,
// ErrCanonicalNotFound, ErrSynonymOfItself, ErrSynonymTypeMismatch,
// ErrNotCanonical or ErrHasSynonyms (wrapped, saying which tag breaks the
// rule) when the switch is refused, and a database error otherwise.
func (p *Poster) MakeSynonym(ctx context.Context, tagID, canonicalID int64) (Job, error) {
	if tagID == canonicalID {
		return Job{}, ErrSynonymOfItself
	}
	return p.switchSynonym(ctx, tagID, canonicalID)
}

// Unsynonym makes synonym tagID canonical again and starts the job that
// re-files its works under it; it returns the job as created. It returns
// ErrTagNotFound or ErrNotSynonym when refused, and a database error
// otherwise.
func (p *Poster) Unsynonym(ctx context.Context, tagID int64) (Job, error) {
	return p.switchSynonym(ctx, tagID, 0)
}

// switchSynonym maps tagID to canonicalID (0: to itself) in one short
// transaction that also supersedes the tag's running jobs and records the
// new one. It takes the jobs' rows before the tags' (a running batch holds
// its job's row and may wait for a shared lock on the tag), and the tags'
// rows for update, which waits until every posting transaction that read
// the old mapping has committed; from then on postings read the new one.
func (p *Poster) switchSynonym(ctx context.Context, tagID, canonicalID int64) (Job, error) {
	tx, err := p.cfg.DB.BeginTx(ctx, nil)
	if err != nil {
		return Job{}, err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `UPDATE wrangling_jobs SET state = 'superseded', finished_at = NOW(6)
		WHERE tag_id = ? AND state = 'running'`, tagID); err != nil {
		return Job{}, err
	}
	ids := []int64{tagID}
	if canonicalID != 0 {
		ids = append(ids, canonicalID)
	}
	slices.Sort(ids)
	rows, err := tags.Lock(ctx, tx, ids)
	if err != nil {
		return Job{}, err
	}
	if err := refuseSwitch(ctx, tx, rows, tagID, canonicalID); err != nil {
		return Job{}, err
	}
	if err := tags.SetSynonymOf(ctx, tx, tagID, canonicalID); err != nil {
		return Job{}, err
	}
	filter := canonicalID
	if filter == 0 {
		filter = rows[tagID].SynonymOf // an undo: the filter the works leave
	}
	res, err := tx.ExecContext(ctx, "INSERT INTO wrangling_jobs (tag_id, synonym_of, canonical_id) VALUES (?, ?, ?)",
		tagID, nullID(canonicalID), filter)
	if err != nil {
		return Job{}, err
	}
	id, err := res.LastInsertId()
	if err != nil {
		return Job{}, err
	}
	if err := migrations.Commit(ctx, tx); err != nil {
		return Job{}, err
	}
	p.wakeWrangler()
	return p.WranglingJob(ctx, id)
}

// refuseSwitch returns why mapping tagID to canonicalID (0: undo) is
// refused, or nil. rows are the locked rows.
func refuseSwitch(ctx context.Context, q *sql.Tx, rows map[int64]tags.Row, tagID, canonicalID int64) error {
	tag, ok := rows[tagID]
	if !ok {
		return fmt.Errorf("%w: tag %d", ErrTagNotFound, tagID)
	}
	if canonicalID == 0 {
		if tag.SynonymOf == 0 {
			return fmt.Errorf("%w: tag %d is canonical", ErrNotSynonym, tagID)
		}
		return nil
	}
	canonical, ok := rows[canonicalID]
	switch {
	case !ok:
		return fmt.Errorf("%w: %d", ErrCanonicalNotFound, canonicalID)
	case canonical.Type != tag.Type:
		return fmt.Errorf("%w: tag %d is a %s, tag %d a %s", ErrSynonymTypeMismatch, tagID, tag.Type, canonicalID, canonical.Type)
	case canonical.SynonymOf != 0:
		return fmt.Errorf("%w: tag %d is a synonym of tag %d", ErrNotCanonical, canonicalID, canonical.SynonymOf)
	}
	has, err := tags.HasSynonyms(ctx, q, tagID)
	if err != nil {
		return err
	}
	if has {
		return fmt.Errorf("%w: make them synonyms of tag %d first", ErrHasSynonyms, canonicalID)
	}
	return nil
}

// WranglingJob returns job id and its progress, or ErrJobNotFound.
func (p *Poster) WranglingJob(ctx context.Context, id int64) (Job, error) {
	var j Job
	var synonymOf sql.NullInt64
	var finished sql.NullTime
	err := p.cfg.DB.QueryRowContext(ctx, `SELECT id, tag_id, synonym_of, canonical_id, state, works_examined, filter_changes,
		rows_written, max_rows_tx, created_at, finished_at FROM wrangling_jobs WHERE id = ?`, id).Scan(&j.ID, &j.TagID, &synonymOf,
		&j.CanonicalID, &j.State, &j.WorksExamined, &j.FilterChanges, &j.RowsWritten, &j.MaxRowsPerTx, &j.CreatedAt, &finished)
	if errors.Is(err, sql.ErrNoRows) {
		return Job{}, ErrJobNotFound
	}
	j.SynonymOf, j.FinishedAt = synonymOf.Int64, finished.Time
	return j, err
}

func nullID(id int64) any {
	if id == 0 {
		return nil
	}
	return id
}
