-- +goose Up
-- Tags are identified by (type, name_key); name_key is the case-folded
-- name so uniqueness is case-insensitive without relying on a collation
-- that differs between MariaDB and MySQL.
CREATE TABLE tags (
    id         BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    type       VARCHAR(16)     NOT NULL,
    name       VARCHAR(100)    NOT NULL,
    name_key   VARCHAR(100)    CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    created_at DATETIME(6)     NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    UNIQUE KEY tags_type_name (type, name_key)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- A draft holds what the author typed. state says whether a post of it is
-- owed (queued), done (posted) or gave up (failed). version increments on
-- every content change; a post job carries the version it was made for.
CREATE TABLE drafts (
    id             BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    author_id      BIGINT UNSIGNED NOT NULL,
    title          VARCHAR(255)    NOT NULL,
    body           MEDIUMTEXT      NOT NULL,
    tags           JSON            NOT NULL,
    state          ENUM('draft','queued','posted','failed') NOT NULL DEFAULT 'draft',
    work_id        BIGINT UNSIGNED NULL,
    version        INT UNSIGNED    NOT NULL DEFAULT 1,
    delete_requested TINYINT(1)    NOT NULL DEFAULT 0,
    queued_at      DATETIME(6)     NULL,
    error          VARCHAR(1000)   NULL,
    created_at     DATETIME(6)     NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    updated_at     DATETIME(6)     NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    KEY drafts_author (author_id),
    KEY drafts_work (work_id),
    KEY drafts_state_queued (state, queued_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- A posted work. draft_id is unique: one draft makes at most one work.
CREATE TABLE works (
    id         BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    draft_id   BIGINT UNSIGNED NOT NULL,
    author_id  BIGINT UNSIGNED NOT NULL,
    title      VARCHAR(255)    NOT NULL,
    body       MEDIUMTEXT      NOT NULL,
    version    INT UNSIGNED    NOT NULL,
    posted_at  DATETIME(6)     NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    updated_at DATETIME(6)     NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    UNIQUE KEY works_draft (draft_id),
    KEY works_author (author_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- One row per (work, tag). position keeps the order the author listed.
CREATE TABLE taggings (
    work_id  BIGINT UNSIGNED NOT NULL,
    tag_id   BIGINT UNSIGNED NOT NULL,
    position SMALLINT UNSIGNED NOT NULL,
    PRIMARY KEY (work_id, tag_id),
    KEY taggings_tag (tag_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- The stored use count of a tag. Kept apart from tags so that nothing on
-- the new posting path ever updates a row other authors also update.
CREATE TABLE tag_counts (
    tag_id     BIGINT UNSIGNED NOT NULL PRIMARY KEY,
    count      BIGINT          NOT NULL DEFAULT 0,
    updated_at DATETIME(6)     NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- The outbox: one row per tag delta, written in the posting transaction and
-- deleted by the counter in the transaction that adds its delta.
CREATE TABLE tag_events (
    id         BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    tag_id     BIGINT UNSIGNED NOT NULL,
    delta      INT             NOT NULL,
    work_id    BIGINT UNSIGNED NOT NULL,
    created_at DATETIME(6)     NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    KEY tag_events_tag (tag_id),
    KEY tag_events_created (created_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- +goose Down
DROP TABLE tag_events;
DROP TABLE tag_counts;
DROP TABLE taggings;
DROP TABLE works;
DROP TABLE drafts;
DROP TABLE tags;
