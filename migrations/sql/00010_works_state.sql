-- +goose Up
-- A work's state (hidden, visibility) by id, narrow: the reconcile's
-- snapshot and the recount probe one work per tagging and filing, about
-- twenty million probes at a million works, and the clustered rows carry
-- each work's title and body (289 MiB at a million works, well past a
-- 128 MiB buffer pool). This index holds the three columns only (17.5 MiB
-- at a million works), so those probes stay in memory. UNIQUE since id is.
ALTER TABLE works ADD UNIQUE KEY works_state (id, hidden, visibility), ALGORITHM=INPLACE, LOCK=NONE;

-- +goose Down
ALTER TABLE works DROP KEY works_state;
