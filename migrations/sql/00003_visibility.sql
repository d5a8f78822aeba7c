-- +goose Up
-- Who may see a work: everyone (public) or logged-in readers (registered);
-- hidden works (by a moderator) count for nobody but stay their author's.
ALTER TABLE drafts ADD COLUMN visibility ENUM('public','registered') NOT NULL DEFAULT 'public' AFTER tags;
ALTER TABLE works  ADD COLUMN visibility ENUM('public','registered') NOT NULL DEFAULT 'public' AFTER body,
                   ADD COLUMN hidden TINYINT(1) NOT NULL DEFAULT 0 AFTER visibility;
-- count: posted works a logged-in reader can see (not hidden);
-- public_count: those anyone can see (public, not hidden). version grows
-- with every change of either, for the count-change stream's consumers.
ALTER TABLE tag_counts ADD COLUMN public_count BIGINT NOT NULL DEFAULT 0 AFTER count,
                       ADD COLUMN version BIGINT UNSIGNED NOT NULL DEFAULT 0 AFTER public_count,
                       ADD KEY tag_counts_updated (updated_at);
UPDATE tag_counts SET public_count = count, version = 1;
-- An outbox row carries both numbers' deltas.
ALTER TABLE tag_events ADD COLUMN public_delta INT NOT NULL DEFAULT 0 AFTER delta;
UPDATE tag_events SET public_delta = delta;

-- +goose Down
ALTER TABLE tag_events DROP COLUMN public_delta;
ALTER TABLE tag_counts DROP KEY tag_counts_updated, DROP COLUMN version, DROP COLUMN public_count;
ALTER TABLE works DROP COLUMN hidden, DROP COLUMN visibility;
ALTER TABLE drafts DROP COLUMN visibility;
