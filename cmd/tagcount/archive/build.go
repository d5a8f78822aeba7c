// Package archive builds an archive-shaped database: a million works (by
// default) with the archive's rating and warning shares, Zipf-ranked
// fandoms, relationships, characters and free-form tags, synonyms, drafts,
// and stored counts that have drifted the way the archive's had, with the
// drift written down (archive_drift) so a reconcile's corrections can be
// checked tag for tag.
//
// It writes rows with plain SQL (LOAD DATA LOCAL INFILE), not through the
// poster and the counter: it is a bulk loader of what posting would have
// left behind once every outbox row was applied (works, their drafts,
// taggings, work_filters, tags, tag_counts, an empty outbox), and posting a
// million works one transaction at a time would take hours. The
// conservation identity (docs/design.md, invariant 5) holds for every tag
// but the drifted ones.
package archive

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/tagcount/tagcount/counter"
	"github.com/tagcount/tagcount/counter/tags"
	"github.com/tagcount/tagcount/drafts"
	"github.com/tagcount/tagcount/migrations"
)

// Defaults of Config.
const (
	DefaultWorks      = 1_000_000
	DefaultSeed       = 1
	DefaultChunkWorks = 20_000
	DefaultDraftShare = 0.2
)

// Config is what Build builds. Zero values take the defaults.
type Config struct {
	DB *migrations.DB
	// Works is how many posted works the archive holds; 0 means
	// DefaultWorks.
	Works int
	// Seed makes the build; one seed, one archive. 0 means DefaultSeed.
	Seed uint64
	// Authors is how many authors wrote the works (ids 1..Authors); 0 means
	// one for every 8 works.
	Authors int
	// DraftShare is how many unposted drafts the authors hold per posted
	// work (the archive saw about 19,000 drafts to 95,000 works a month);
	// 0 means DefaultDraftShare, negative none.
	DraftShare float64
	// ChunkWorks is how many works one load transaction writes (the unit a
	// build resumes by); 0 means DefaultChunkWorks.
	ChunkWorks int
	Drift      Drift
	// Progress receives a progress line per chunk; nil: none.
	Progress io.Writer
}

func (c Config) withDefaults() Config {
	c.Works = cmp.Or(c.Works, DefaultWorks)
	c.Seed = cmp.Or(c.Seed, DefaultSeed)
	c.Authors = cmp.Or(c.Authors, max(c.Works/8, 1))
	c.DraftShare = orNone(c.DraftShare, DefaultDraftShare)
	c.ChunkWorks = cmp.Or(c.ChunkWorks, DefaultChunkWorks)
	c.Drift = c.Drift.withDefaults()
	if c.Progress == nil {
		c.Progress = io.Discard
	}
	return c
}

func (c Config) validate() error {
	switch {
	case c.DB == nil:
		return errors.New("archive: no database")
	case c.Works < 1:
		return fmt.Errorf("archive: --works %d < 1", c.Works)
	case c.Authors < 1:
		return fmt.Errorf("archive: authors %d < 1", c.Authors)
	case c.ChunkWorks < 1:
		return fmt.Errorf("archive: chunk of %d works < 1", c.ChunkWorks)
	}
	return nil
}

// params is what makes a build: a resumed build must be asked for the same.
func (c Config) params() string {
	b, _ := json.Marshal(struct {
		Works, Authors, ChunkWorks int
		Seed                       uint64
		DraftShare                 float64
		Drift                      Drift
	}{c.Works, c.Authors, c.ChunkWorks, c.Seed, c.DraftShare, c.Drift})
	return string(b)
}

// Report is what a build wrote.
type Report struct {
	Works, Tags, TagsUsed, Synonyms int64
	Taggings, Filings, Drafts       int64
	TagCountRows                    int64
	Drifted                         map[string]int64 // by kind: small, medium, large
	MissingRows                     int64
	ResumedAt                       int  // works already loaded when this run started
	AlreadyBuilt                    bool // the database held this build: nothing written
	Tables                          []Table
	Took                            time.Duration
}

// Table is one table's size after a build, as information_schema tells it.
type Table struct {
	Name       string
	Rows       int64 // InnoDB's estimate
	DataBytes  int64
	IndexBytes int64
}

