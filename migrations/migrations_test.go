package migrations_test

import (
	"context"
	"strings"
	"testing"

	"github.com/tagcount/tagcount/migrations"
	"github.com/tagcount/tagcount/migrations/testdb"
)

func TestMigrationsGoDownAndUpAgain(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	ctx := context.Background()
	v, err := migrations.Version(ctx, db.DB)
	if err != nil || v < 2 {
		t.Fatalf("version after up = %d, %v; want >= 2", v, err)
	}
	for v > 0 {
		if err := migrations.Down(ctx, db.DB); err != nil {
			t.Fatal(err)
		}
		v, _ = migrations.Version(ctx, db.DB)
	}
	var n int
	db.QueryRow("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = 'tags'", db.Name).Scan(&n)
	if n != 0 {
		t.Fatalf("tags table still exists after all downs")
	}
	if err := migrations.Up(ctx, db.DB); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("INSERT INTO tags (type, name, name_key) VALUES ('fandom','Star Trek','star trek')"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("INSERT INTO tags (type, name, name_key) VALUES ('fandom','STAR TREK','star trek')"); err == nil {
		t.Fatal("case-insensitive duplicate tag was accepted")
	}
}

// TestWranglingMigrationFilesEveryWorkUnderItsOwnTags migrates a database
// holding works, counts and pending events from before tag wrangling:
// every tag is its own canonical tag, so its filter numbers are its counts
// and every work is filed under the tags it uses. Going down restores the
// old keys even for tags whose new key does not fit the old column.
func TestWranglingMigrationFilesEveryWorkUnderItsOwnTags(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	ctx := context.Background()
	downBefore(t, db, wranglingVersion)
	for _, q := range []string{
		"INSERT INTO tags (id, type, name, name_key) VALUES (1, 'freeform', 'Fluff', 'fluff'), (2, 'freeform', 'Angst', 'angst')",
		"INSERT INTO taggings (work_id, tag_id, position) VALUES (10, 1, 0), (10, 2, 1), (11, 1, 0)",
		"INSERT INTO tag_counts (tag_id, count, public_count) VALUES (1, 2, 1), (2, 0, 0)",
		"INSERT INTO tag_events (tag_id, delta, public_delta, work_id) VALUES (2, 1, 1, 10)",
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if err := migrations.Up(ctx, db.DB); err != nil {
		t.Fatal(err)
	}
	var filters, counts, events string
	db.QueryRow("SELECT GROUP_CONCAT(CONCAT(work_id, ':', tag_id) ORDER BY work_id, tag_id) FROM work_filters").Scan(&filters)
	db.QueryRow("SELECT GROUP_CONCAT(CONCAT_WS(',', tag_id, filter_count, public_filter_count) ORDER BY tag_id SEPARATOR ' ') FROM tag_counts").Scan(&counts)
	db.QueryRow("SELECT GROUP_CONCAT(CONCAT_WS(',', tag_id, filter_delta, public_filter_delta)) FROM tag_events").Scan(&events)
	if filters != "10:1,10:2,11:1" || counts != "1,2,1 2,0,0" || events != "2,1,1" {
		t.Fatalf("after the migration: work_filters %q, filter counts %q, filter deltas %q", filters, counts, events)
	}
	long := strings.Repeat("\u00dc", 300) + "#1"
	if _, err := db.Exec("UPDATE tags SET name_key = ?, synonym_of = 2 WHERE id = 1", long); err != nil {
		t.Fatalf("a 302-character key: %v", err)
	}
	downBefore(t, db, wranglingVersion)
	var key string
	db.QueryRow("SELECT name_key FROM tags WHERE id = 1").Scan(&key)
	if key != "fluff" {
		t.Fatalf("after going down, tag 1's key is %q; want the lower-cased name", key)
	}
}

// wranglingVersion is the migration that brought tag wrangling.
const wranglingVersion = 6

// downBefore rolls db's migrations back until version is undone.
func downBefore(t *testing.T, db *testdb.DB, version int64) {
	t.Helper()
	ctx := context.Background()
	for {
		v, err := migrations.Version(ctx, db.DB)
		if err != nil {
			t.Fatal(err)
		}
		if v < version {
			return
		}
		if err := migrations.Down(ctx, db.DB); err != nil {
			t.Fatal(err)
		}
	}
}
