-- +goose Up
-- A guarded rollout plan of the new-path flag: its steps (rollout
-- percentages), each held for hold_ms while the guards hold. current_step
-- is the step the flag is at or going to; window_from is when that step's
-- window started, NULL until the flag is confirmed at its percentage (a
-- runner that stops in between sets it again: the same step, not a
-- repeat). active is 1 while the plan runs or is paused, so one plan at a
-- time is a unique key, not a convention.
CREATE TABLE rollout_plans (
    id            BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    flag          VARCHAR(100)    NOT NULL,
    state         ENUM('running','paused','done','rolled_back','aborted') NOT NULL DEFAULT 'running',
    active        TINYINT AS (IF(state IN ('running','paused'), 1, NULL)) STORED,
    hold_ms       BIGINT          NOT NULL,
    current_step  INT             NOT NULL DEFAULT 0,
    percent       INT             NOT NULL DEFAULT 0,
    window_from   DATETIME(6)     NULL,
    backlog_from  BIGINT          NULL,
    evaluations   INT             NOT NULL DEFAULT 0,
    guards        JSON            NULL,
    evaluated_at  DATETIME(6)     NULL,
    failed_guard  VARCHAR(64)     NULL,
    reason        VARCHAR(2000)   NULL,
    started_by    VARCHAR(255)    NOT NULL,
    created_at    DATETIME(6)     NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    ended_at      DATETIME(6)     NULL,
    UNIQUE KEY rollout_plans_active (active)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- A plan's steps: entered when the flag was confirmed at the percentage,
-- passed when its window ended with every guard held.
CREATE TABLE rollout_steps (
    plan_id    BIGINT UNSIGNED NOT NULL,
    idx        INT             NOT NULL,
    percent    INT             NOT NULL,
    entered_at DATETIME(6)     NULL,
    passed_at  DATETIME(6)     NULL,
    PRIMARY KEY (plan_id, idx)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- Every change of a plan, with who made it, when and why.
CREATE TABLE rollout_decisions (
    id       BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    plan_id  BIGINT UNSIGNED NOT NULL,
    at       DATETIME(6)     NOT NULL,
    actor    VARCHAR(255)    NOT NULL,
    kind     VARCHAR(32)     NOT NULL,
    step     INT             NOT NULL,
    percent  INT             NOT NULL,
    detail   VARCHAR(4000)   NOT NULL DEFAULT '',
    KEY rollout_decisions_plan (plan_id, id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- One row per Post, written by the API process that answered it, so every
-- replica's posts are measured: the path it took, whether it failed, how
-- long the answer took, and (new path) when its small tags' counts were
-- first seen to include it. Kept for an hour.
CREATE TABLE rollout_samples (
    id           BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    path         ENUM('legacy','new') NOT NULL,
    ok           TINYINT(1)      NOT NULL,
    draft_id     BIGINT UNSIGNED NOT NULL,
    requested_at DATETIME(6)     NOT NULL,
    answer_us    BIGINT UNSIGNED NOT NULL,
    counted_at   DATETIME(6)     NULL,
    KEY rollout_samples_path (path, requested_at),
    KEY rollout_samples_requested (requested_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- +goose Down
DROP TABLE rollout_samples;
DROP TABLE rollout_decisions;
DROP TABLE rollout_steps;
DROP TABLE rollout_plans;
