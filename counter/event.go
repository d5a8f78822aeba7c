package counter

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"
)

// Event is the announcement of one outbox row: tag_events.id, its tag and
// its delta. The row, not the message, is the truth; the consumer only uses
// TagID to route, tier and flush the tag.
type Event struct {
	ID    int64
	TagID int64
	Delta int32
	// Time is when the row was written, carried as the message's timestamp
	// (not in the value): a deferred tag is due an interval after it. Zero
	// means now.
	Time time.Time
	// WorkID is the work whose change wrote the row, as the writer knows it
	// (not carried in the message): what the poster looks the row's
	// request id up by.
	WorkID int64
	// RequestID names the client request whose change wrote the row, when
	// known, carried as the message's RequestIDHeader (not in the value), so
	// the counter's log line of the transaction that counts it names it too.
	RequestID string
}

// RequestIDHeader is the Kafka header of an announcement that carries its
// Event.RequestID.
const RequestIDHeader = "request-id"

// eventVersion is the first byte of every encoded event value.
const eventVersion byte = 1

// maxEventSize is the largest valid encoding: version byte, two uvarints of
// at most 9 bytes for positive int64s (the 10th byte is only needed for
// values >= 1<<63) and a zigzag varint of an int32 (at most 5 bytes).
const maxEventSize = 1 + 9 + 9 + 5

// ErrMalformedEvent is wrapped by every error DecodeEvent returns.
var ErrMalformedEvent = errors.New("malformed tag event")

// EncodeEvent returns the message value of e: version byte 1, then
// uvarint(ID), uvarint(TagID), zigzag varint(Delta). See docs/events.md.
func EncodeEvent(e Event) []byte {
	return AppendEvent(make([]byte, 0, maxEventSize), e)
}

// AppendEvent appends the encoding of e to dst and returns the result.
func AppendEvent(dst []byte, e Event) []byte {
	dst = append(dst, eventVersion)
	dst = binary.AppendUvarint(dst, uint64(e.ID))
	dst = binary.AppendUvarint(dst, uint64(e.TagID))
	return binary.AppendVarint(dst, int64(e.Delta))
}

// DecodeEvent parses a message value written by EncodeEvent. It returns an
// error wrapping ErrMalformedEvent for anything else: an empty value, an
// unknown version, a truncated, overflowing or non-minimal varint, an id or tag id that is
// not a positive int64, a delta outside int32, or trailing bytes. It never
// panics.
func DecodeEvent(b []byte) (Event, error) {
	if len(b) == 0 {
		return Event{}, fmt.Errorf("%w: empty value", ErrMalformedEvent)
	}
	if b[0] != eventVersion {
		return Event{}, fmt.Errorf("%w: unknown version %d", ErrMalformedEvent, b[0])
	}
	rest := b[1:]
	id, n := binary.Uvarint(rest)
	if !minimalVarint(rest, n) {
		return Event{}, fmt.Errorf("%w: bad event id varint", ErrMalformedEvent)
	}
	rest = rest[n:]
	tag, n := binary.Uvarint(rest)
	if !minimalVarint(rest, n) {
		return Event{}, fmt.Errorf("%w: bad tag id varint", ErrMalformedEvent)
	}
	rest = rest[n:]
	delta, n := binary.Varint(rest)
	if !minimalVarint(rest, n) {
		return Event{}, fmt.Errorf("%w: bad delta varint", ErrMalformedEvent)
	}
	rest = rest[n:]
	switch {
	case len(rest) != 0:
		return Event{}, fmt.Errorf("%w: %d trailing bytes", ErrMalformedEvent, len(rest))
	case id == 0 || id > math.MaxInt64:
		return Event{}, fmt.Errorf("%w: event id %d out of range", ErrMalformedEvent, id)
	case tag == 0 || tag > math.MaxInt64:
		return Event{}, fmt.Errorf("%w: tag id %d out of range", ErrMalformedEvent, tag)
	case delta < math.MinInt32 || delta > math.MaxInt32:
		return Event{}, fmt.Errorf("%w: delta %d out of range", ErrMalformedEvent, delta)
	}
	return Event{ID: int64(id), TagID: int64(tag), Delta: int32(delta)}, nil
}

// minimalVarint reports whether a varint read of n bytes from b succeeded
// and used the fewest bytes (no trailing zero groups), so every event has
// exactly one encoding.
func minimalVarint(b []byte, n int) bool {
	return n > 0 && (n == 1 || b[n-1] != 0)
}

// EventKey returns the message key of a tag's events: the tag id in decimal
// ASCII. The publisher's hash balancer maps equal keys to one partition, so
// every event of a tag is seen by one writer.
func EventKey(tagID int64) []byte {
	return strconv.AppendInt(make([]byte, 0, 20), tagID, 10)
}
