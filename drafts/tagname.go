package drafts

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/tagcount/tagcount/counter/tags"
)

// bidiControl reports whether r changes the direction of the text around
// it (embeddings, overrides, isolates, directional marks): in a tag name
// they make one name display as another.
func bidiControl(r rune) bool {
	switch {
	case r >= 0x202A && r <= 0x202E, r >= 0x2066 && r <= 0x2069, r == 0x200E, r == 0x200F, r == 0x061C:
		return true
	}
	return false
}

// checkName checks one tag name written under field and returns a
// *ValidationError naming the first rule it breaks, or nil.
func checkName(field, name string) error {
	n := strings.TrimSpace(name)
	switch {
	case n == "":
		return invalid(field, "tag_name_empty", "a tag name must not be empty")
	case !utf8.ValidString(n):
		return invalid(field, "invalid_utf8", "a tag name must be valid UTF-8")
	case utf8.RuneCountInString(n) > MaxTagName:
		return invalid(field, "tag_name_too_long", fmt.Sprintf("a tag name must be at most %d characters", MaxTagName))
	}
	for _, r := range n {
		switch {
		case unicode.IsControl(r):
			return invalid(field, "tag_name_control_character", "a tag name must not contain control characters")
		case bidiControl(r):
			return invalid(field, "tag_name_bidi_control", "a tag name must not contain bidirectional control characters")
		}
	}
	switch key := tags.NameKey(n); {
	case !visible(key):
		return invalid(field, "tag_name_invisible", "a tag name must contain a visible character")
	case utf8.RuneCountInString(key) > tags.MaxNameKey:
		return invalid(field, "tag_name_too_long", "the tag name is too long once normalised")
	}
	return nil
}
