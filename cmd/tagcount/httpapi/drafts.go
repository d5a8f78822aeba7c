package httpapi

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/tagcount/tagcount/drafts"
	"github.com/tagcount/tagcount/poster"
)

// contentJSON is the body of POST and PUT on drafts and works.
type contentJSON struct {
	Title      string      `json:"title"`
	Body       string      `json:"body"`
	Tags       drafts.Tags `json:"tags"`
	Visibility string      `json:"visibility,omitempty"`
}

func (c contentJSON) content() drafts.Content {
	return drafts.Content{Title: c.Title, Body: c.Body, Tags: c.Tags, Visibility: c.Visibility}
}

type draftJSON struct {
	ID         int64       `json:"id"`
	AuthorID   int64       `json:"author_id"`
	Title      string      `json:"title"`
	Body       string      `json:"body"`
	Tags       drafts.Tags `json:"tags"`
	Visibility string      `json:"visibility"`
	State      string      `json:"state"`
	WorkID     *int64      `json:"work_id"`
	Version    int64       `json:"version"`
	Error      string      `json:"error,omitempty"`
	CreatedAt  time.Time   `json:"created_at"`
	UpdatedAt  time.Time   `json:"updated_at"`
}

func newDraftJSON(d drafts.Draft) draftJSON {
	out := draftJSON{ID: d.ID, AuthorID: d.AuthorID, Title: d.Content.Title, Body: d.Content.Body,
		Tags: d.Content.Tags, Visibility: d.Content.Visibility, State: d.State, Version: d.Version, Error: d.Error,
		CreatedAt: d.CreatedAt, UpdatedAt: d.UpdatedAt}
	if d.WorkID != 0 {
		out.WorkID = &d.WorkID
	}
	return out
}

type workJSON struct {
	ID         int64       `json:"id"`
	DraftID    int64       `json:"draft_id"`
	AuthorID   int64       `json:"author_id"`
	Title      string      `json:"title"`
	Body       string      `json:"body"`
	Tags       drafts.Tags `json:"tags"`
	Visibility string      `json:"visibility"`
	Hidden     bool        `json:"hidden"`
	PostedAt   time.Time   `json:"posted_at"`
	UpdatedAt  time.Time   `json:"updated_at"`
}

// resultJSON says what a post, edit or delete did.
type resultJSON struct {
	State  string `json:"state"`
	Path   string `json:"path"`
	WorkID int64  `json:"work_id,omitempty"`
}

func newResultJSON(r poster.Result) resultJSON {
	return resultJSON{State: r.State, Path: r.Path, WorkID: r.WorkID}
}

// contentToSave reads a draft or work body. The domain call it goes to
// validates it and charges the author's new-tag quota (drafts.Store.Admit).
func (s *server) contentToSave(w http.ResponseWriter, r *http.Request) (drafts.Content, error) {
	var body contentJSON
	if err := decode(w, r, DefaultBodyLimit, &body); err != nil {
		return drafts.Content{}, err
	}
	return body.content(), nil
}

// handleCreateDraft serves POST /v1/drafts.
func (s *server) handleCreateDraft() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		c, err := s.contentToSave(w, r)
		if err != nil {
			return err
		}
		d, err := s.Drafts.CreateDraft(r.Context(), authorID(r), c)
		return reply(w, http.StatusCreated, d, err, newDraftJSON)
	})
}

// handleGetDraft serves GET /v1/drafts/{id}.
func (s *server) handleGetDraft() http.Handler {
	return s.handleID("draft", func(w http.ResponseWriter, r *http.Request, id int64) error {
		d, err := s.Drafts.FindDraftByID(r.Context(), authorID(r), id)
		return reply(w, http.StatusOK, d, err, newDraftJSON)
	})
}

