-- +goose Up
-- One row per reconcile run: its report. state: running, done, failed.
CREATE TABLE reconcile_runs (
    id              BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    state           ENUM('running','done','failed') NOT NULL DEFAULT 'running',
    dry_run         TINYINT(1)      NOT NULL,
    only_tag_id     BIGINT UNSIGNED NULL,
    started_at      DATETIME(6)     NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    finished_at     DATETIME(6)     NULL,
    tags_scanned    BIGINT          NOT NULL DEFAULT 0,
    tags_drifted    BIGINT          NOT NULL DEFAULT 0,
    tags_corrected  BIGINT          NOT NULL DEFAULT 0,
    total_abs_drift BIGINT          NOT NULL DEFAULT 0,
    largest_drift   BIGINT          NOT NULL DEFAULT 0,
    largest_drift_tag_id BIGINT UNSIGNED NULL,
    error           VARCHAR(1000)   NULL,
    KEY reconcile_runs_state (state)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- +goose Down
DROP TABLE reconcile_runs;
