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

// signed returns an HS256 token of claims signed with secret.
func signed(t *testing.T, secret []byte, claims jwt.MapClaims) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(secret)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// A token's lifetime is bounded, iss and aud are checked when configured,
// and the secrets being rotated out still verify (issue 21, finding 12).
func TestTokensAreBoundedInLifetimeIssuerAudienceAndSecret(t *testing.T) {
	t.Parallel()
	old := []byte("the-old-secret-being-rotated-out")
	other := []byte("a-secret-this-service-never-knew")
	a := Auth{Secret: testSecret, OldSecrets: [][]byte{old}, Issuer: "https://login.example", Audience: "tagcount"}
	now := time.Now()
	base := func(change func(jwt.MapClaims)) jwt.MapClaims {
		c := jwt.MapClaims{"sub": "1", "role": RoleAuthor, "exp": now.Add(time.Hour).Unix(),
			"iss": "https://login.example", "aud": "tagcount"}
		if change != nil {
			change(c)
		}
		return c
	}
	cases := []struct {
		name   string
		secret []byte
		claims jwt.MapClaims
		ok     bool
	}{
		{"valid", testSecret, base(nil), true},
		{"signed with the old secret", old, base(nil), true},
		{"signed with an unknown secret", other, base(nil), false},
		{"exp 29 days ahead", testSecret, base(func(c jwt.MapClaims) { c["exp"] = now.Add(29 * 24 * time.Hour).Unix() }), true},
		{"exp 31 days ahead", testSecret, base(func(c jwt.MapClaims) { c["exp"] = now.Add(31 * 24 * time.Hour).Unix() }), false},
		{"exp in the year 5138", testSecret, base(func(c jwt.MapClaims) { c["exp"] = int64(99999999999) }), false},
		{"another issuer", testSecret, base(func(c jwt.MapClaims) { c["iss"] = "https://evil.example" }), false},
		{"no issuer", testSecret, base(func(c jwt.MapClaims) { delete(c, "iss") }), false},
		{"another audience", testSecret, base(func(c jwt.MapClaims) { c["aud"] = "another-service" }), false},
		{"no audience", testSecret, base(func(c jwt.MapClaims) { delete(c, "aud") }), false},
		{"an audience list naming it", testSecret, base(func(c jwt.MapClaims) { c["aud"] = []string{"x", "tagcount"} }), true},
	}
	for _, tc := range cases {
		_, err := a.Verify(signed(t, tc.secret, tc.claims))
		if (err == nil) != tc.ok {
			t.Errorf("%s: Verify = %v; want ok %v", tc.name, err, tc.ok)
		}
		if err != nil && ErrorFor(err).Status != http.StatusUnauthorized {
			t.Errorf("%s: %v; want a 401", tc.name, err)
		}
	}

	// Without an issuer or audience configured, neither is asked for; the
	// lifetime still is.
	plain := Auth{Secret: testSecret}
	if _, err := plain.Verify(signed(t, testSecret, jwt.MapClaims{"sub": "1", "role": RoleAuthor, "exp": now.Add(time.Hour).Unix()})); err != nil {
		t.Errorf("a token without iss and aud, none configured: %v", err)
	}
	if _, err := plain.Verify(signed(t, testSecret, jwt.MapClaims{"sub": "1", "role": RoleAuthor, "exp": int64(99999999999)})); err == nil {
		t.Errorf("a token valid for three thousand years: accepted; want 401")
	}
	// IssueToken writes what Verify asks for, with the signing secret.
	tok, err := a.IssueToken(5, RoleAdmin, time.Hour)
	if p, verr := a.Verify(tok); err != nil || verr != nil || p.AuthorID != 5 || !p.IsAdmin() {
		t.Errorf("an issued token: %v %v %v; want admin 5", p, err, verr)
	}
}

func TestSecretsAreReadFromACommaSeparatedListFirstSigning(t *testing.T) {
	t.Parallel()
	a := AuthWithSecrets(" " + string(testSecret) + " ,the-old-secret-being-rotated-out,")
	if string(a.Secret) != string(testSecret) || len(a.OldSecrets) != 1 || string(a.OldSecrets[0]) != "the-old-secret-being-rotated-out" {
		t.Errorf("AuthWithSecrets = %q, %q; want the first to sign and the second to verify", a.Secret, a.OldSecrets)
	}
	if err := AuthWithSecrets(string(testSecret) + ",short").Check(); err == nil {
		t.Errorf("a short second secret: accepted; want an error")
	}
}
