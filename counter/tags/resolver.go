package tags

import (
	"context"
	"database/sql"
	"fmt"
	"sort"
	"sync"

	"github.com/tagcount/tagcount/migrations"
)

// Resolver maps tag references to tag ids, creating the tags it has not
// seen; it owns the tags table's writes. Tag rows are never deleted and their
// identity never changes, so a resolved id is cached for the life of the
// process. Creation runs in its own autocommit statement, outside any posting
// transaction, so no posting transaction holds a lock on a tags row or index
// gap.
type Resolver struct {
	db    *migrations.DB
	mu    sync.RWMutex
	cache map[tagKey]int64
}

type tagKey struct{ typ, key string }

// maxCachedTags bounds the cache; past it the cache starts over.
const maxCachedTags = 1 << 20

// NewResolver returns a Resolver on db.
func NewResolver(db *migrations.DB) *Resolver {
	return &Resolver{db: db, cache: make(map[tagKey]int64)}
}

// Resolve returns the ids of refs, in order, creating missing tags. It
// returns a database error when a lookup or the creation fails.
func (r *Resolver) Resolve(ctx context.Context, refs []Ref) ([]int64, error) {
	ids, missing, found, err := r.find(ctx, refs)
	if err != nil || len(missing) == 0 {
		return ids, err
	}
	var create []int
	for _, i := range missing {
		if _, ok := found[tagKey{refs[i].Type, refs[i].Key}]; !ok {
			create = append(create, i)
		}
	}
	if len(create) > 0 {
		// In index order, so concurrent creators of overlapping new tags
		// take their index locks in one order.
		sort.Slice(create, func(a, b int) bool {
			ra, rb := refs[create[a]], refs[create[b]]
			return ra.Type < rb.Type || (ra.Type == rb.Type && ra.Key < rb.Key)
		})
		args := make([]any, 0, 3*len(create))
		for _, i := range create {
			args = append(args, refs[i].Type, refs[i].Name, refs[i].Key)
		}
		q := "INSERT IGNORE INTO tags (type, name, name_key) VALUES " + migrations.Placeholders("(?,?,?)", ",", len(create))
		// The statement commits alone and inserting a tag twice is harmless,
		// so a deadlock between two creators is simply tried again.
		var err error
		for attempt := 0; attempt < 5; attempt++ {
			if _, err = r.db.ExecContext(ctx, q, args...); !migrations.IsLockConflict(err) {
				break
			}
		}
		if err != nil {
			return nil, fmt.Errorf("create tags: %w", err)
		}
		more, err := r.lookup(ctx, refs, create)
		if err != nil {
			return nil, err
		}
		for k, v := range more {
			found[k] = v
		}
		r.remember(more)
	}
	for _, i := range missing {
		id, ok := found[tagKey{refs[i].Type, refs[i].Key}]
		if !ok {
			return nil, fmt.Errorf("tag %s %q was not created", refs[i].Type, refs[i].Name)
		}
		ids[i] = id
	}
	return ids, nil
}

func (r *Resolver) lookup(ctx context.Context, refs []Ref, which []int) (map[tagKey]int64, error) {
	args := make([]any, 0, 2*len(which))
	for _, i := range which {
		args = append(args, refs[i].Type, refs[i].Key)
	}
	out, err := migrations.CollectMap(ctx, r.db, func(rows *sql.Rows) (k tagKey, id int64, err error) {
		err = rows.Scan(&id, &k.typ, &k.key)
		return k, id, err
	}, "SELECT id, type, name_key FROM tags WHERE "+migrations.Placeholders("(type = ? AND name_key = ?)", " OR ", len(which)), args...)
	if err != nil {
		return nil, fmt.Errorf("look up tags: %w", err)
	}
	return out, nil
}

// Existing reports, for each of refs in order, whether the tag exists: a
// read-only look-up (it creates nothing) through the same cache as
// Resolve, so tags seen once cost no query again. It returns a database
// error when the look-up fails.
func (r *Resolver) Existing(ctx context.Context, refs []Ref) ([]bool, error) {
	ids, _, _, err := r.find(ctx, refs)
	if err != nil {
		return nil, err
	}
	out := make([]bool, len(refs))
	for i, id := range ids {
		out[i] = id != 0
	}
	return out, nil
}

// find returns the ids of the refs that exist (0 for the others), which
// refs the cache did not know (by index), and what the database had of
// those, remembered in the cache. It returns a database error when the
// look-up fails.
func (r *Resolver) find(ctx context.Context, refs []Ref) (ids []int64, missing []int, found map[tagKey]int64, err error) {
	ids = make([]int64, len(refs))
	r.mu.RLock()
	for i, t := range refs {
		if id, ok := r.cache[tagKey{t.Type, t.Key}]; ok {
			ids[i] = id
		} else {
			missing = append(missing, i)
		}
	}
	r.mu.RUnlock()
	if len(missing) == 0 {
		return ids, nil, nil, nil
	}
	if found, err = r.lookup(ctx, refs, missing); err != nil {
		return nil, nil, nil, err
	}
	r.remember(found)
	for _, i := range missing {
		ids[i] = found[tagKey{refs[i].Type, refs[i].Key}]
	}
	return ids, missing, found, nil
}

// remember adds found to the cache, starting it over past its bound.
func (r *Resolver) remember(found map[tagKey]int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.cache) > maxCachedTags {
		r.cache = make(map[tagKey]int64)
	}
	for k, v := range found {
		r.cache[k] = v
	}
}
