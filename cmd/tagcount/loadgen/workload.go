package loadgen

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/tagcount/tagcount/cmd/tagcount/tagmix"
	"github.com/tagcount/tagcount/drafts"
	"github.com/tagcount/tagcount/migrations/loop"
)

// Vocabulary sizes the open tag vocabularies; tags within each are drawn by
// Zipf-distributed rank, so a few are huge and most are tiny, as in a real
// archive. Names are generated from the rank ("Fandom 123").
type Vocabulary struct {
	Fandoms       int
	Characters    int
	Relationships int
	Freeforms     int
	// Exponent is the Zipf exponent s (> 1): P(rank k) ∝ (1+k)^-s.
	Exponent float64
}

// DefaultVocabulary is an archive-sized vocabulary.
var DefaultVocabulary = Vocabulary{Fandoms: 10_000, Characters: 200_000, Relationships: 200_000, Freeforms: 1_000_000, Exponent: 1.1}

// Later is what happens to a work after it is posted.
type Later int

// What happens to a posted work later.
const (
	LaterNone   Later = iota
	LaterEdit         // PUT /v1/works/{id}: tags added and removed
	LaterDelete       // DELETE /v1/works/{id}
)

func (l Later) String() string {
	switch l {
	case LaterEdit:
		return "edit"
	case LaterDelete:
		return "delete"
	}
	return "none"
}

// WorkloadOptions configure a Workload. Zero values take DefaultWorkload's.
type WorkloadOptions struct {
	Seed    uint64
	Authors int // author ids AuthorBase+1..AuthorBase+Authors; default 1000
	// AuthorBase offsets the author ids, so workloads driven side by side
	// (a scenario's classes) have authors of their own.
	AuthorBase int64
	Vocabulary
	// EditShare and DeleteShare are the shares of posted works later edited
	// or deleted (defaults 0.10 and 0.05; a negative value means 0).
	EditShare, DeleteShare float64
	// BodyChars is the length of a work's body (default 1000).
	BodyChars int
	// ProbeEvery makes every ProbeEvery-th work carry a fresh tag of its own
	// (a freeform nobody else uses), whose count is then watched until it
	// shows the work (default 20; negative: no probes).
	ProbeEvery int
	// ProbePrefix makes probe tag names unique to a run (default "probe").
	ProbePrefix string
	// LaterDelayMax bounds the uniform delay between a work being posted and
	// its later edit or delete (default 1s).
	LaterDelayMax time.Duration
}

// Workload generates the works of a load run. It is immutable and safe for
// concurrent use.
type Workload struct {
	o                       WorkloadOptions
	fandom, char, rel, free *zipf
	text                    string
}

// Work is one work slot of a workload: what its author writes, edits, posts
// and later does with it.
type Work struct {
	Slot     int64
	AuthorID int64
	Index    int64          // the author's n-th work, from 0
	Draft    drafts.Content // as first saved
	Posted   drafts.Content // as edited once and then posted
	Later    Later
	Edit     drafts.Content // the later edit of the posted work, when Later == LaterEdit
	Delay    time.Duration  // between posted and the later action
	Probe    string         // a freeform only this work uses; "" if not sampled
}

// DefaultWorkload holds WorkloadOptions' defaults: what each zero field
// means.
var DefaultWorkload = WorkloadOptions{Authors: 1000, Vocabulary: DefaultVocabulary, EditShare: 0.10, DeleteShare: 0.05,
	BodyChars: 1000, ProbeEvery: 20, ProbePrefix: "probe", LaterDelayMax: time.Second}

// WithDefaults returns o with every zero field set to DefaultWorkload's
// (a non-positive BodyChars too): the one place they are applied.
func (o WorkloadOptions) WithDefaults() WorkloadOptions {
	d := DefaultWorkload
	o.Authors = cmp.Or(o.Authors, d.Authors)
	v := &o.Vocabulary
	v.Fandoms = cmp.Or(v.Fandoms, d.Fandoms)
	v.Characters = cmp.Or(v.Characters, d.Characters)
	v.Relationships = cmp.Or(v.Relationships, d.Relationships)
	v.Freeforms = cmp.Or(v.Freeforms, d.Freeforms)
	v.Exponent = cmp.Or(v.Exponent, d.Exponent)
	o.EditShare = cmp.Or(o.EditShare, d.EditShare)
	o.DeleteShare = cmp.Or(o.DeleteShare, d.DeleteShare)
	o.BodyChars = loop.OrDefault(o.BodyChars, d.BodyChars)
	o.ProbeEvery = cmp.Or(o.ProbeEvery, d.ProbeEvery)
	o.ProbePrefix = cmp.Or(o.ProbePrefix, d.ProbePrefix)
	o.LaterDelayMax = cmp.Or(o.LaterDelayMax, d.LaterDelayMax)
	return o
}

