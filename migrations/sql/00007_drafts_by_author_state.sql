-- +goose Up
-- An author's drafts by state, counted from the index alone: the unposted
-- drafts the drafts quota bounds, and the queued posts that decide which
-- job queue an author's next post goes to. It starts with author_id, so it
-- serves every look-up drafts_author served.
ALTER TABLE drafts ADD KEY drafts_author_state (author_id, state, work_id), DROP KEY drafts_author;

-- +goose Down
ALTER TABLE drafts ADD KEY drafts_author (author_id), DROP KEY drafts_author_state;
