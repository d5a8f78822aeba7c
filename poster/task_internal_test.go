package poster

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestFailureMessageIsValidUTF8AndFitsTheColumn(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"short", errors.New("tag Pokémon: boom"), "tag Pokémon: boom"},
		// 999 ASCII bytes then a two-byte 'é': byte 1000 falls inside it.
		{"cut inside a character", errors.New(strings.Repeat("x", 999) + "é and more"), strings.Repeat("x", 999)},
		{"invalid bytes", errors.New("bad \xff tag"), "bad \uFFFD tag"},
	} {
		got := failureMessage(tc.err)
		if got != tc.want || !utf8.ValidString(got) || len(got) > 1000 {
			t.Errorf("%s: failureMessage = %q (%d bytes, valid %v), want %q", tc.name, got, len(got), utf8.ValidString(got), tc.want)
		}
	}
}
