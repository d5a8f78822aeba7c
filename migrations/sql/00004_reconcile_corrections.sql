-- +goose Up
-- What a reconcile run found, tag by tag: the stored numbers, the true
-- ones (read in one snapshot with the pending outbox deltas), the drift,
-- and whether (and when) the run corrected it.
CREATE TABLE reconcile_corrections (
    run_id         BIGINT UNSIGNED NOT NULL,
    tag_id         BIGINT UNSIGNED NOT NULL,
    stored_count   BIGINT          NOT NULL,
    true_count     BIGINT          NOT NULL,
    drift          BIGINT          NOT NULL,
    stored_public  BIGINT          NOT NULL,
    true_public    BIGINT          NOT NULL,
    public_drift   BIGINT          NOT NULL,
    corrected_at   DATETIME(6)     NULL,
    PRIMARY KEY (run_id, tag_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

ALTER TABLE reconcile_runs
    ADD COLUMN total_abs_public_drift BIGINT NOT NULL DEFAULT 0 AFTER total_abs_drift,
    ADD COLUMN negative_counts BIGINT NOT NULL DEFAULT 0 AFTER largest_drift_tag_id,
    ADD COLUMN scope VARCHAR(255) NULL AFTER only_tag_id;

-- +goose Down
ALTER TABLE reconcile_runs DROP COLUMN scope, DROP COLUMN negative_counts, DROP COLUMN total_abs_public_drift;
DROP TABLE reconcile_corrections;