// NewWorkload returns the workload of o with its defaults, or an error
// naming a bad option.
func NewWorkload(o WorkloadOptions) (*Workload, error) {
	o = o.WithDefaults()
	v := o.Vocabulary
	if o.Authors < 0 || o.AuthorBase < 0 {
		return nil, fmt.Errorf("loadgen: authors %d < 1 or author base %d < 0", o.Authors, o.AuthorBase)
	}
	o.EditShare, o.DeleteShare = max(o.EditShare, 0), max(o.DeleteShare, 0)
	if o.EditShare+o.DeleteShare > 1 {
		return nil, fmt.Errorf("loadgen: edit share %g + delete share %g > 1", o.EditShare, o.DeleteShare)
	}
	if o.BodyChars > drafts.MaxBody {
		return nil, fmt.Errorf("loadgen: body of %d characters exceeds %d", o.BodyChars, drafts.MaxBody)
	}
	w := &Workload{o: o}
	var err error
	for _, z := range []struct {
		dst **zipf
		n   int
	}{{&w.fandom, v.Fandoms}, {&w.char, v.Characters}, {&w.rel, v.Relationships}, {&w.free, v.Freeforms}} {
		if *z.dst, err = newZipf(z.n, v.Exponent, 1); err != nil {
			return nil, fmt.Errorf("loadgen: %w", err)
		}
	}
	w.text = bodyText(2*o.BodyChars + 1024)
	return w, nil
}

// Options returns the workload's options with defaults filled in.
func (w *Workload) Options() WorkloadOptions { return w.o }

// rngFor is the random source of one work: derived from the seed, the
// author and the author's work index, so a work never depends on which
// other works were generated before it.
func (w *Workload) rngFor(author, index int64) *rand.Rand {
	return rand.New(rand.NewPCG(splitmix(w.o.Seed^splitmix(uint64(author))), splitmix(uint64(index)+0x9e3779b97f4a7c15)))
}

func splitmix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// Work returns work slot slot (>= 0).
func (w *Workload) Work(slot int64) Work {
	a := int64(w.o.Authors)
	wk := Work{Slot: slot, AuthorID: w.o.AuthorBase + slot%a + 1, Index: slot / a}
	r := w.rngFor(wk.AuthorID, wk.Index)
	if w.o.ProbeEvery > 0 && slot%int64(w.o.ProbeEvery) == 0 {
		wk.Probe = w.o.ProbePrefix + " " + strconv.FormatInt(slot, 10)
	}
	title := "Work " + strconv.FormatInt(wk.AuthorID, 10) + "-" + strconv.FormatInt(wk.Index, 10)
	tags := w.tags(r)
	if wk.Probe != "" {
		tags.Freeforms = append(tags.Freeforms, wk.Probe)
	}
	wk.Draft = drafts.Content{Title: title, Body: w.body(r), Tags: tags}

	// The one edit before posting: new text, and sometimes a tag changed.
	posted := wk.Draft
	posted.Body = w.body(r)
	posted.Tags = cloneTags(tags)
	if r.Float64() < 0.3 {
		posted.Tags.Freeforms = w.addDistinct(r, posted.Tags.Freeforms, "Freeform ", w.free, 1)
	}
	wk.Posted = posted

	switch u := r.Float64(); {
	case u < w.o.EditShare:
		wk.Later = LaterEdit
		wk.Edit = wk.Posted
		wk.Edit.Tags = w.editTags(r, wk.Posted.Tags, wk.Probe)
	case u < w.o.EditShare+w.o.DeleteShare:
		wk.Later = LaterDelete
	}
	if wk.Later != LaterNone {
		wk.Delay = time.Duration(r.Int64N(int64(w.o.LaterDelayMax) + 1))
	}
	return wk
}

// Shares of the archive, from what it learned in production (ratings,
// warnings and categories are tagmix's shares).
var (
	// Number of tags of a kind, by probability of 0, 1, 2, ...
	relationshipCounts = []float64{0.25, 0.45, 0.20, 0.10}
	characterCounts    = []float64{0.12, 0.28, 0.30, 0.18, 0.12}             // mean 1.9
	freeformCounts     = []float64{0.12, 0.18, 0.18, 0.16, 0.14, 0.12, 0.10} // mean 2.78
)

