package drafts

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/tagcount/tagcount/counter/tags"
)

// Fixed vocabularies of docs/api.md.
var (
	Ratings    = []string{"General Audiences", "Teen And Up Audiences", "Mature", "Explicit", "Not Rated"}
	Warnings   = []string{"Creator Chose Not To Use Archive Warnings", "No Archive Warnings Apply", "Graphic Depictions Of Violence", "Major Character Death", "Rape/Non-Con", "Underage"}
	Categories = []string{"F/F", "F/M", "Gen", "M/M", "Multi", "Other"}
)

// Limits of docs/api.md.
const (
	MaxTitle   = 255
	MaxBody    = 500_000
	MaxTags    = 75
	MaxTagName = 100
)

// Tags is the tag block of a draft or work as the author wrote it; its JSON
// is both the stored form and the API's "tags" object (docs/api.md).
type Tags struct {
	Rating        string   `json:"rating"`
	Warnings      []string `json:"warnings"`
	Categories    []string `json:"categories,omitempty"`
	Fandoms       []string `json:"fandoms"`
	Relationships []string `json:"relationships,omitempty"`
	Characters    []string `json:"characters,omitempty"`
	Freeforms     []string `json:"freeforms,omitempty"`
}

// Visibilities of a work: who may see it.
const (
	VisibilityPublic     = "public"     // everyone
	VisibilityRegistered = "registered" // logged-in readers only
)

// Content is what an author writes: a draft's or a work's title, body,
// tags and who may read it (empty: public).
type Content struct {
	Title      string
	Body       string
	Tags       Tags
	Visibility string
}

// visibility is c's visibility as stored: empty is public.
func (c Content) visibility() string {
	if c.Visibility == "" {
		return VisibilityPublic
	}
	return c.Visibility
}

// Public reports whether anyone, logged in or not, may see c.
func (c Content) Public() bool { return c.visibility() == VisibilityPublic }

// List returns the content's tags in the order the author listed them
// (rating, warnings, categories, fandoms, relationships, characters,
// freeforms), names trimmed, names of one type with one key (NameKey)
// kept once, as first written.
// It assumes Validate passed.
func (t Tags) List() []tags.Ref {
	out := make([]tags.Ref, 0, 12)
	seen := make(map[[2]string]bool, 12)
	add := func(typ string, names ...string) {
		for _, n := range names {
			n = strings.TrimSpace(n)
			key := tags.NameKey(n)
			k := [2]string{typ, key}
			if n == "" || seen[k] {
				continue
			}
			seen[k] = true
			out = append(out, tags.Ref{Type: typ, Name: n, Key: key})
		}
	}
	add(tags.TypeRating, canonical(Ratings, t.Rating)...)
	add(tags.TypeWarning, canonical(Warnings, t.Warnings...)...)
	add(tags.TypeCategory, canonical(Categories, t.Categories...)...)
	add(tags.TypeFandom, t.Fandoms...)
	add(tags.TypeRelationship, t.Relationships...)
	add(tags.TypeCharacter, t.Characters...)
	add(tags.TypeFreeform, t.Freeforms...)
	return out
}

