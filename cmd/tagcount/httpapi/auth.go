package httpapi

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

// requireAuth wraps next so it runs only with a valid bearer token (401
// otherwise) and, when admin is true, only for an admin (403 otherwise).
func (s *server) requireAuth(admin bool, next http.Handler) http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		h := r.Header.Get("Authorization")
		tok, ok := strings.CutPrefix(h, "Bearer ")
		if !ok || strings.TrimSpace(tok) == "" {
			return unauthorized("missing bearer token")
		}
		p, err := s.auth.Verify(strings.TrimSpace(tok))
		if err != nil {
			return err
		}
		if admin && !p.IsAdmin() {
			return forbidden("this route needs the admin role")
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, p)))
		return nil
	})
}
