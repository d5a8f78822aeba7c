package drafts

import (
	"errors"
	"fmt"
)

// Errors of the drafts package. The HTTP layer maps each to a status; these
// say what went wrong in the package's own terms.
var (
	// ErrNotFound: the draft does not exist or belongs to another author
	// (an author never learns that someone else's draft exists).
	ErrNotFound = errors.New("draft not found")
	// ErrQueued: the draft is being posted, so its content cannot change.
	ErrQueued = errors.New("the draft is being posted; try again once it is posted")
	// ErrPosted: the draft is posted; its work is edited or deleted instead.
	ErrPosted = errors.New("the draft is posted; edit or delete its work instead")
	// ErrChanged: the draft changed between reading and writing it.
	ErrChanged = errors.New("the draft changed meanwhile; try again")
	// ErrDraftQuota: the author keeps as many unposted drafts as the store
	// allows; posting or deleting one makes room.
	ErrDraftQuota = errors.New("too many unposted drafts; post or delete some first")
)

// ValidationError is content that breaks a rule of the API: Field is the
// JSON path of the first offending field, Code a snake_case name of the
// rule, Message a sentence an author can read.
type ValidationError struct {
	Field   string
	Code    string
	Message string
}

func (e *ValidationError) Error() string {
	return fmt.Sprintf("%s: %s (%s)", e.Code, e.Message, e.Field)
}

func invalid(field, code, message string) *ValidationError {
	return &ValidationError{Field: field, Code: code, Message: message}
}
