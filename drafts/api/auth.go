package api

import (
	"context"
	"errors"
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

// Auth verifies HS256 bearer tokens signed with Secret.
type Auth struct {
	Secret []byte
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
		return Principal{}, Unauthorized("the bearer token is invalid or expired")
	}
	id, err := strconv.ParseInt(c.Subject, 10, 64)
	if err != nil || id <= 0 {
		return Principal{}, Unauthorized("the token's subject is not a positive author id")
	}
	if c.Role != RoleAuthor && c.Role != RoleAdmin {
		return Principal{}, Unauthorized("the token's role is not author or admin")
	}
	return Principal{AuthorID: id, Role: c.Role}, nil
}

type principalKey struct{}

// PrincipalFrom returns the principal Require stored in ctx.
func PrincipalFrom(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}

// WithPrincipal returns ctx carrying p.
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// Require wraps next so it runs only with a valid bearer token (401
// otherwise) and, when admin is true, only for an admin (403 otherwise).
func (a Auth) Require(admin bool, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := r.Header.Get("Authorization")
		tok, ok := strings.CutPrefix(h, "Bearer ")
		if !ok || strings.TrimSpace(tok) == "" {
			WriteError(w, r, Unauthorized("missing bearer token"))
			return
		}
		p, err := a.Verify(strings.TrimSpace(tok))
		if err != nil {
			WriteError(w, r, err)
			return
		}
		if admin && !p.IsAdmin() {
			WriteError(w, r, Forbidden("this route needs the admin role"))
			return
		}
		next.ServeHTTP(w, r.WithContext(WithPrincipal(r.Context(), p)))
	})
}

// PathID parses the path value name as a positive integer id, or returns a
// 404 (a malformed id names nothing that exists).
func PathID(r *http.Request, name string) (int64, error) {
	id, err := strconv.ParseInt(r.PathValue(name), 10, 64)
	if err != nil || id <= 0 {
		return 0, NotFound(name)
	}
	return id, nil
}
