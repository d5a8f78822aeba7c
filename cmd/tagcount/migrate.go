package main

import (
	"context"
	"fmt"
	"io"

	"github.com/tagcount/tagcount/migrations"
)

// migrate runs `tagcount migrate [up|down|version]`.
func migrate(ctx context.Context, dsn string, create bool, args []string, stdout io.Writer) error {
	verb := "up"
	if len(args) > 0 {
		verb = args[0]
	}
	if create && verb == "up" {
		if err := migrations.CreateDatabase(ctx, dsn); err != nil {
			return err
		}
	}
	db, err := migrations.Open(ctx, dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	switch verb {
	case "up":
		err = migrations.Up(ctx, db)
	case "down":
		err = migrations.Down(ctx, db)
	case "version":
	default:
		return fmt.Errorf("migrate: unknown verb %q (up, down, version)", verb)
	}
	if err != nil {
		return err
	}
	v, err := migrations.Version(ctx, db)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "schema version %d\n", v)
	return nil
}
