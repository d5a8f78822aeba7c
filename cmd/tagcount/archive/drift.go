package archive

import (
	"context"
	"database/sql"
	"math/rand/v2"

	"github.com/tagcount/tagcount/counter"
	"github.com/tagcount/tagcount/migrations"
)

// Drift says how the stored counts of a build are wrong, the way the
// archive's had drifted for years: many small tags off by a few (both
// ways, some without a tag_counts row at all), some medium tags off by up to
// 1 %, a few large tags off by 0.1 %, and the filter counts of some of them
// too. Zero fields take DefaultDrift's; a negative share or number means
// none.
type Drift struct {
	// SmallShare is the share of small tags (1–999 uses) whose stored
	// numbers are off, by 1..SmallMax either way; 0 means 0.05.
	SmallShare float64
	// SmallMax bounds a small tag's drift; 0 means 3.
	SmallMax int
	// MissingShare is the share of the drifted small tags that have no
	// tag_counts row at all; 0 means 0.1.
	MissingShare float64
	// MediumShare is the share of medium tags (1,000–39,999 uses) off by up
	// to 1 %; 0 means 0.1.
	MediumShare float64
	// LargeTags is how many large tags (40,000 uses and more) are off by
	// 0.1 %; 0 means 3.
	LargeTags int
	// FilterShare is the share of drifted canonical tags whose filter
	// numbers are off too; 0 means 0.5.
	FilterShare float64
}

// orNone returns def when v is zero, 0 when v is negative (none), else v.
func orNone[T int | float64](v, def T) T {
	switch {
	case v == 0:
		return def
	case v < 0:
		return 0
	}
	return v
}

// DefaultDrift returns the drift a build injects where Drift's fields are
// zero.
func DefaultDrift() Drift {
	return Drift{SmallShare: 0.05, SmallMax: 3, MissingShare: 0.1, MediumShare: 0.1, LargeTags: 3, FilterShare: 0.5}
}

func (d Drift) withDefaults() Drift {
	def := DefaultDrift()
	return Drift{SmallShare: orNone(d.SmallShare, def.SmallShare), SmallMax: orNone(d.SmallMax, def.SmallMax),
		MissingShare: orNone(d.MissingShare, def.MissingShare), MediumShare: orNone(d.MediumShare, def.MediumShare),
		LargeTags: orNone(d.LargeTags, def.LargeTags), FilterShare: orNone(d.FilterShare, def.FilterShare)}
}

// Injected is one drifted tag of a build's manifest: how its stored numbers
// were made wrong. Drift is, number by number, the true value less the
// stored one (positive: stored too low), as the reconcile computes it.
type Injected struct {
	TagID      int64
	Kind       string // small, medium or large
	RowMissing bool   // no tag_counts row at all
	Drift      counter.Sum
}

// stored is a tag's stored numbers in a build.
type stored struct {
	tag     int64
	sum     counter.Sum
	missing bool
}

// drifted returns the stored numbers of every tag that has a number
// (truth by tag id, 1-based) and the drift injected into them. r decides,
// tag by tag in id order, so one seed makes one manifest.
func (d Drift) drifted(r *rand.Rand, truth []counter.Sum, canonical func(int64) bool) ([]stored, []Injected) {
	var out []stored
	var manifest []Injected
	large := 0
	// The size tiers' bounds are the counter's defaults (docs/design.md).
	mediumFrom, largeFrom := counter.DefaultTiers().MediumFrom, counter.DefaultTiers().LargeFrom
	for id := int64(1); id < int64(len(truth)); id++ {
		t := truth[id]
		if t.IsZero() {
			continue
		}
		st := stored{tag: id, sum: t}
		uses := max(t.Count, t.Filter)
		var kind string
		var most int64
		switch {
		case uses >= largeFrom && large < d.LargeTags && r.Float64() < 0.5:
			kind, most = "large", max(uses/1000, 1)
			large++
		case uses >= mediumFrom && uses < largeFrom && r.Float64() < d.MediumShare:
			kind, most = "medium", max(uses/100, 1)
		case uses < mediumFrom && r.Float64() < d.SmallShare:
			kind, most = "small", int64(d.SmallMax)
		}
		if kind != "" {
			st.sum = d.offset(r, t, most, canonical(id))
			if kind == "small" && r.Float64() < d.MissingShare {
				st.sum, st.missing = counter.Sum{}, true
			}
			if drift := t.Sub(st.sum); !drift.IsZero() {
				manifest = append(manifest, Injected{TagID: id, Kind: kind, RowMissing: st.missing, Drift: drift})
			}
		}
		if !st.missing {
			out = append(out, st)
		}
	}
	return out, manifest
}

// offset returns t with its count (and, half the time, its public count)
// off by 1..most either way, never below 0, and its filter numbers
// likewise for a canonical tag one time in 1/FilterShare.
func (d Drift) offset(r *rand.Rand, t counter.Sum, most int64, canonical bool) counter.Sum {
	off := func(v int64) int64 {
		by := 1 + r.Int64N(most)
		if r.IntN(2) == 0 {
			return v + by
		}
		return max(v-by, 0)
	}
	s := t
	s.Count = off(t.Count)
	if r.IntN(2) == 0 {
		s.Public = off(t.Public)
	}
	if canonical && t.Filter > 0 && r.Float64() < d.FilterShare {
		s.Filter = off(t.Filter)
		if r.IntN(2) == 0 {
			s.PublicFilter = off(t.PublicFilter)
		}
	}
	return s
}

// Manifest returns the drift a build injected, by tag id ascending. It
// returns the database's error (a database no build wrote has no
// archive_drift table).
func Manifest(ctx context.Context, q migrations.Querier) ([]Injected, error) {
	return migrations.Collect(ctx, q, func(rows *sql.Rows) (in Injected, err error) {
		err = rows.Scan(&in.TagID, &in.Kind, &in.RowMissing, &in.Drift.Count, &in.Drift.Public, &in.Drift.Filter, &in.Drift.PublicFilter)
		return in, err
	}, "SELECT tag_id, kind, row_missing, drift, public_drift, filter_drift, public_filter_drift FROM archive_drift ORDER BY tag_id")
}
