package tags

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/tagcount/tagcount/migrations"
)

// The tags table's side of wrangling: which tag is a synonym of which. The
// poster's posting transaction and wrangling job call these inside their
// transactions (q).

// Canonicals returns, for each of ids that exists, the tag it files works
// under: its canonical tag if it is a synonym, else itself. It reads the
// rows with a shared lock, in one statement: a synonym switch (SetSynonymOf
// under Lock) waits for every transaction that read the old mapping,
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

// Row is a tag's identity and place in wrangling.
type Row struct {
	ID        int64
	Type      string
	Name      string
	Key       string // tags.name_key
	SynonymOf int64  // 0 for a canonical tag
}

// Lock locks the rows of ids for update in q, in ascending id order
// (so two switches lock in one order), and returns those that exist, or
// the database's error.
func Lock(ctx context.Context, q migrations.Querier, ids []int64) (map[int64]Row, error) {
	list, err := migrations.Collect(ctx, q, scanRow, migrations.IDList(rowSelect+" WHERE id IN (", ids, ") ORDER BY id FOR UPDATE"))
	out := make(map[int64]Row, len(list))
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
// again when canonical is 0. The caller holds the row's lock (Lock).
// It returns the database's error.
func SetSynonymOf(ctx context.Context, q migrations.Querier, id, canonical int64) error {
	var target any
	if canonical != 0 {
		target = canonical
	}
	_, err := q.ExecContext(ctx, "UPDATE tags SET synonym_of = ? WHERE id = ?", target, id)
	return err
}

// List returns up to limit tags with ids greater than after, in id
// order, or the database's error.
func List(ctx context.Context, q migrations.Querier, after int64, limit int) ([]Row, error) {
	return migrations.Collect(ctx, q, scanRow, rowSelect+" WHERE id > ? ORDER BY id LIMIT ?", after, limit)
}

// ByKey returns the tag of type typ whose key is key, and whether
// there is one, or the database's error.
func ByKey(ctx context.Context, q migrations.Querier, typ, key string) (Row, bool, error) {
	list, err := migrations.Collect(ctx, q, scanRow, rowSelect+" WHERE type = ? AND name_key = ?", typ, key)
	if err != nil || len(list) == 0 {
		return Row{}, false, err
	}
	return list[0], true, nil
}

// SetNameKey gives tag id the key key in q. It returns the database's
// error when another tag of its type holds that key.
func SetNameKey(ctx context.Context, q migrations.Querier, id int64, key string) error {
	_, err := q.ExecContext(ctx, "UPDATE tags SET name_key = ? WHERE id = ?", key, id)
	return err
}

// rowSelect selects the columns scanRow reads.
const rowSelect = "SELECT id, type, name, name_key, COALESCE(synonym_of, 0) FROM tags"

func scanRow(rows *sql.Rows) (t Row, err error) {
	err = rows.Scan(&t.ID, &t.Type, &t.Name, &t.Key, &t.SynonymOf)
	return t, err
}

// IDs returns up to limit ids of tags (of type typ, unless empty)
// greater than after, ascending.
func IDs(ctx context.Context, q migrations.Querier, typ string, after int64, limit int) ([]int64, error) {
	ids, err := migrations.Collect(ctx, q, migrations.ScanInt64, "SELECT id FROM tags WHERE id > ? AND (? = '' OR type = ?) ORDER BY id LIMIT ?",
		after, typ, typ, limit)
	if err != nil {
		return nil, fmt.Errorf("tag ids: %w", err)
	}
	return ids, nil
}

// Exists reports whether tag id exists.
func Exists(ctx context.Context, q migrations.Querier, id int64) (bool, error) {
	return migrations.Exists(ctx, q, "SELECT 1 FROM tags WHERE id = ?", id)
}

// Count returns the number of tags (of type typ, unless empty).
func Count(ctx context.Context, q migrations.Querier, typ string) (int64, error) {
	var n int64
	err := q.QueryRowContext(ctx, "SELECT COUNT(*) FROM tags WHERE ? = '' OR type = ?", typ, typ).Scan(&n)
	return n, err
}
