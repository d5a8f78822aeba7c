package drafts

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/cases"
	"golang.org/x/text/unicode/norm"
	"golang.org/x/text/unicode/rangetable"
)

// MaxNameKey is the longest key, in characters, that tags.name_key holds.
// NFKC expands some characters many times over (U+FDFA becomes 18), so a
// name within MaxTagName may still fold to a key too long to store.
const MaxNameKey = 700

// fold is Unicode full case folding: "ß" and "ss", "ς" and "σ" fold alike.
// It is stateless, so one serves every goroutine.
var fold = cases.Fold()

// ignorable is what a key drops: format characters (Cf: zero-width space
// and joiners, the byte-order mark, the soft hyphen, the word joiner,
// directional marks) and the other default-ignorable code points (the
// variation selectors, the Hangul fillers, the combining grapheme joiner).
// None of them is visible on its own, so two names differing only by them
// look the same to a reader.
var ignorable = rangetable.Merge(unicode.Cf, unicode.Variation_Selector, unicode.Other_Default_Ignorable_Code_Point)

// NameKey returns the identity of a tag name within its type: two names
// with one key are one tag. It is the name in compatibility composed form
// (NFKC: "Ａ" is "A", a decomposed "é" is the composed one, a no-break
// space is a space), fully case-folded, normalised again (folding may
// undo NFKC), without invisible characters (but for those that make one
// emoji of several), with every run of white space one ASCII space and none
// at either end.
func NameKey(name string) string {
	s := norm.NFKC.String(fold.String(norm.NFKC.String(name)))
	var sb strings.Builder
	sb.Grow(len(s))
	space := false
	var prev rune // the last character kept
	for _, r := range s {
		switch {
		case unicode.IsSpace(r):
			space = sb.Len() > 0
		case unicode.Is(ignorable, r) && !joinsEmoji(prev, r):
		default:
			if space {
				sb.WriteByte(' ')
				space = false
			}
			sb.WriteRune(r)
			prev = r
		}
	}
	return sb.String()
}

// joinsEmoji reports whether the invisible r, after prev, is part of an
// emoji rather than text: a zero-width joiner after a symbol or a skin tone
// ("👩🏽‍💻" is not "👩🏽💻"), or a tag character in a flag's sequence (England's
// flag is not Scotland's). Anywhere else they are invisible and dropped.
func joinsEmoji(prev, r rune) bool {
	switch {
	case r == 0x200D:
		return unicode.In(prev, unicode.So, unicode.Sk)
	case r >= 0xE0020 && r <= 0xE007F:
		return prev == 0x1F3F4 || (prev >= 0xE0020 && prev <= 0xE007F)
	}
	return false
}

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
	switch key := NameKey(n); {
	case !visible(key):
		return invalid(field, "tag_name_invisible", "a tag name must contain a visible character")
	case utf8.RuneCountInString(key) > MaxNameKey:
		return invalid(field, "tag_name_too_long", "the tag name is too long once normalised")
	}
	return nil
}
