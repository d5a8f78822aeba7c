-- +goose Up
-- Tag identity is the normalised key of drafts.NameKey (NFKC and case
-- folding may make a key longer than its name: 700 characters keep the
-- unique index within InnoDB's 3,072 bytes, (16 + 700) * 4). A synonym
-- points at its canonical tag; a canonical tag has synonym_of NULL. The
-- keys of existing tags are recomputed by `tagcount wrangle rekey`.
ALTER TABLE tags MODIFY name_key VARCHAR(700) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
                 ADD COLUMN synonym_of BIGINT UNSIGNED NULL AFTER name_key,
                 ADD KEY tags_synonym (synonym_of);

-- filter_count: posted works a logged-in reader can see that are filed
-- under the tag (they use it or one of its synonyms), each once;
-- public_filter_count: those anyone can see. Until now every tag was its
-- own canonical tag, so they equal count and public_count.
ALTER TABLE tag_counts ADD COLUMN filter_count BIGINT NOT NULL DEFAULT 0 AFTER public_count,
                       ADD COLUMN public_filter_count BIGINT NOT NULL DEFAULT 0 AFTER filter_count;
UPDATE tag_counts SET filter_count = count, public_filter_count = public_count;
ALTER TABLE tag_events ADD COLUMN filter_delta INT NOT NULL DEFAULT 0 AFTER public_delta,
                       ADD COLUMN public_filter_delta INT NOT NULL DEFAULT 0 AFTER filter_delta;
UPDATE tag_events SET filter_delta = delta, public_filter_delta = public_delta;

-- The canonical tags a posted work is filed under (those of its tags), the
-- works' side of the filter counts. Written by the posting transaction and
-- the wrangling job, both under the work's draft lock.
CREATE TABLE work_filters (
    work_id BIGINT UNSIGNED NOT NULL,
    tag_id  BIGINT UNSIGNED NOT NULL,
    PRIMARY KEY (work_id, tag_id),
    KEY work_filters_tag (tag_id, work_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
INSERT INTO work_filters (work_id, tag_id) SELECT DISTINCT work_id, tag_id FROM taggings;

-- A wrangling job re-files the works of a tag after it became a synonym
-- (synonym_of: the canonical tag) or stopped being one (synonym_of NULL).
-- canonical_id is the canonical tag whose filter the works enter (a
-- synonym made) or leave (undone). after_work_id is its cursor: the works
-- up to it are done.
CREATE TABLE wrangling_jobs (
    id             BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    tag_id         BIGINT UNSIGNED NOT NULL,
    synonym_of     BIGINT UNSIGNED NULL,
    canonical_id   BIGINT UNSIGNED NOT NULL,
    state          ENUM('running','done','superseded') NOT NULL DEFAULT 'running',
    after_work_id  BIGINT UNSIGNED NOT NULL DEFAULT 0,
    works_examined BIGINT          NOT NULL DEFAULT 0,
    filter_changes BIGINT          NOT NULL DEFAULT 0,
    rows_written   BIGINT          NOT NULL DEFAULT 0,
    max_rows_tx    INT             NOT NULL DEFAULT 0,
    created_at     DATETIME(6)     NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    updated_at     DATETIME(6)     NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
    finished_at    DATETIME(6)     NULL,
    KEY wrangling_jobs_state (state),
    KEY wrangling_jobs_tag (tag_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- Reconcile checks and corrects the filter numbers too.
ALTER TABLE reconcile_corrections
    ADD COLUMN stored_filter        BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN true_filter          BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN filter_drift         BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN stored_public_filter BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN true_public_filter   BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN public_filter_drift  BIGINT NOT NULL DEFAULT 0;
ALTER TABLE reconcile_runs
    ADD COLUMN total_abs_filter_drift BIGINT NOT NULL DEFAULT 0 AFTER total_abs_public_drift,
    ADD COLUMN total_abs_public_filter_drift BIGINT NOT NULL DEFAULT 0 AFTER total_abs_filter_drift;

-- +goose Down
ALTER TABLE reconcile_runs DROP COLUMN total_abs_public_filter_drift, DROP COLUMN total_abs_filter_drift;
ALTER TABLE reconcile_corrections DROP COLUMN public_filter_drift, DROP COLUMN true_public_filter,
    DROP COLUMN stored_public_filter, DROP COLUMN filter_drift, DROP COLUMN true_filter, DROP COLUMN stored_filter;
DROP TABLE wrangling_jobs;
DROP TABLE work_filters;
ALTER TABLE tag_events DROP COLUMN public_filter_delta, DROP COLUMN filter_delta;
ALTER TABLE tag_counts DROP COLUMN public_filter_count, DROP COLUMN filter_count;
-- The previous code's key is the lower-cased name, which fits the old
-- column: keys made by the new rule (longer, or "<key>#<id>") do not.
UPDATE tags SET name_key = LOWER(name);
ALTER TABLE tags DROP KEY tags_synonym, DROP COLUMN synonym_of,
                 MODIFY name_key VARCHAR(100) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL;
