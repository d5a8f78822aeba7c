package poster

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/go-sql-driver/mysql"

	"github.com/tagcount/tagcount/drafts"
)

// TestFailureMessageTellsTheAuthorOnlyWhatTheyCanActOn: a job's error
// reaches the draft's author as a sentence of their own (a rule their
// content breaks, a draft that kept changing, a service that did not
// answer), or as "internal error"; never the database's words. The
// sentence is valid UTF-8 and fits the column.
func TestFailureMessageTellsTheAuthorOnlyWhatTheyCanActOn(t *testing.T) {
	constraint := &mysql.MySQLError{Number: 4025, SQLState: [5]byte{'2', '3', '0', '0', '0'},
		Message: "CONSTRAINT `works_title` failed for `tagcount`.`works`"}
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"database error", fmt.Errorf("insert works: %w", constraint), msgInternal},
		{"unknown error", errors.New("dial tcp 10.0.0.7:3306: connect: connection refused"), msgInternal},
		{"dependency too slow", fmt.Errorf("post: %w", context.DeadlineExceeded), msgUnavailable},
		// A revoked grant is retried like a dependency that is down (an
		// operator restores it); the draft fails only once retries run out.
		{"privilege missing", fmt.Errorf("outbox: %w", &mysql.MySQLError{Number: 1142,
			Message: "INSERT command denied to user 'tagcount'@'10.0.0.7' for table `tagcount`.`tag_events`"}), msgUnavailable},
		// The lock table full (a crowded buffer pool) is retried like a
		// lock conflict: the server rolled the transaction back whole.
		{"lock table full", fmt.Errorf("post: %w", &mysql.MySQLError{Number: 1206,
			Message: "The total number of locks exceeds the lock table size"}), msgUnavailable},
		{"draft kept changing", fmt.Errorf("sync: %w", errVersionMoved), drafts.ErrChanged.Error()},
		{"content breaks a rule", fmt.Errorf("post: %w", &drafts.ValidationError{Field: "tags.fandoms[0]", Code: "tag_too_long",
			Message: "tag Pokémon is too long"}), "tag Pokémon is too long"},
		// 999 ASCII bytes then a two-byte 'é': byte 1000 falls inside it.
		{"cut inside a character", &drafts.ValidationError{Message: strings.Repeat("x", 999) + "é and more"}, strings.Repeat("x", 999)},
		{"invalid bytes", &drafts.ValidationError{Message: "bad \xff tag"}, "bad \uFFFD tag"},
	} {
		got := failureMessage(tc.err)
		if got != tc.want || !utf8.ValidString(got) || len(got) > 1000 {
			t.Errorf("%s: failureMessage = %q (%d bytes, valid %v), want %q", tc.name, got, len(got), utf8.ValidString(got), tc.want)
		}
	}
}