// Build fills cfg.DB (migrated, empty, or holding an unfinished build of
// the same configuration, which it resumes) with an archive. Run again on
// a finished build of the same configuration, it writes nothing and
// reports the tables. It returns an error for a bad configuration, a
// database holding other works or another build, or the database's error.
func Build(ctx context.Context, cfg Config) (Report, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return Report{}, err
	}
	start := time.Now()
	b := &builder{cfg: cfg, shape: newShape(cfg.Works), rep: Report{Drifted: map[string]int64{}}}
	done, chunksDone, err := b.begin(ctx)
	if err != nil {
		return Report{}, err
	}
	if done {
		b.rep.AlreadyBuilt = true
	} else if err := b.run(ctx, chunksDone); err != nil {
		return Report{}, err
	}
	b.rep.Took = time.Since(start)
	if b.rep.Tables, err = Tables(ctx, cfg.DB); err != nil {
		return Report{}, err
	}
	return b.rep, nil
}

type builder struct {
	cfg   Config
	shape *shape
	rep   Report
	truth []counter.Sum // by tag id
}

// buildTables are the builder's own: the build's configuration and
// progress, and the drift it injected.
var buildTables = []string{
	`CREATE TABLE IF NOT EXISTS archive_builds (
		id          TINYINT UNSIGNED NOT NULL PRIMARY KEY,
		params      TEXT             NOT NULL,
		chunks_done INT              NOT NULL DEFAULT 0,
		state       ENUM('loading','done') NOT NULL DEFAULT 'loading',
		started_at  DATETIME(6)      NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
		finished_at DATETIME(6)      NULL
	) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4`,
	`CREATE TABLE IF NOT EXISTS archive_drift (
		tag_id              BIGINT UNSIGNED NOT NULL PRIMARY KEY,
		kind                ENUM('small','medium','large') NOT NULL,
		row_missing         TINYINT(1)      NOT NULL,
		drift               BIGINT          NOT NULL,
		public_drift        BIGINT          NOT NULL,
		filter_drift        BIGINT          NOT NULL,
		public_filter_drift BIGINT          NOT NULL
	) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4`,
}

// begin records the build, or finds it: whether it is done, and how many
// chunks it loaded.
func (b *builder) begin(ctx context.Context) (done bool, chunks int, err error) {
	db := b.cfg.DB
	for _, q := range buildTables {
		if _, err := db.ExecContext(ctx, q); err != nil {
			return false, 0, fmt.Errorf("archive: %w", err)
		}
	}
	var params, state string
	err = db.QueryRowContext(ctx, "SELECT params, chunks_done, state FROM archive_builds WHERE id = 1").Scan(&params, &chunks, &state)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		if used, err := migrations.Exists(ctx, db, "SELECT 1 FROM works LIMIT 1"); err != nil || used {
			return false, 0, cmp.Or(err, errors.New("archive: the database holds works another way than a build: use an empty database"))
		}
		_, err = db.ExecContext(ctx, "INSERT INTO archive_builds (id, params) VALUES (1, ?)", b.cfg.params())
		return false, 0, err
	case err != nil:
		return false, 0, fmt.Errorf("archive: %w", err)
	case params != b.cfg.params():
		return false, 0, fmt.Errorf("archive: the database holds another build (%s): use an empty database", params)
	}
	return state == "done", chunks, nil
}

