package drafts

import (
	"context"
	"net/http"
	"time"

	"github.com/tagcount/tagcount/drafts/api"
)

// PostResult says what a post, edit or delete of a work did. Async results
// are answered 202: the work changes shortly, in a background job.
type PostResult struct {
	Async  bool   `json:"-"`
	State  string `json:"state"`
	Path   string `json:"path"`
	WorkID int64  `json:"work_id,omitempty"`
}

// Work is a posted work as authors read it.
type Work struct {
	ID        int64     `json:"id"`
	DraftID   int64     `json:"draft_id"`
	AuthorID  int64     `json:"author_id"`
	Title     string    `json:"title"`
	Body      string    `json:"body"`
	Tags      Tags      `json:"tags"`
	PostedAt  time.Time `json:"posted_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Poster turns drafts into works. It is implemented by package poster; every
// method returns a 404 *api.Error for another author's draft or work.
type Poster interface {
	PostDraft(ctx context.Context, authorID, draftID int64) (PostResult, error)
	FindWorkByID(ctx context.Context, authorID, workID int64) (Work, error)
	UpdateWork(ctx context.Context, authorID, workID int64, c Content) (PostResult, error)
	DeleteWork(ctx context.Context, authorID, workID int64) (PostResult, error)
}

// Handlers serves the authors' API of API.md. Mount them behind
// api.Auth.Require; they read the author from the request context.
type Handlers struct {
	Store  *Store
	Poster Poster
}

type draftResponse struct {
	ID        int64     `json:"id"`
	AuthorID  int64     `json:"author_id"`
	Title     string    `json:"title"`
	Body      string    `json:"body"`
	Tags      Tags      `json:"tags"`
	State     string    `json:"state"`
	WorkID    *int64    `json:"work_id"`
	Version   int64     `json:"version"`
	Error     string    `json:"error,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

func toResponse(d Draft) draftResponse {
	r := draftResponse{ID: d.ID, AuthorID: d.AuthorID, Title: d.Content.Title, Body: d.Content.Body, Tags: d.Content.Tags,
		State: d.State, Version: d.Version, Error: d.Error, CreatedAt: d.CreatedAt, UpdatedAt: d.UpdatedAt}
	if d.WorkID != 0 {
		w := d.WorkID
		r.WorkID = &w
	}
	return r
}

func author(r *http.Request) int64 {
	p, _ := api.PrincipalFrom(r.Context())
	return p.AuthorID
}

func decodeContent(w http.ResponseWriter, r *http.Request) (Content, error) {
	var c Content
	if err := api.Decode(w, r, api.DefaultBodyLimit, &c); err != nil {
		return Content{}, err
	}
	return c, c.Validate()
}

// HandleCreateDraft serves POST /v1/drafts.
func (h *Handlers) HandleCreateDraft() http.Handler {
	return api.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		c, err := decodeContent(w, r)
		if err != nil {
			return err
		}
		d, err := h.Store.CreateDraft(r.Context(), author(r), c)
		if err != nil {
			return err
		}
		api.Encode(w, http.StatusCreated, toResponse(d))
		return nil
	})
}

// HandleGetDraft serves GET /v1/drafts/{id}.
func (h *Handlers) HandleGetDraft() http.Handler {
	return api.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		id, err := api.PathID(r, "id")
		if err != nil {
			return err
		}
		d, err := h.Store.FindDraftByID(r.Context(), author(r), id)
		if err != nil {
			return err
		}
		api.Encode(w, http.StatusOK, toResponse(d))
		return nil
	})
}

// HandleReplaceDraft serves PUT /v1/drafts/{id}.
func (h *Handlers) HandleReplaceDraft() http.Handler {
	return api.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		id, err := api.PathID(r, "id")
		if err != nil {
			return err
		}
		c, err := decodeContent(w, r)
		if err != nil {
			return err
		}
		d, err := h.Store.ReplaceDraft(r.Context(), author(r), id, c)
		if err != nil {
			return err
		}
		api.Encode(w, http.StatusOK, toResponse(d))
		return nil
	})
}

// HandleDeleteDraft serves DELETE /v1/drafts/{id}.
func (h *Handlers) HandleDeleteDraft() http.Handler {
	return api.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		id, err := api.PathID(r, "id")
		if err != nil {
			return err
		}
		if err := h.Store.DeleteDraft(r.Context(), author(r), id); err != nil {
			return err
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	})
}

// HandlePostDraft serves POST /v1/drafts/{id}/post: 202 when the work is
// posted by a background job, 201 when it was posted in the request, 200 when
// the draft was already posted.
func (h *Handlers) HandlePostDraft() http.Handler {
	return api.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		id, err := api.PathID(r, "id")
		if err != nil {
			return err
		}
		res, err := h.Poster.PostDraft(r.Context(), author(r), id)
		if err != nil {
			return err
		}
		status := http.StatusCreated
		switch {
		case res.Async:
			status = http.StatusAccepted
		case res.State == StatePosted && res.Path == "":
			status = http.StatusOK // already posted before this request
		}
		api.Encode(w, status, res)
		return nil
	})
}

// HandleGetWork serves GET /v1/works/{id}.
func (h *Handlers) HandleGetWork() http.Handler {
	return api.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		id, err := api.PathID(r, "id")
		if err != nil {
			return err
		}
		wk, err := h.Poster.FindWorkByID(r.Context(), author(r), id)
		if err != nil {
			return err
		}
		api.Encode(w, http.StatusOK, wk)
		return nil
	})
}

// HandleUpdateWork serves PUT /v1/works/{id}: 202 (job) or 200 (in request).
func (h *Handlers) HandleUpdateWork() http.Handler {
	return api.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		id, err := api.PathID(r, "id")
		if err != nil {
			return err
		}
		c, err := decodeContent(w, r)
		if err != nil {
			return err
		}
		res, err := h.Poster.UpdateWork(r.Context(), author(r), id, c)
		if err != nil {
			return err
		}
		status := http.StatusOK
		if res.Async {
			status = http.StatusAccepted
		}
		api.Encode(w, status, res)
		return nil
	})
}

// HandleDeleteWork serves DELETE /v1/works/{id}: 202 (job) or 204 (in request).
func (h *Handlers) HandleDeleteWork() http.Handler {
	return api.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		id, err := api.PathID(r, "id")
		if err != nil {
			return err
		}
		res, err := h.Poster.DeleteWork(r.Context(), author(r), id)
		if err != nil {
			return err
		}
		if res.Async {
			api.Encode(w, http.StatusAccepted, res)
			return nil
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	})
}
