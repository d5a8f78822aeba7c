package migrations_test

import (
	"context"
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
