package drafts_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/tagcount/tagcount/counter/tags"
	"github.com/tagcount/tagcount/drafts"
)

func validContent() drafts.Content {
	return drafts.Content{Title: "A title", Body: "A body", Tags: drafts.Tags{
		Rating:    "General Audiences",
		Warnings:  []string{"No Archive Warnings Apply"},
		Fandoms:   []string{"Star Trek"},
		Freeforms: []string{"Fluff"},
	}}
}

// validateCase is one change to valid content and the validation error
// (field and code) Validate must answer for it.
type validateCase struct {
	name   string
	change func(c *drafts.Content)
	field  string
	code   string
}

// runValidateCases runs each case as a subtest.
func runValidateCases(t *testing.T, cases []validateCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := validContent()
			tc.change(&c)
			var e *drafts.ValidationError
			if err := c.Validate(); !errors.As(err, &e) || e.Field != tc.field || e.Code != tc.code {
				t.Fatalf("Validate = %v; want a validation error %s at %s", err, tc.code, tc.field)
			}
		})
	}
}

func TestValidateAnswersTheFirstOffendingField(t *testing.T) {
	t.Parallel()
	many := make([]string, 73) // with rating, warning and fandom: 76 tags
	for i := range many {
		many[i] = fmt.Sprintf("Tag %d", i)
	}
	cases := []validateCase{
		{"empty title", func(c *drafts.Content) { c.Title = "  " }, "title", "title_required"},
		{"long title", func(c *drafts.Content) { c.Title = strings.Repeat("é", 256) }, "title", "title_too_long"},
		{"long body", func(c *drafts.Content) { c.Body = strings.Repeat("x", 500_001) }, "body", "body_too_long"},
		{"no rating", func(c *drafts.Content) { c.Tags.Rating = "" }, "tags.rating", "tag_name_empty"},
		{"unknown rating", func(c *drafts.Content) { c.Tags.Rating = "PG-13" }, "tags.rating", "unknown_rating"},
		{"no warning", func(c *drafts.Content) { c.Tags.Warnings = nil }, "tags.warnings", "warning_required"},
		{"unknown warning", func(c *drafts.Content) { c.Tags.Warnings = []string{"Spiders"} }, "tags.warnings[0]", "unknown_warning"},
		{"unknown category", func(c *drafts.Content) { c.Tags.Categories = []string{"Gen", "X/Y"} }, "tags.categories[1]", "unknown_category"},
		{"no fandom", func(c *drafts.Content) { c.Tags.Fandoms = nil }, "tags.fandoms", "fandom_required"},
		{"blank fandom", func(c *drafts.Content) { c.Tags.Fandoms = []string{" "} }, "tags.fandoms[0]", "tag_name_empty"},
		{"long tag", func(c *drafts.Content) { c.Tags.Characters = []string{strings.Repeat("a", 101)} }, "tags.characters[0]", "tag_name_too_long"},
		{"control char", func(c *drafts.Content) { c.Tags.Relationships = []string{"A/B\x07"} }, "tags.relationships[0]", "tag_name_control_character"},
		{"too many tags", func(c *drafts.Content) { c.Tags.Freeforms = many }, "tags", "too_many_tags"},
		{"bad utf8", func(c *drafts.Content) { c.Body = "\xff" }, "body", "invalid_utf8"},
	}
	runValidateCases(t, cases)
	if err := validContent().Validate(); err != nil {
		t.Fatalf("valid content rejected: %v", err)
	}
}

func TestListDropsCaseInsensitiveDuplicatesAndSpellsFixedTagsCanonically(t *testing.T) {
	t.Parallel()
	c := validContent()
	c.Tags.Rating = "general audiences"
	c.Tags.Freeforms = []string{" Fluff ", "FLUFF", "Angst"}
	c.Tags.Fandoms = []string{"Star Trek", "star trek"}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprint(c.Tags.List())
	want := "[{rating General Audiences general audiences} {warning No Archive Warnings Apply no archive warnings apply} " +
		"{fandom Star Trek star trek} {freeform Fluff fluff} {freeform Angst angst}]"
	if got != want {
		t.Fatalf("List = %s\nwant   %s", got, want)
	}
}

func TestExactlySeventyFiveTagsAreAllowed(t *testing.T) {
	t.Parallel()
	c := validContent()
	c.Tags.Freeforms = make([]string, 72) // 1 rating + 1 warning + 1 fandom + 72
	for i := range c.Tags.Freeforms {
		c.Tags.Freeforms[i] = fmt.Sprintf("Tag %d", i)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("75 tags rejected: %v", err)
	}
}

