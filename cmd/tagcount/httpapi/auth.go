package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Roles a token may carry.
const (
	RoleAuthor = "author"
	RoleAdmin  = "admin"
)

// Principal is who a request acts for.
type Principal struct {
	AuthorID int64
	Role     string
}

// IsAdmin reports whether p may use the admin routes.
func (p Principal) IsAdmin() bool { return p.Role == RoleAdmin }

type claims struct {
	Role string `json:"role"`
	jwt.RegisteredClaims
}

// UnmarshalJSON refuses a time claim written as a string: RFC 7519 makes
// exp, nbf and iat numbers, and jwt's NumericDate would otherwise read
// "exp": "99999999999" as a number.
func (c *claims) UnmarshalJSON(b []byte) error {
	var times struct {
		Exp json.RawMessage `json:"exp"`
		Nbf json.RawMessage `json:"nbf"`
		Iat json.RawMessage `json:"iat"`
	}
	if err := json.Unmarshal(b, &times); err != nil {
		return err
	}
	for name, raw := range map[string]json.RawMessage{"exp": times.Exp, "nbf": times.Nbf, "iat": times.Iat} {
		if bytes.HasPrefix(bytes.TrimSpace(raw), []byte(`"`)) {
			return fmt.Errorf("claim %s is a string, not a number", name)
		}
	}
	type plain claims // without this method
	return json.Unmarshal(b, (*plain)(c))
}

// MinSecretLen is the shortest secret the API accepts: an HS256 key shorter
// than the hash (32 bytes) is weaker than the signature it makes, and a
// short one can be found by trying.
const MinSecretLen = 32

// Auth verifies HS256 bearer tokens signed with Secret.
type Auth struct {
	Secret []byte
}

// Check returns an error naming TAGCOUNT_AUTH_SECRET when the secret is
// shorter than MinSecretLen bytes, nil when the API may start with it.
func (a Auth) Check() error {
	if len(a.Secret) < MinSecretLen {
		return fmt.Errorf("TAGCOUNT_AUTH_SECRET (or --auth-secret) must be at least %d bytes, not %d; generate one with `openssl rand -hex 32`",
			MinSecretLen, len(a.Secret))
	}
	return nil
}

// IssueToken returns an HS256 token for author with role, valid for ttl.
func (a Auth) IssueToken(authorID int64, role string, ttl time.Duration) (string, error) {
	if len(a.Secret) == 0 {
		return "", errors.New("auth: empty secret")
	}
	now := time.Now()
	c := claims{Role: role, RegisteredClaims: jwt.RegisteredClaims{
		Subject:   strconv.FormatInt(authorID, 10),
		IssuedAt:  jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
	}}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(a.Secret)
}

// Verify parses a token and returns its principal, or a 401 *Error.
func (a Auth) Verify(token string) (Principal, error) {
	var c claims
	_, err := jwt.ParseWithClaims(token, &c, func(*jwt.Token) (any, error) { return a.Secret, nil },
		jwt.WithValidMethods([]string{"HS256"}), jwt.WithExpirationRequired())
	if err != nil {
		return Principal{}, unauthorized("the bearer token is invalid or expired")
	}
	id, err := strconv.ParseInt(c.Subject, 10, 64)
	if err != nil || id <= 0 {
		return Principal{}, unauthorized("the token's subject is not a positive author id")
	}
	if c.Role != RoleAuthor && c.Role != RoleAdmin {
		return Principal{}, unauthorized("the token's role is not author or admin")
	}
	return Principal{AuthorID: id, Role: c.Role}, nil
}

type principalKey struct{}

// principalFrom returns the principal requireAuth stored in ctx.
func principalFrom(ctx context.Context) Principal {
	p, _ := ctx.Value(principalKey{}).(Principal)
	return p
}

// authorID is the id of the author a request acts for.
func authorID(r *http.Request) int64 { return principalFrom(r.Context()).AuthorID }

// bearerToken returns the token of an Authorization header; the scheme's
// name is case-insensitive (RFC 9110, section 11.1).
func bearerToken(h string) (string, bool) {
	scheme, tok, _ := strings.Cut(strings.TrimSpace(h), " ")
	tok = strings.TrimSpace(tok)
	return tok, strings.EqualFold(scheme, "Bearer") && tok != ""
}

// requireAuth wraps next so it runs only with a valid bearer token (401
// otherwise) and, when admin is true, only for an admin (403 otherwise). A
// request without a valid token counts against its client address's rate
// limit, so guessing tokens is throttled like any other abuse.
func (s *server) requireAuth(admin bool, next http.Handler) http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		tok, ok := bearerToken(r.Header.Get("Authorization"))
		var p Principal
		var err error = unauthorized("missing bearer token")
		if ok {
			p, err = s.auth.Verify(tok)
		}
		if err != nil {
			if lerr := s.limited(r, classAnonymous, s.limiter.clientAddr(r)); lerr != nil {
				return lerr
			}
			return err
		}
		if admin && !p.IsAdmin() {
			return forbidden("this route needs the admin role")
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, p)))
		return nil
	})
}
