-- +goose Up
-- The count-change log: one row per write of a tag_counts row, inserted in
-- the transaction of that write (counter.writeCounts is the only statement
-- pair that writes tag_counts). The count-change stream publishes the
-- tags of the rows it reads, then deletes exactly those rows: a row of a
-- transaction that has not committed yet is invisible to it, so it waits
-- for a later round instead of being passed over by a watermark. seq orders
-- the rows (a round reads the oldest first); created_at is when the write
-- was made, for the stream's lag (tagcount_count_stream_lag_seconds).
CREATE TABLE tag_count_changes (
    seq        BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    tag_id     BIGINT UNSIGNED NOT NULL,
    created_at DATETIME(6)     NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
-- Every tag once, so consumers learn what the old stream may have passed
-- over (a write committed late, or everything after it stalled). A full
-- scan of tag_counts, once, at the upgrade.
INSERT INTO tag_count_changes (tag_id) SELECT tag_id FROM tag_counts ORDER BY tag_id;
-- The old stream's watermark, and the index only its scan by time used
-- (every count write had to update it).
DROP TABLE counter_stream;
ALTER TABLE tag_counts DROP KEY tag_counts_updated;
-- +goose Down
ALTER TABLE tag_counts ADD KEY tag_counts_updated (updated_at);
-- The old stream starts from the beginning: it publishes every row once.
CREATE TABLE counter_stream (
    id              TINYINT UNSIGNED NOT NULL PRIMARY KEY,
    published_until DATETIME(6)      NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
INSERT INTO counter_stream (id, published_until) VALUES (1, '1970-01-01 00:00:01');
DROP TABLE tag_count_changes;