// Validate checks c against the rules of docs/api.md and returns a *ValidationError
// naming the first offending field, or nil. Sizes and counts come first, so
// content of any size is refused after work bounded by its byte length,
// before any name is normalised (NFKC multiplies some characters 18-fold).
func (c Content) Validate() error {
	if err := c.checkSizes(); err != nil {
		return err
	}
	if err := checkTitle(c.Title); err != nil {
		return err
	}
	if err := checkBody(c.Body); err != nil {
		return err
	}
	if v := c.Visibility; v != "" && v != VisibilityPublic && v != VisibilityRegistered {
		return invalid("visibility", "unknown_visibility", "the visibility must be public or registered")
	}
	t := c.Tags
	if err := checkName("tags.rating", t.Rating); err != nil {
		return err
	}
	if _, ok := fixedName(Ratings, t.Rating); !ok {
		return invalid("tags.rating", "unknown_rating", "the rating must be one of: "+strings.Join(Ratings, ", "))
	}
	if len(t.Warnings) == 0 {
		return invalid("tags.warnings", "warning_required", "at least one archive warning is required")
	}
	if err := checkFixed("tags.warnings", "warning", t.Warnings, Warnings); err != nil {
		return err
	}
	if err := checkFixed("tags.categories", "category", t.Categories, Categories); err != nil {
		return err
	}
	if len(t.Fandoms) == 0 {
		return invalid("tags.fandoms", "fandom_required", "at least one fandom is required")
	}
	for _, group := range []struct {
		field string
		names []string
	}{{"tags.fandoms", t.Fandoms}, {"tags.relationships", t.Relationships}, {"tags.characters", t.Characters}, {"tags.freeforms", t.Freeforms}} {
		for i, n := range group.names {
			if err := checkName(fmt.Sprintf("%s[%d]", group.field, i), n); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkSizes checks the title's and the body's lengths and the number of
// tags: each costs at most one pass over the bytes.
func (c Content) checkSizes() error {
	if utf8.RuneCountInString(c.Title) > MaxTitle {
		return invalid("title", "title_too_long", fmt.Sprintf("the title must be at most %d characters", MaxTitle))
	}
	if utf8.RuneCountInString(c.Body) > MaxBody {
		return invalid("body", "body_too_long", fmt.Sprintf("the body must be at most %d characters", MaxBody))
	}
	t := c.Tags
	total := 1 + len(t.Warnings) + len(t.Categories) + len(t.Fandoms) + len(t.Relationships) + len(t.Characters) + len(t.Freeforms)
	if total > MaxTags {
		return invalid("tags", "too_many_tags", fmt.Sprintf("a work may have at most %d tags", MaxTags))
	}
	return nil
}

// checkTitle refuses a title with nothing visible in it, one that is not
// UTF-8, and any control character (a title is one line) or bidirectional
// embedding, override or isolate (they make a title display as another, and
// reorder what is shown after it); directional marks are allowed, as
// right-to-left titles need them.
func checkTitle(title string) error {
	if !utf8.ValidString(title) {
		return invalid("title", "invalid_utf8", "the title is not valid UTF-8")
	}
	for _, r := range title {
		switch {
		case unicode.IsControl(r):
			return invalid("title", "title_control_character", "the title must not contain control characters")
		case bidiOverride(r):
			return invalid("title", "title_bidi_control", "the title must not contain bidirectional embeddings, overrides or isolates")
		}
	}
	if !visible(title) {
		return invalid("title", "title_required", "the title must not be empty")
	}
	return nil
}

// checkBody refuses a body that is not UTF-8 or holds control characters
// other than tab, line feed and carriage return.
func checkBody(body string) error {
	if !utf8.ValidString(body) {
		return invalid("body", "invalid_utf8", "the body is not valid UTF-8")
	}
	for _, r := range body {
		if unicode.IsControl(r) && r != '\t' && r != '\n' && r != '\r' {
			return invalid("body", "body_control_character", "the body must not contain control characters other than tab and line breaks")
		}
	}
	return nil
}

// bidiOverride reports whether r is a bidirectional embedding, override or
// isolate (U+202A–U+202E, U+2066–U+2069): unlike a directional mark, each
// changes the direction of everything up to its closing character.
func bidiOverride(r rune) bool {
	return (r >= 0x202A && r <= 0x202E) || (r >= 0x2066 && r <= 0x2069)
}

// visible reports whether s has a character that shows: not white space,
// not an invisible (format or default-ignorable) character, and not one of
// the characters that are drawn as a blank cell (the Braille pattern blank
// U+2800 and the Hangul fillers).
func visible(s string) bool {
	for _, r := range s {
		switch {
		case unicode.IsSpace(r), tags.Invisible(r):
		case r == 0x2800, r == 0x115F, r == 0x1160, r == 0x3164, r == 0xFFA0:
		default:
			return true
		}
	}
	return false
}

// checkFixed checks names listed under field against a fixed vocabulary; an
// unknown name is a 422 with code unknown_<what>.
func checkFixed(field, what string, names, set []string) error {
	for i, n := range names {
		f := fmt.Sprintf("%s[%d]", field, i)
		if err := checkName(f, n); err != nil {
			return err
		}
		if _, ok := fixedName(set, n); !ok {
			return invalid(f, "unknown_"+what, "the "+what+" must be one of: "+strings.Join(set, ", "))
		}
	}
	return nil
}

// canonical spells names from a fixed vocabulary as the vocabulary does, so
// "general audiences" and "General Audiences" name one tag spelled one way.
func canonical(set []string, names ...string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = n
		if s, ok := fixedName(set, n); ok {
			out[i] = s
		}
	}
	return out
}

// fixedName returns set's spelling of name, compared case-insensitively as
// tag names are, and whether set holds it.
func fixedName(set []string, name string) (string, bool) {
	k := tags.NameKey(strings.TrimSpace(name))
	for _, s := range set {
		if tags.NameKey(s) == k {
			return s, true
		}
	}
	return "", false
}

// Add appends ref's name to the list of its type (the rating replaces the
// rating): the inverse of List, for reading a work's tags back.
func (t *Tags) Add(ref tags.Ref) {
	if ref.Type == tags.TypeRating {
		t.Rating = ref.Name
		return
	}
	lists := map[string]*[]string{tags.TypeWarning: &t.Warnings, tags.TypeCategory: &t.Categories, tags.TypeFandom: &t.Fandoms,
		tags.TypeRelationship: &t.Relationships, tags.TypeCharacter: &t.Characters, tags.TypeFreeform: &t.Freeforms}
	if l := lists[ref.Type]; l != nil {
		*l = append(*l, ref.Name)
	}
}
