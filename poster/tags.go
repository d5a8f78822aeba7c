package poster

import (
	"context"
	"database/sql"
	"fmt"
	"sort"
	"sync"

	"github.com/tagcount/tagcount/drafts"
	"github.com/tagcount/tagcount/drafts/api"
)

// tagResolver maps (type, name) to tag ids, creating tags it has not seen.
// Tag rows are never updated or deleted, so a resolved id is cached for the
// life of the process. Creation runs in its own autocommit statement, outside
// any posting transaction, so no posting transaction holds a lock on a tags
// row or index gap.
type tagResolver struct {
	db    *sql.DB
	mu    sync.RWMutex
	cache map[tagKey]int64
}

type tagKey struct{ typ, key string }

// maxCachedTags bounds the cache; past it the cache starts over.
const maxCachedTags = 1 << 20

func newTagResolver(db *sql.DB) *tagResolver {
	return &tagResolver{db: db, cache: make(map[tagKey]int64)}
}

// resolve returns the ids of refs, in order.
func (r *tagResolver) resolve(ctx context.Context, refs []drafts.TagRef) ([]int64, error) {
	ids := make([]int64, len(refs))
	var missing []int
	r.mu.RLock()
	for i, t := range refs {
		if id, ok := r.cache[tagKey{t.Type, t.Key()}]; ok {
			ids[i] = id
		} else {
			missing = append(missing, i)
		}
	}
	r.mu.RUnlock()
	if len(missing) == 0 {
		return ids, nil
	}
	found, err := r.lookup(ctx, refs, missing)
	if err != nil {
		return nil, err
	}
	var create []int
	for _, i := range missing {
		if _, ok := found[tagKey{refs[i].Type, refs[i].Key()}]; !ok {
			create = append(create, i)
		}
	}
	if len(create) > 0 {
		// In index order, so concurrent creators of overlapping new tags
		// take their index locks in one order.
		sort.Slice(create, func(a, b int) bool {
			ra, rb := refs[create[a]], refs[create[b]]
			return ra.Type < rb.Type || (ra.Type == rb.Type && ra.Key() < rb.Key())
		})
		args := make([]any, 0, 3*len(create))
		for _, i := range create {
			args = append(args, refs[i].Type, refs[i].Name, refs[i].Key())
		}
		q := "INSERT IGNORE INTO tags (type, name, name_key) VALUES " + repeatJoin("(?,?,?)", ",", len(create))
		// The statement commits alone and inserting a tag twice is harmless,
		// so a deadlock between two creators is simply tried again.
		var err error
		for attempt := 0; attempt < 5; attempt++ {
			if _, err = r.db.ExecContext(ctx, q, args...); !api.IsLockConflict(err) {
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
	}
	r.mu.Lock()
	if len(r.cache) > maxCachedTags {
		r.cache = make(map[tagKey]int64)
	}
	for k, v := range found {
		r.cache[k] = v
	}
	r.mu.Unlock()
	for _, i := range missing {
		id, ok := found[tagKey{refs[i].Type, refs[i].Key()}]
		if !ok {
			return nil, fmt.Errorf("tag %s %q was not created", refs[i].Type, refs[i].Name)
		}
		ids[i] = id
	}
	return ids, nil
}

func (r *tagResolver) lookup(ctx context.Context, refs []drafts.TagRef, which []int) (map[tagKey]int64, error) {
	args := make([]any, 0, 2*len(which))
	for _, i := range which {
		args = append(args, refs[i].Type, refs[i].Key())
	}
	rows, err := r.db.QueryContext(ctx, "SELECT id, type, name_key FROM tags WHERE "+repeatJoin("(type = ? AND name_key = ?)", " OR ", len(which)), args...)
	if err != nil {
		return nil, fmt.Errorf("look up tags: %w", err)
	}
	defer rows.Close()
	out := make(map[tagKey]int64, len(which))
	for rows.Next() {
		var id int64
		var k tagKey
		if err := rows.Scan(&id, &k.typ, &k.key); err != nil {
			return nil, err
		}
		out[k] = id
	}
	return out, rows.Err()
}
