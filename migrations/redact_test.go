package migrations_test

import (
	"context"
	"strings"
	"testing"

	"github.com/tagcount/tagcount/migrations"
)

// No output names a DSN's password (issue 21, finding 12).
func TestDSNsInOutputHaveNoPassword(t *testing.T) {
	t.Parallel()
	dsn := "tagcount:hunter2-secret@tcp(db.internal:3306)/?parseTime=true"
	err := migrations.CreateDatabase(context.Background(), dsn)
	if err == nil || strings.Contains(err.Error(), "hunter2") || !strings.Contains(err.Error(), "names no database") {
		t.Errorf("CreateDatabase of a DSN with no database: %v; want an error without the password", err)
	}
	got := migrations.RedactDSN(dsn + "&x=1")
	if strings.Contains(got, "hunter2") || !strings.Contains(got, "tagcount:xxxxx@tcp(db.internal:3306)") {
		t.Errorf("RedactDSN = %q; want the user and address, the password replaced", got)
	}
	if got := migrations.RedactDSN("root@tcp(127.0.0.1:3306)/x"); got != "root@tcp(127.0.0.1:3306)/x" {
		t.Errorf("RedactDSN of a DSN without a password = %q; want it as it was", got)
	}
}
