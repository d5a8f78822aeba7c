// Package drafts is the authors' side of tagcount: what an author writes
// (Content), the rules it must follow (Validate, returning a
// *ValidationError naming the first offending field), and the drafts table
// (Store), including the posting state transitions the poster asks for. It
// knows nothing of HTTP: the HTTP layer maps its errors to statuses.
package drafts
