// Package counter turns tag-use events into tag counts.
//
// The posting transaction writes one tag_events row (the outbox) per tag
// delta and, after it commits, announces the rows on the Kafka topic
// tag-uses, keyed by tag id. The consumer here runs one writer per assigned
// partition; each writer batches events and applies a batch in one MySQL
// transaction that deletes the batch's outbox rows and adds their deltas to
// tag_counts, so a message is only ever a notification: a lost message is
// re-announced by the sweeper, a duplicate finds its row gone and adds
// nothing. Tags are flushed by size tier (small every batch, medium and large
// deferred), and the read path caches counts by the same tiers. The
// nightly reconcile (package counter/reconcile) finds and corrects drift.
//
// The package owns the tag_counts and tag_events tables (the tags table,
// tag names and the new-tag quota are package counter/tags'). Parts:
// WriteOutbox and BumpCounts (the
// two paths' count updates, inside the poster's transaction),
// EncodeEvent/DecodeEvent (the wire format), Publisher (announce after
// commit), Sweeper (re-announce what waited too long), Consumer (the
// writers), Reader (the count read
// path), StartEmbeddedBroker and EnsureTopic (Kafka for development and
// tests). See docs/counter.md for the design and docs/events.md for the
// wire format.
package counter
