// Package tags owns the tags table and what a tag is: its types
// (TypeRating … TypeFreeform), its name's identity within its type
// (NameKey), the reference posting and the quota pass around (Ref), the
// Resolver that maps references to ids and creates the tags it has not
// seen, the synonym mapping wrangling switches (Canonicals, Lock,
// SetSynonymOf …) and the new-tag quota (Quota), which bounds how many
// tags an author creates a day.
//
// It sits below drafts, counter and poster: content names tags, the
// counter counts them by id, the poster files works under them. It knows
// nothing of counts.
package tags
