// Package drafts is the authors' side of tagcount: draft storage, the
// validation rules of API.md, and the authors' HTTP API (drafts and works).
// Turning a draft into a posted work is the poster's job; drafts reaches it
// through the Poster interface.
package drafts
