package tags

import (
	"strings"
	"unicode"

	"golang.org/x/text/cases"
	"golang.org/x/text/unicode/norm"
	"golang.org/x/text/unicode/rangetable"
)

// Tag types, as stored in tags.type.
const (
	TypeRating       = "rating"
	TypeWarning      = "warning"
	TypeCategory     = "category"
	TypeFandom       = "fandom"
	TypeRelationship = "relationship"
	TypeCharacter    = "character"
	TypeFreeform     = "freeform"
)

// Types are every tag type, in the order a work lists them.
var Types = []string{TypeRating, TypeWarning, TypeCategory, TypeFandom, TypeRelationship, TypeCharacter, TypeFreeform}

// Ref names a tag: its type, its name as first written, and the key that
// identifies it within its type (NameKey of the name).
type Ref struct {
	Type string
	Name string
	Key  string
}

// NewRef returns the Ref of the tag of type typ named name.
func NewRef(typ, name string) Ref { return Ref{Type: typ, Name: name, Key: NameKey(name)} }

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

// Invisible reports whether r is a character a key drops as invisible on
// its own (format and default-ignorable characters).
func Invisible(r rune) bool { return unicode.Is(ignorable, r) }

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
