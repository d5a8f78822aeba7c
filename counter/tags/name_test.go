package tags_test

import (
	"testing"

	"github.com/tagcount/tagcount/counter/tags"
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
		ka, kb := tags.NameKey(tc.a), tags.NameKey(tc.b)
		if ka != kb || ka == "" {
			t.Errorf("%s: NameKey(%q) = %q, NameKey(%q) = %q; want one non-empty key", tc.name, tc.a, ka, tc.b, kb)
		}
		if again := tags.NameKey(ka); again != ka {
			t.Errorf("%s: NameKey is not stable: NameKey(%q) = %q", tc.name, ka, again)
		}
	}
	if tags.NameKey("Fluff") == tags.NameKey("Angst") {
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
		if ka, kb := tags.NameKey(tc.a), tags.NameKey(tc.b); ka == kb {
			t.Errorf("%s: %q and %q share the key %q", tc.name, tc.a, tc.b, ka)
		}
	}
	// A tag character outside a flag is as invisible as any other.
	if tags.NameKey("Fluff󠁁") != tags.NameKey("Fluff") {
		t.Error("a stray tag character makes a second tag")
	}
}
