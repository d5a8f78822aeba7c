package counter

import (
	"context"
	"database/sql"

	"github.com/tagcount/tagcount/migrations"
)

// The tags table's side of wrangling: which tag is a synonym of which. The
// poster's posting transaction and wrangling job call these inside their
// transactions (q).

// Canonicals returns, for each of ids that exists, the tag it files works
// under: its canonical tag if it is a synonym, else itself. It reads the
// rows with a shared lock, in one statement: a synonym switch (SetSynonymOf
// under LockTags) waits for every transaction that read the old mapping,
// and every later one waits for the switch and reads the new one, so a
// wrangling job started by the switch sees every work filed the old way.
// It returns the database's error (a lock conflict may be retried).
func Canonicals(ctx context.Context, q migrations.Querier, ids []int64) (map[int64]int64, error) {
	if len(ids) == 0 {
		return map[int64]int64{}, nil
	}
	return migrations.SumsByID(ctx, q, migrations.IDList("SELECT id, COALESCE(synonym_of, id) FROM tags WHERE id IN (",
		ids, ") LOCK IN SHARE MODE"))
}

// TagRow is a tag's identity and place in wrangling.
type TagRow struct {
	ID        int64
	Type      string
	Name      string
	Key       string // tags.name_key
	SynonymOf int64  // 0 for a canonical tag
}

// LockTags locks the rows of ids for update in q, in ascending id order
// (so two switches lock in one order), and returns those that exist, or
// the database's error.
func LockTags(ctx context.Context, q migrations.Querier, ids []int64) (map[int64]TagRow, error) {
	list, err := migrations.Collect(ctx, q, scanTagRow, migrations.IDList(tagRowSelect+" WHERE id IN (", ids, ") ORDER BY id FOR UPDATE"))
	out := make(map[int64]TagRow, len(list))
	for _, t := range list {
		out[t.ID] = t
	}
	return out, err
}

// HasSynonyms reports whether some tag is a synonym of id, locking the
// index range it reads in q so that no tag becomes one before q commits.
// It returns the database's error.
func HasSynonyms(ctx context.Context, q migrations.Querier, id int64) (bool, error) {
	return migrations.Exists(ctx, q, "SELECT 1 FROM tags WHERE synonym_of = ? LIMIT 1 FOR UPDATE", id)
}

// SetSynonymOf makes tag id a synonym of canonical in q, or canonical
// again when canonical is 0. The caller holds the row's lock (LockTags).
// It returns the database's error.
func SetSynonymOf(ctx context.Context, q migrations.Querier, id, canonical int64) error {
	var target any
	if canonical != 0 {
		target = canonical
	}
	_, err := q.ExecContext(ctx, "UPDATE tags SET synonym_of = ? WHERE id = ?", target, id)
	return err
}

// ListTags returns up to limit tags with ids greater than after, in id
// order, or the database's error.
func ListTags(ctx context.Context, q migrations.Querier, after int64, limit int) ([]TagRow, error) {
	return migrations.Collect(ctx, q, scanTagRow, tagRowSelect+" WHERE id > ? ORDER BY id LIMIT ?", after, limit)
}

// TagByKey returns the tag of type typ whose key is key, and whether
// there is one, or the database's error.
func TagByKey(ctx context.Context, q migrations.Querier, typ, key string) (TagRow, bool, error) {
	list, err := migrations.Collect(ctx, q, scanTagRow, tagRowSelect+" WHERE type = ? AND name_key = ?", typ, key)
	if err != nil || len(list) == 0 {
		return TagRow{}, false, err
	}
	return list[0], true, nil
}

// SetNameKey gives tag id the key key in q. It returns the database's
// error when another tag of its type holds that key.
func SetNameKey(ctx context.Context, q migrations.Querier, id int64, key string) error {
	_, err := q.ExecContext(ctx, "UPDATE tags SET name_key = ? WHERE id = ?", key, id)
	return err
}

// tagRowSelect selects the columns scanTagRow reads.
const tagRowSelect = "SELECT id, type, name, name_key, COALESCE(synonym_of, 0) FROM tags"

func scanTagRow(rows *sql.Rows) (t TagRow, err error) {
	err = rows.Scan(&t.ID, &t.Type, &t.Name, &t.Key, &t.SynonymOf)
	return t, err
}
