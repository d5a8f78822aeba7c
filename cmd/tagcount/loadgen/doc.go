// Package loadgen drives tagcount's real HTTP API the way the archive's web
// app does at a production-level posting load, and measures what a reader
// of the benchmark needs to compare the legacy and the new posting paths:
// completed posts/s, HTTP latencies, how long a post takes to become a work
// and to show up in a small tag's count, errors by kind, rows written to
// tag_counts per posted work, CPU and memory, the bare posting
// transaction's ceiling, and whether every count is exact at the end.
//
// A workload is a deterministic function of its seed: work slot k belongs
// to author k mod A + 1, and everything about it (tags, edits, what happens
// after posting) comes from a random source derived from the seed, the
// author and the author's work index. Two runs with the same seed — one per
// path — therefore send the same works, whatever the timing.
package loadgen
