package counter

import (
	"bytes"
	"errors"
	"math"
	"testing"
)

func TestEventEncodingRoundTrips(t *testing.T) {
	t.Parallel()
	for _, e := range []Event{
		{ID: 1, TagID: 1, Delta: 1},
		{ID: 123456789, TagID: 42, Delta: -1},
		{ID: math.MaxInt64, TagID: math.MaxInt64, Delta: math.MaxInt32},
		{ID: 7, TagID: 9, Delta: math.MinInt32},
		{ID: 7, TagID: 9, Delta: 0},
	} {
		b := EncodeEvent(e)
		if b[0] != 1 {
			t.Errorf("%+v: version byte %d, want 1", e, b[0])
		}
		if len(b) > maxEventSize {
			t.Errorf("%+v: %d bytes, more than maxEventSize %d", e, len(b), maxEventSize)
		}
		got, err := DecodeEvent(b)
		if err != nil || got != e {
			t.Errorf("DecodeEvent(EncodeEvent(%+v)) = %+v, %v", e, got, err)
		}
	}
	// The documented example of docs/events.md.
	if got := EncodeEvent(Event{ID: 300, TagID: 5, Delta: -1}); !bytes.Equal(got, []byte{0x01, 0xac, 0x02, 0x05, 0x01}) {
		t.Errorf("EncodeEvent(300, 5, -1) = % x, want 01 ac 02 05 01", got)
	}
	if got := string(EventKey(5)); got != "5" {
		t.Errorf("EventKey(5) = %q", got)
	}
}

func TestDecodeEventRejectsMalformedValues(t *testing.T) {
	t.Parallel()
	for name, b := range map[string][]byte{
		"empty":            nil,
		"unknown version":  {2, 1, 1, 2},
		"only version":     {1},
		"truncated id":     {1, 0x80},
		"missing delta":    {1, 1, 1},
		"trailing bytes":   {1, 1, 1, 2, 0},
		"zero id":          {1, 0, 1, 2},
		"zero tag":         {1, 1, 0, 2},
		"id over int64":    append([]byte{1}, append(bytes.Repeat([]byte{0xff}, 9), 0x01, 1, 2)...),
		"delta over int32": {1, 1, 1, 0x80, 0x80, 0x80, 0x80, 0x10},
		"overlong varint":  append([]byte{1}, bytes.Repeat([]byte{0x80}, 11)...),
		"json, not binary": []byte(`{"id":1}`),
	} {
		if e, err := DecodeEvent(b); err == nil || !errors.Is(err, ErrMalformedEvent) {
			t.Errorf("%s: DecodeEvent(% x) = %+v, %v; want ErrMalformedEvent", name, b, e, err)
		}
	}
}

func FuzzDecodeEvent(f *testing.F) {
	f.Add(EncodeEvent(Event{ID: 1, TagID: 2, Delta: 1}))
	f.Add(EncodeEvent(Event{ID: math.MaxInt64, TagID: 3, Delta: math.MinInt32}))
	f.Add([]byte{1, 0x80})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := DecodeEvent(b)
		if err != nil {
			return
		}
		// Whatever decodes re-encodes to the same bytes: the encoding is
		// canonical.
		if again := EncodeEvent(e); !bytes.Equal(again, b) {
			t.Fatalf("DecodeEvent(% x) = %+v, which encodes as % x", b, e, again)
		}
	})
}

func BenchmarkEncodeEvent(b *testing.B) {
	e := Event{ID: 123_456_789, TagID: 4_242, Delta: 1}
	buf := make([]byte, 0, maxEventSize)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendEvent(buf[:0], e)
	}
}

func BenchmarkDecodeEvent(b *testing.B) {
	v := EncodeEvent(Event{ID: 123_456_789, TagID: 4_242, Delta: 1})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeEvent(v); err != nil {
			b.Fatal(err)
		}
	}
}