func TestListKeepsOneTagPerKeyAsFirstWritten(t *testing.T) {
	t.Parallel()
	c := validContent()
	// Pairs a reader cannot tell apart (or that differ by case only),
	// as tags.NameKey's tests list them.
	c.Tags.Freeforms = append(c.Tags.Freeforms, "Caf\u00e9", "Cafe\u0301", "Fluff", "Fl\u200Buff", "\uFEFFFluff", "Fluff",
		"\uFF21", "A", "Hurt\u00A0Comfort", "Hurt Comfort", "ΟΔΟΣ", "οδος", "STRASSE", "straße", "Slow\u00ADBurn", "SlowBurn",
		"A\u200C\u200D\u2060B", "ab", "Star\uFE0F", "star", "  Alternate \t Universe\u3000", "alternate universe")
	var freeforms []string
	for _, ref := range c.Tags.List() {
		if ref.Type == tags.TypeFreeform {
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

// A body of tens of thousands of names is refused for their number before
// any of them is normalised: normalising first costs seconds of CPU per
// request (issue 21, finding 3). A blank name past the limit would be
// tag_name_empty if names were checked before they were counted.
func TestValidateCountsTagsBeforeCheckingAnyName(t *testing.T) {
	t.Parallel()
	c := validContent()
	c.Tags.Fandoms = make([]string, 35_000)
	for i := range c.Tags.Fandoms {
		c.Tags.Fandoms[i] = strings.Repeat("\uFDFA", 38) // 684 characters once NFKC expands it
	}
	c.Tags.Fandoms[0] = " "
	var e *drafts.ValidationError
	if err := c.Validate(); !errors.As(err, &e) || e.Field != "tags" || e.Code != "too_many_tags" {
		t.Fatalf("Validate of 35,000 fandoms, the first blank = %v; want too_many_tags at tags, before any name is read", err)
	}
}

// Titles and bodies refuse what cannot be shown or what reorders the text
// around it, and tag names refuse what renders blank (issue 21, finding 9).
func TestValidateRefusesControlBidiAndBlankCharacters(t *testing.T) {
	t.Parallel()
	cases := []validateCase{
		{"NUL in title", func(c *drafts.Content) { c.Title = "A\x00title" }, "title", "title_control_character"},
		{"escape in title", func(c *drafts.Content) { c.Title = "A\x1b[31mtitle" }, "title", "title_control_character"},
		{"newline in title", func(c *drafts.Content) { c.Title = "A\ntitle" }, "title", "title_control_character"},
		{"C1 control in title", func(c *drafts.Content) { c.Title = "A\u0085title" }, "title", "title_control_character"},
		{"override in title", func(c *drafts.Content) { c.Title = "A \u202Eeltit" }, "title", "title_bidi_control"},
		{"isolate in title", func(c *drafts.Content) { c.Title = "A \u2067title\u2069" }, "title", "title_bidi_control"},
		{"blank title", func(c *drafts.Content) { c.Title = "\u2800\u200B\u3164" }, "title", "title_required"},
		{"NUL in body", func(c *drafts.Content) { c.Body = "text\x00" }, "body", "body_control_character"},
		{"Braille blank name", func(c *drafts.Content) { c.Tags.Fandoms = []string{"\u2800"} }, "tags.fandoms[0]", "tag_name_invisible"},
		{"Hangul filler name", func(c *drafts.Content) { c.Tags.Freeforms = []string{"\u3164\u3164"} }, "tags.freeforms[0]", "tag_name_invisible"},
		{"halfwidth filler name", func(c *drafts.Content) { c.Tags.Characters = []string{"\uFFA0"} }, "tags.characters[0]", "tag_name_invisible"},
		{"blank mix name", func(c *drafts.Content) { c.Tags.Freeforms = []string{"\u2800 \u200B \u115F\u1160"} }, "tags.freeforms[0]", "tag_name_invisible"},
		{"override in name", func(c *drafts.Content) { c.Tags.Freeforms = []string{"a\u202Eb"} }, "tags.freeforms[0]", "tag_name_bidi_control"},
	}
	runValidateCases(t, cases)
	ok := validContent()
	ok.Title = "שלום \u200Fworld\u200E, ⠁⠃ Braille"
	ok.Body = "Line one,\r\n\tline two.\n"
	ok.Tags.Freeforms = []string{"⠓⠑⠇⠇⠕", "👩🏽‍💻"}
	if err := ok.Validate(); err != nil {
		t.Fatalf("content with tabs and newlines in its body, directional marks in its title, Braille with dots: %v", err)
	}
}
