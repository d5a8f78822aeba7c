package httpapi

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func TestTheBearerSchemeIsCaseInsensitive(t *testing.T) {
	t.Parallel()
	api := newTestAPI(t, nil, Edge{})
	tok := api.token(1, RoleAuthor)
	for _, h := range []string{"Bearer " + tok, "bearer " + tok, "BEARER  " + tok} {
		if res := api.do("GET", "/v1/drafts/1", "", nil, "Authorization", h); res.Status != http.StatusNotFound {
			t.Errorf("Authorization %q: %d %v; want the route's 404", h[:8], res.Status, res.Body)
		}
	}
	for _, h := range []string{tok, "Basic " + tok, "Bearer", "Bearertoken " + tok} {
		if res := api.do("GET", "/v1/drafts/1", "", nil, "Authorization", h); res.Status != http.StatusUnauthorized {
			t.Errorf("Authorization %q: %d; want 401", h[:min(len(h), 12)], res.Status)
		}
	}
}

func TestATokenWhoseTimesAreStringsIsRefused(t *testing.T) {
	t.Parallel()
	a := Auth{Secret: testSecret}
	future := time.Now().Add(time.Hour).Unix()
	for name, c := range map[string]jwt.MapClaims{
		"exp as a string": {"sub": "1", "role": RoleAuthor, "exp": "99999999999"},
		"nbf as a string": {"sub": "1", "role": RoleAuthor, "exp": future, "nbf": "0"},
		"iat as a string": {"sub": "1", "role": RoleAuthor, "exp": future, "iat": "0"},
	} {
		tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(testSecret)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.Verify(tok); err == nil {
			t.Errorf("%s: accepted; want 401", name)
		}
	}
	ok, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "1", "role": RoleAuthor, "exp": future}).SignedString(testSecret)
	if p, err := a.Verify(ok); err != nil || p.AuthorID != 1 {
		t.Errorf("a numeric exp: %v %v; want author 1", p, err)
	}
}

func TestASecretShorterThan32BytesIsRefused(t *testing.T) {
	t.Parallel()
	if err := (Auth{Secret: []byte(strings.Repeat("s", MinSecretLen-1))}).Check(); err == nil ||
		!strings.Contains(err.Error(), "TAGCOUNT_AUTH_SECRET") {
		t.Errorf("a 31-byte secret: %v; want an error naming TAGCOUNT_AUTH_SECRET", err)
	}
	if err := (Auth{Secret: []byte(strings.Repeat("s", MinSecretLen))}).Check(); err != nil {
		t.Errorf("a 32-byte secret: %v", err)
	}
}
