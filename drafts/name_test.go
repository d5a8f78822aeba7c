package drafts_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/tagcount/tagcount/drafts"
)

// spellings are pairs of names a reader cannot tell apart (or that differ
// by case only): each pair must be one tag.
var spellings = []struct {
	name string
	a, b string
}{
	{"NFC and NFD", "Caf\u00e9", "Cafe\u0301"},
	{"zero-width space", "Fluff", "Fl\u200Buff"},
	{"byte-order mark", "\uFEFFFluff", "Fluff"},
	{"full-width letter", "\uFF21", "A"},
	{"no-break space", "Hurt\u00A0Comfort", "Hurt Comfort"},
	{"final sigma", "ΟΔΟΣ", "οδος"},
	{"sharp s", "STRASSE", "straße"},
	{"soft hyphen", "Slow\u00ADBurn", "SlowBurn"},
	{"joiners and word joiner", "A\u200C\u200D\u2060B", "ab"},
	{"variation selector", "Star\uFE0F", "star"},
	{"runs of white space", "  Alternate \t Universe\u3000", "alternate universe"},
}

func TestNameKeyMakesEachSpellingPairOneKey(t *testing.T) {
	t.Parallel()
	for _, tc := range spellings {
		ka, kb := drafts.NameKey(tc.a), drafts.NameKey(tc.b)
		if ka != kb || ka == "" {
			t.Errorf("%s: NameKey(%q) = %q, NameKey(%q) = %q; want one non-empty key", tc.name, tc.a, ka, tc.b, kb)
		}
		if again := drafts.NameKey(ka); again != ka {
			t.Errorf("%s: NameKey is not stable: NameKey(%q) = %q", tc.name, ka, again)
		}
	}
	if drafts.NameKey("Fluff") == drafts.NameKey("Angst") {
		t.Error("different names share a key")
	}
}

// Emoji made of several code points keep the invisible ones that join
// them: these pairs look different and must stay two tags.
func TestNameKeyKeepsEmojiSequencesApart(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, a, b string }{
		{"subdivision flags", "🏴󠁧󠁢󠁥󠁮󠁧󠁿", // England
			"🏴󠁧󠁢󠁳󠁣󠁴󠁿"}, // Scotland
		{"a joined family", "👨‍👩‍👧", "👨👩👧"},
		{"a joined emoji with a skin tone", "👩🏽‍💻", "👩🏽💻"},
	} {
		if ka, kb := drafts.NameKey(tc.a), drafts.NameKey(tc.b); ka == kb {
			t.Errorf("%s: %q and %q share the key %q", tc.name, tc.a, tc.b, ka)
		}
	}
	// A tag character outside a flag is as invisible as any other.
	if drafts.NameKey("Fluff󠁁") != drafts.NameKey("Fluff") {
		t.Error("a stray tag character makes a second tag")
	}
}

func TestListKeepsOneTagPerKeyAsFirstWritten(t *testing.T) {
	t.Parallel()
	c := validContent()
	for _, tc := range spellings {
		c.Tags.Freeforms = append(c.Tags.Freeforms, tc.a, tc.b)
	}
	var freeforms []string
	for _, ref := range c.Tags.List() {
		if ref.Type == drafts.TypeFreeform {
			freeforms = append(freeforms, ref.Name)
		}
	}
	// "Fluff" is in validContent already, and three pairs spell it.
	want := []string{"Fluff", "Caf\u00e9", "\uFF21", "Hurt\u00A0Comfort", "ΟΔΟΣ", "STRASSE", "Slow\u00ADBurn",
		"A\u200C\u200D\u2060B", "Star\uFE0F", "Alternate \t Universe"}
	if strings.Join(freeforms, "|") != strings.Join(want, "|") {
		t.Errorf("List freeforms = %q; want %q", freeforms, want)
	}
}

func TestValidateRefusesInvisibleAndBidiNames(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, code string
	}{
		{"\u200B", "tag_name_invisible"},
		{"\u00AD", "tag_name_invisible"},
		{"\uFEFF", "tag_name_invisible"},
		{"\u200B\u200D \u2060", "tag_name_invisible"},
		{"\u202E", "tag_name_bidi_control"},
		{"abc\u202Edef", "tag_name_bidi_control"},
		{"left\u2066isolate", "tag_name_bidi_control"},
		{"mark\u200F", "tag_name_bidi_control"},
		{"arabic\u061Cmark", "tag_name_bidi_control"},
		{strings.Repeat("\uFDFA", 40), "tag_name_too_long"}, // 40 characters, 720 once NFKC expands them
	} {
		c := validContent()
		c.Tags.Freeforms = []string{"Fluff", tc.name}
		var e *drafts.ValidationError
		if err := c.Validate(); !errors.As(err, &e) || e.Code != tc.code || e.Field != "tags.freeforms[1]" {
			t.Errorf("freeform %q: Validate = %v; want %s on tags.freeforms[1]", tc.name, err, tc.code)
		}
	}
	c := validContent()
	c.Tags.Freeforms = []string{"Caf\u00e9", "\uFF21", "ΟΔΟΣ", "Fl\u200Buff", "\uFDFA"}
	if err := c.Validate(); err != nil {
		t.Errorf("visible names refused: %v", err)
	}
}
