-- +goose Up
-- The counter's switches, shared by every counter process: paused (apply
-- nothing; posting goes on and the outbox grows), and a catch-up rate that
-- caps the outbox rows applied per second after a resume.
CREATE TABLE counter_control (
    id                  TINYINT UNSIGNED NOT NULL PRIMARY KEY,
    paused              TINYINT(1)       NOT NULL DEFAULT 0,
    catch_up_per_second INT UNSIGNED     NULL,
    backlog_at_resume   BIGINT           NULL,
    changed_at          DATETIME(6)      NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
INSERT INTO counter_control (id) VALUES (1);

-- How far the count-change stream has published tag_counts changes.
CREATE TABLE counter_stream (
    id              TINYINT UNSIGNED NOT NULL PRIMARY KEY,
    published_until DATETIME(6)      NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
INSERT INTO counter_stream (id, published_until) VALUES (1, '1970-01-01 00:00:01');

-- +goose Down
DROP TABLE counter_stream;
DROP TABLE counter_control;