// run loads the tags, the works chunk by chunk from chunksDone, and the
// drifted counts. One goroutine generates the next chunk while the
// current one loads.
func (b *builder) run(ctx context.Context, chunksDone int) error {
	if err := b.loadTags(ctx); err != nil {
		return err
	}
	b.truth = make([]counter.Sum, b.shape.tags+1)
	chunks := (b.cfg.Works + b.cfg.ChunkWorks - 1) / b.cfg.ChunkWorks
	b.rep.ResumedAt = min(chunksDone*b.cfg.ChunkWorks, b.cfg.Works)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	generated := make(chan *chunkRows, 1)
	go func() {
		defer close(generated)
		for c := 0; c < chunks && ctx.Err() == nil; c++ {
			generated <- b.generate(c, c >= chunksDone)
		}
	}()
	start := time.Now()
	for cr := range generated {
		if cr.c < chunksDone {
			continue
		}
		if err := b.write(ctx, cr); err != nil {
			cancel()
			for range generated { // let the generator end
			}
			return err
		}
		done := min((cr.c+1)*b.cfg.ChunkWorks, b.cfg.Works)
		fmt.Fprintf(b.cfg.Progress, "archive: %d/%d works (%.0f%%), %d taggings, %s\n", done, b.cfg.Works,
			100*float64(done)/float64(b.cfg.Works), cr.taggingsSoFar, time.Since(start).Round(time.Second))
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := b.loadCounts(ctx); err != nil {
		return err
	}
	// Fresh statistics, so the optimiser plans on the loaded tables as it
	// would on the archive's.
	for _, t := range loadedTables {
		if _, err := b.cfg.DB.ExecContext(ctx, "ANALYZE TABLE "+t); err != nil {
			return fmt.Errorf("archive: analyze %s: %w", t, err)
		}
	}
	_, err := b.cfg.DB.ExecContext(ctx, "UPDATE archive_builds SET state = 'done', finished_at = NOW(6) WHERE id = 1")
	return err
}

// loadedTables are the service's tables a build writes.
var loadedTables = []string{"tags", "works", "drafts", "taggings", "work_filters", "tag_counts", "tag_events"}

// loadTags writes every tag of the shape (an interrupted build's are
// skipped: tags are the same for one configuration).
func (b *builder) loadTags(ctx context.Context) error {
	s := b.shape
	r := newRows("tags", "id, type, name, name_key, synonym_of")
	flush := func() error {
		err := load(ctx, b.cfg.DB, r, true)
		r = newRows("tags", "id, type, name, name_key, synonym_of")
		return err
	}
	for _, t := range s.fixedTags {
		r.add(t.id, t.typ, t.name, tags.NameKey(t.name), nil)
	}
	b.rep.Tags = int64(len(s.fixedTags))
	for _, v := range s.vocabs() {
		for rank := range v.size {
			name := v.prefix + " " + fmt.Sprint(rank)
			var syn any
			if c := v.synonymOf(rank); c != 0 {
				syn = c
				b.rep.Synonyms++
			}
			r.add(v.id(rank), v.typ, name, tags.NameKey(name), syn)
			b.rep.Tags++
			if r.n == 100_000 {
				if err := flush(); err != nil {
					return err
				}
			}
		}
	}
	return flush()
}

// chunkRows are one chunk's rows, table by table.
type chunkRows struct {
	c             int
	tables        []*rows
	taggingsSoFar int64
}

// generate generates chunk c's works and adds them to the true counts;
// when write, it returns their rows and those of their drafts, taggings and
// filings.
func (b *builder) generate(c int, write bool) *chunkRows {
	first := c * b.cfg.ChunkWorks
	last := min(first+b.cfg.ChunkWorks, b.cfg.Works) // exclusive
	g := newSampler(b.shape, b.cfg.Seed, c)
	works := newRows("works", "id, draft_id, author_id, title, body, visibility, hidden, version")
	drafted := newRows("drafts", "id, author_id, title, body, tags, visibility, state, work_id, version")
	taggings := newRows("taggings", "work_id, tag_id, position")
	filings := newRows("work_filters", "work_id, tag_id")
	for i := first; i < last; i++ {
		w := g.next()
		id := int64(i + 1)
		author := 1 + g.r.Int64N(int64(b.cfg.Authors))
		weight := w.weight()
		filters := b.shape.filters(w.tags)
		for pos, t := range w.tags {
			b.truth[t] = b.truth[t].Add(counter.Sum{Count: weight.Count, Public: weight.Public})
			taggings.add(id, t, pos)
		}
		for _, t := range filters {
			b.truth[t] = b.truth[t].Add(counter.Sum{Filter: weight.Count, PublicFilter: weight.Public})
			filings.add(id, t)
		}
		b.rep.Works++
		b.rep.Taggings += int64(len(w.tags))
		b.rep.Filings += int64(len(filters))
		if !write {
			continue
		}
		title := "Work " + strconv.FormatInt(id, 10)
		body := bodyText[w.bodyAt : w.bodyAt+bodyChars]
		block, _ := json.Marshal(w.block) // strings and lists of strings only
		works.add(id, id, author, title, body, w.visibility(), w.hidden, 1)
		drafted.add(id, author, title, body, string(block), w.visibility(), "posted", id, 1)
	}
	b.rep.Drafts += int64(last - first)
	cr := &chunkRows{c: c, taggingsSoFar: b.rep.Taggings}
	if write {
		b.unpostedDrafts(g, drafted, first, last)
		cr.tables = []*rows{works, drafted, taggings, filings}
	}
	return cr
}

// write loads a chunk's tables at once, each on its own connection, then
// records the chunk done. A chunk interrupted half-way is loaded again
// whole: rows it already wrote are skipped by their keys (IGNORE), so the
// tables hold each row once.
func (b *builder) write(ctx context.Context, cr *chunkRows) error {
	errs := make([]error, len(cr.tables))
	var wg sync.WaitGroup
	for i, r := range cr.tables {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = load(ctx, b.cfg.DB, r, true)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	_, err := b.cfg.DB.ExecContext(ctx, "UPDATE archive_builds SET chunks_done = ? WHERE id = 1", cr.c+1)
	return err
}

// unpostedDrafts adds the drafts the authors of works first..last hold
// unposted (ids after every work's draft), DraftShare of a draft per work.
func (b *builder) unpostedDrafts(g *sampler, r *rows, first, last int) {
	from := b.cfg.Works + int(float64(first)*b.cfg.DraftShare)
	to := b.cfg.Works + int(float64(last)*b.cfg.DraftShare)
	for id := from + 1; id <= to; id++ {
		w := g.next()
		block, _ := json.Marshal(w.block)
		author := 1 + int64(id)%int64(b.cfg.Authors)
		r.add(int64(id), author, fmt.Sprintf("Draft %d", id), bodyText[w.bodyAt:w.bodyAt+bodyChars], string(block),
			drafts.VisibilityPublic, "draft", nil, 1)
	}
	b.rep.Drafts += int64(to - from)
}

// loadCounts writes the stored counts, drifted, and the manifest of the
// drift, replacing any an interrupted run wrote, in one transaction.
func (b *builder) loadCounts(ctx context.Context) error {
	r := rand.New(rand.NewPCG(b.cfg.Seed, 1<<40))
	canonical := func(id int64) bool { return b.shape.canonical(id) == id }
	counts, manifest := b.cfg.Drift.drifted(r, b.truth, canonical)
	tx, err := b.cfg.DB.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	for _, q := range []string{"DELETE FROM tag_counts", "DELETE FROM archive_drift"} {
		if _, err := tx.ExecContext(ctx, q); err != nil {
			return err
		}
	}
	rc := newRows("tag_counts", "tag_id, count, public_count, filter_count, public_filter_count, version")
	for _, st := range counts {
		rc.add(st.tag, st.sum.Count, st.sum.Public, st.sum.Filter, st.sum.PublicFilter, 1)
	}
	rm := newRows("archive_drift", "tag_id, kind, row_missing, drift, public_drift, filter_drift, public_filter_drift")
	for _, in := range manifest {
		rm.add(in.TagID, in.Kind, in.RowMissing, in.Drift.Count, in.Drift.Public, in.Drift.Filter, in.Drift.PublicFilter)
		b.rep.Drifted[in.Kind]++
		if in.RowMissing {
			b.rep.MissingRows++
		}
	}
	for _, rs := range []*rows{rc, rm} {
		if err := load(ctx, tx, rs, false); err != nil {
			return err
		}
	}
	b.rep.TagCountRows = rc.n
	for _, t := range b.truth {
		if t.Count > 0 {
			b.rep.TagsUsed++
		}
	}
	return tx.Commit()
}

// Tables returns the size of the service's tables a build writes, from
// information_schema, or the database's error.
func Tables(ctx context.Context, db *migrations.DB) ([]Table, error) {
	return migrations.Collect(ctx, db, func(rows *sql.Rows) (t Table, err error) {
		err = rows.Scan(&t.Name, &t.Rows, &t.DataBytes, &t.IndexBytes)
		return t, err
	}, `SELECT table_name, COALESCE(table_rows, 0), COALESCE(data_length, 0), COALESCE(index_length, 0)
		FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name IN (`+
		migrations.Placeholders("?", ",", len(loadedTables))+`) ORDER BY table_name`, anys(loadedTables)...)
}

func anys(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}