func (w *Workload) tags(r *rand.Rand) drafts.Tags {
	var t drafts.Tags
	t.Rating = tagmix.Pick(r, tagmix.Ratings)
	switch u := r.Float64(); {
	case u < 2.0/3:
		t.Warnings = []string{"No Archive Warnings Apply"}
	case u < 2.0/3+0.18:
		t.Warnings = []string{"Creator Chose Not To Use Archive Warnings"}
	default:
		n := 1 + tagmix.PickCount(r, []float64{0.7, 0.3})
		t.Warnings = make([]string, 0, n)
		for len(t.Warnings) < n {
			t.Warnings = appendUnique(t.Warnings, tagmix.Pick(r, tagmix.OtherWarnings))
		}
	}
	if r.Float64() < 0.7 {
		t.Categories = []string{tagmix.Pick(r, tagmix.Categories)}
		if r.Float64() < 0.15 {
			t.Categories = appendUnique(t.Categories, tagmix.Pick(r, tagmix.Categories))
		}
	}
	nf := 1
	if r.Float64() < 0.2 {
		nf = 2
	}
	t.Fandoms = w.addDistinct(r, nil, "Fandom ", w.fandom, nf)
	t.Relationships = w.addDistinct(r, nil, "Relationship ", w.rel, tagmix.PickCount(r, relationshipCounts))
	t.Characters = w.addDistinct(r, nil, "Character ", w.char, tagmix.PickCount(r, characterCounts))
	t.Freeforms = w.addDistinct(r, nil, "Freeform ", w.free, tagmix.PickCount(r, freeformCounts))
	return t
}

// editTags is a later edit: one or two freeforms added, then one or two of
// the original relationships, characters or freeforms removed, keeping the
// rating, the warnings, the fandoms and the probe.
func (w *Workload) editTags(r *rand.Rand, t drafts.Tags, probe string) drafts.Tags {
	e := cloneTags(t)
	e.Freeforms = w.addDistinct(r, e.Freeforms, "Freeform ", w.free, 1+r.IntN(2))
	original := map[string]bool{}
	for _, l := range [][]string{t.Relationships, t.Characters, t.Freeforms} {
		for _, n := range l {
			original[n] = n != probe
		}
	}
	for range 1 + r.IntN(2) {
		lists := []*[]string{&e.Relationships, &e.Characters, &e.Freeforms}
		l := lists[r.IntN(len(lists))]
		var candidates []int
		for i, n := range *l {
			if original[n] {
				candidates = append(candidates, i)
			}
		}
		if len(candidates) == 0 {
			continue
		}
		i := candidates[r.IntN(len(candidates))]
		*l = append((*l)[:i:i], (*l)[i+1:]...)
	}
	return e
}

// addDistinct appends n tags drawn from z that are not already in list.
func (w *Workload) addDistinct(r *rand.Rand, list []string, prefix string, z *zipf, n int) []string {
	for added, tries := 0, 0; added < n && tries < 8*n; tries++ {
		name := prefix + strconv.Itoa(z.rank(r))
		before := len(list)
		if list = appendUnique(list, name); len(list) > before {
			added++
		}
	}
	return list
}

func appendUnique(list []string, name string) []string {
	for _, n := range list {
		if n == name {
			return list
		}
	}
	return append(list, name)
}

func cloneTags(t drafts.Tags) drafts.Tags {
	c := t
	c.Warnings = append([]string(nil), t.Warnings...)
	c.Categories = append([]string(nil), t.Categories...)
	c.Fandoms = append([]string(nil), t.Fandoms...)
	c.Relationships = append([]string(nil), t.Relationships...)
	c.Characters = append([]string(nil), t.Characters...)
	c.Freeforms = append([]string(nil), t.Freeforms...)
	return c
}

// body returns BodyChars characters of the shared text from a random offset:
// different works get different bodies without generating text per work.
func (w *Workload) body(r *rand.Rand) string {
	off := r.IntN(len(w.text) - w.o.BodyChars)
	return w.text[off : off+w.o.BodyChars]
}

func bodyText(n int) string {
	words := strings.Fields("the archive keeps every work its authors post and counts how many works use each tag " +
		"she wrote late into the night while the rain kept falling on the old library roof and nobody came")
	r := rand.New(rand.NewPCG(1, 2))
	var sb strings.Builder
	sb.Grow(n + 16)
	for sb.Len() < n {
		sb.WriteString(words[r.IntN(len(words))])
		if r.IntN(12) == 0 {
			sb.WriteString(".\n")
		} else {
			sb.WriteByte(' ')
		}
	}
	return sb.String()[:n]
}