// handleReplaceDraft serves PUT /v1/drafts/{id}.
func (s *server) handleReplaceDraft() http.Handler {
	return s.handleID("draft", func(w http.ResponseWriter, r *http.Request, id int64) error {
		c, err := s.contentToSave(w, r)
		if err != nil {
			return err
		}
		d, err := s.Drafts.ReplaceDraft(r.Context(), authorID(r), id, c)
		return reply(w, http.StatusOK, d, err, newDraftJSON)
	})
}

// handleDeleteDraft serves DELETE /v1/drafts/{id}.
func (s *server) handleDeleteDraft() http.Handler {
	return s.handleID("draft", func(w http.ResponseWriter, r *http.Request, id int64) error {
		if err := s.Drafts.DeleteDraft(r.Context(), authorID(r), id); err != nil {
			return err
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	})
}

// handlePostDraft serves POST /v1/drafts/{id}/post: 202 when the work is
// posted by a background job, 201 when it was posted in the request, 200 when
// the draft was already posted.
func (s *server) handlePostDraft() http.Handler {
	return s.handleID("draft", func(w http.ResponseWriter, r *http.Request, id int64) error {
		res, err := s.Poster.PostDraft(r.Context(), authorID(r), id)
		status := http.StatusCreated
		if res.State == drafts.StatePosted && res.Path == "" {
			status = http.StatusOK // already posted before this request
		}
		return replyResult(w, res, err, status)
	})
}

// replyResult answers with res, a change of a work: 202 when a background
// job carries it out, otherwise done (204 without a body); err, when set,
// is returned for the error shape instead.
func replyResult(w http.ResponseWriter, res poster.Result, err error, done int) error {
	switch {
	case err != nil:
		return err
	case res.Async:
		encode(w, http.StatusAccepted, newResultJSON(res))
	case done == http.StatusNoContent:
		w.WriteHeader(done)
	default:
		encode(w, done, newResultJSON(res))
	}
	return nil
}

// handleGetWork serves GET /v1/works/{id}.
func (s *server) handleGetWork() http.Handler {
	return s.handleID("work", func(w http.ResponseWriter, r *http.Request, id int64) error {
		wk, err := s.Poster.FindWorkByID(r.Context(), authorID(r), id)
		return reply(w, http.StatusOK, wk, err, newWorkJSON)
	})
}

func newWorkJSON(wk poster.Work) workJSON {
	return workJSON{ID: wk.ID, DraftID: wk.DraftID, AuthorID: wk.AuthorID, Title: wk.Title,
		Body: wk.Body, Tags: wk.Tags, Visibility: wk.Visibility, Hidden: wk.Hidden,
		PostedAt: wk.PostedAt, UpdatedAt: wk.UpdatedAt}
}

// handleUpdateWork serves PUT /v1/works/{id}: 202 (job) or 200 (in request).
func (s *server) handleUpdateWork() http.Handler {
	return s.handleID("work", func(w http.ResponseWriter, r *http.Request, id int64) error {
		c, err := s.contentToSave(w, r)
		if err != nil {
			return err
		}
		res, err := s.Poster.UpdateWork(r.Context(), authorID(r), id, c)
		return replyResult(w, res, err, http.StatusOK)
	})
}

// handleDeleteWork serves DELETE /v1/works/{id}: 202 (job) or 204 (in request).
func (s *server) handleDeleteWork() http.Handler {
	return s.handleID("work", func(w http.ResponseWriter, r *http.Request, id int64) error {
		res, err := s.Poster.DeleteWork(r.Context(), authorID(r), id)
		return replyResult(w, res, err, http.StatusNoContent)
	})
}

// ContentBody returns c as the body of POST and PUT on drafts and works,
// for clients of this API (the load generator): the one place that knows
// the request's field names. It returns json.Marshal's error, which
// strings and string slices never cause.
func ContentBody(c drafts.Content) ([]byte, error) {
	return json.Marshal(contentJSON{Title: c.Title, Body: c.Body, Tags: c.Tags, Visibility: c.Visibility})
}
