package main

import (
	"context"
	"database/sql"
	"fmt"
	"regexp"

	"github.com/tagcount/tagcount/migrations"
)

// The new path's fault, for the guarded rollout's tests and load runs: the
// service's MySQL user loses INSERT on the outbox (tag_events). Only the new
// path's posting transaction (and the wrangling job) inserts outbox rows:
// the legacy path writes tag_counts and tag_count_changes, the counter
// reads and deletes outbox rows, the rollout's guards only read them. So
// the new path's posting jobs fail (and retry: a missing privilege is
// transient to the poster) while everything else runs. Renaming the table
// instead would stop the counter and the guards' own reads too.

// plainName is what a database or user name must look like to be quoted
// into a GRANT.
var plainName = regexp.MustCompile(`^[A-Za-z0-9_]{1,64}$`)

// grantServiceUser creates user (at any host, no password) with what the
// service needs on database: CREATE on the database (its CREATE DATABASE IF
// NOT EXISTS) and every privilege on each of its tables, granted table by
// table so that one can be revoked (MariaDB cannot take a table's
// privilege out of a grant on the whole database). root must be allowed to
// create users. It returns a function that drops the user, or the server's
// error.
func grantServiceUser(ctx context.Context, root migrations.Querier, database, user string) (drop func(context.Context) error, err error) {
	if !plainName.MatchString(database) || !plainName.MatchString(user) {
		return nil, fmt.Errorf("database %q and user %q must be letters, digits and _", database, user)
	}
	tables, err := migrations.Collect(ctx, root, func(rows *sql.Rows) (name string, err error) { err = rows.Scan(&name); return name, err },
		"SELECT table_name FROM information_schema.tables WHERE table_schema = ?", database)
	if err != nil {
		return nil, err
	}
	account := fmt.Sprintf("'%s'@'%%'", user)
	stmts := []string{"CREATE USER " + account, fmt.Sprintf("GRANT CREATE ON `%s`.* TO %s", database, account)}
	for _, t := range tables {
		stmts = append(stmts, fmt.Sprintf("GRANT ALL PRIVILEGES ON `%s`.`%s` TO %s", database, t, account))
	}
	drop = func(ctx context.Context) error {
		_, err := root.ExecContext(ctx, "DROP USER IF EXISTS "+account)
		return err
	}
	for _, s := range stmts {
		if _, err := root.ExecContext(ctx, s); err != nil {
			drop(ctx)
			return nil, fmt.Errorf("%s: %w", s, err)
		}
	}
	return drop, nil
}

// breakNewPath revokes INSERT on database's outbox from user (made by
// grantServiceUser): from the next statement on, the new path's posting
// jobs fail with "INSERT command denied". It returns the function that
// grants it back, or the server's error.
func breakNewPath(ctx context.Context, root migrations.Querier, database, user string) (heal func(context.Context) error, err error) {
	if !plainName.MatchString(database) || !plainName.MatchString(user) {
		return nil, fmt.Errorf("database %q and user %q must be letters, digits and _", database, user)
	}
	table, account := fmt.Sprintf("`%s`.`tag_events`", database), fmt.Sprintf("'%s'@'%%'", user)
	if _, err := root.ExecContext(ctx, "REVOKE INSERT ON "+table+" FROM "+account); err != nil {
		return nil, err
	}
	return func(ctx context.Context) error {
		_, err := root.ExecContext(ctx, "GRANT INSERT ON "+table+" TO "+account)
		return err
	}, nil
}
