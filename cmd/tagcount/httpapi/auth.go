package httpapi

import (
	"bytes"
	"cmp"
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

// DefaultMaxTokenLifetime is the longest a token may still be valid for
// when it is presented: a leaked token is of use for at most this long.
const DefaultMaxTokenLifetime = 30 * 24 * time.Hour

// Auth verifies HS256 bearer tokens. The zero values of the optional
// fields: no old secrets, DefaultMaxTokenLifetime, and no iss or aud asked
// for.
type Auth struct {
	// Secret signs the tokens IssueToken makes, and verifies.
	Secret []byte
	// OldSecrets also verify: secrets being rotated out, until the tokens
	// they signed expire.
	OldSecrets [][]byte
	// MaxLifetime bounds how far ahead a token's exp may be; a token valid
	// for longer is refused, whoever signed it.
	MaxLifetime time.Duration
	// Issuer and Audience, when set, are the iss a token must carry and a
	// value its aud must hold (IssueToken writes them).
	Issuer, Audience string
}

// AuthWithSecrets returns an Auth whose Secret is the first of a
// comma-separated list of secrets (--auth-secret) and whose OldSecrets are
// the rest; spaces around each and empty entries are dropped.
func AuthWithSecrets(list string) Auth {
	var a Auth
	for _, s := range strings.Split(list, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		if a.Secret == nil {
			a.Secret = []byte(s)
		} else {
			a.OldSecrets = append(a.OldSecrets, []byte(s))
		}
	}
	return a
}

// Check returns an error naming TAGCOUNT_AUTH_SECRET when a secret is
// shorter than MinSecretLen bytes, or MaxLifetime is negative; nil when the
// API may start with them.
func (a Auth) Check() error {
	for i, s := range append([][]byte{a.Secret}, a.OldSecrets...) {
		if len(s) < MinSecretLen {
			return fmt.Errorf("TAGCOUNT_AUTH_SECRET (or --auth-secret): secret %d of the list must be at least %d bytes, not %d; generate one with `openssl rand -hex 32`",
				i+1, MinSecretLen, len(s))
		}
	}
	if a.MaxLifetime < 0 {
		return fmt.Errorf("--max-token-lifetime must not be negative, not %v", a.MaxLifetime)
	}
	return nil
}

func (a Auth) maxLifetime() time.Duration { return cmp.Or(a.MaxLifetime, DefaultMaxTokenLifetime) }

// IssueToken returns an HS256 token for author with role, valid for ttl,
// signed with Secret and carrying Issuer and Audience when set. It fails
// with an empty secret.
func (a Auth) IssueToken(authorID int64, role string, ttl time.Duration) (string, error) {
	if len(a.Secret) == 0 {
		return "", errors.New("auth: empty secret")
	}
	now := time.Now()
	c := claims{Role: role, RegisteredClaims: jwt.RegisteredClaims{
		Subject:   strconv.FormatInt(authorID, 10),
		Issuer:    a.Issuer,
		IssuedAt:  jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
	}}
	if a.Audience != "" {
		c.Audience = jwt.ClaimStrings{a.Audience}
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(a.Secret)
}

// Verify parses a token and returns its principal, or a 401 *Error: a
// token no secret of a's signed, expired, valid for longer than
// MaxLifetime from now, or without the configured iss or aud.
func (a Auth) Verify(token string) (Principal, error) {
	opts := []jwt.ParserOption{jwt.WithValidMethods([]string{"HS256"}), jwt.WithExpirationRequired()}
	if a.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(a.Issuer))
	}
	if a.Audience != "" {
		opts = append(opts, jwt.WithAudience(a.Audience))
	}
	var c claims
	var err error
	// Each secret in turn: HS256 has no key id to pick one by, and a
	// token signed with another secret fails fast on its signature.
	for _, secret := range append([][]byte{a.Secret}, a.OldSecrets...) {
		c = claims{}
		_, err = jwt.ParseWithClaims(token, &c, func(*jwt.Token) (any, error) { return secret, nil }, opts...)
		if !errors.Is(err, jwt.ErrTokenSignatureInvalid) {
			break
		}
	}
	if err != nil {
		return Principal{}, unauthorized("the bearer token is invalid or expired")
	}
	if c.ExpiresAt.Time.After(time.Now().Add(a.maxLifetime())) {
		return Principal{}, unauthorized(fmt.Sprintf("the token's exp is further ahead than the longest lifetime allowed (%v)", a.maxLifetime()))
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
