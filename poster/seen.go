package poster

import (
	"context"
	"database/sql"

	"github.com/tagcount/tagcount/migrations"
)

// TagsSeenBy returns which of tagIDs a posted work that authorID can see
// uses: an unhidden work (every logged-in reader sees it), or one of
// authorID's own (a hidden work stays its author's). It reads taggings by
// their tag index with a primary-key probe of works each; the count reader
// asks only about tags whose numbers are 0, which few posted works use
// (counter.Reader.SeenBy). It returns the database's error.
func (p *Poster) TagsSeenBy(ctx context.Context, authorID int64, tagIDs []int64) (map[int64]bool, error) {
	if len(tagIDs) == 0 {
		return map[int64]bool{}, nil
	}
	return migrations.CollectMap(ctx, p.cfg.DB, func(rows *sql.Rows) (id int64, seen bool, err error) {
		err = rows.Scan(&id)
		return id, true, err
	}, migrations.IDList(`SELECT DISTINCT tg.tag_id FROM taggings tg STRAIGHT_JOIN works w ON w.id = tg.work_id
		WHERE (NOT w.hidden OR w.author_id = ?) AND tg.tag_id IN (`, tagIDs, ")"), authorID)
}
