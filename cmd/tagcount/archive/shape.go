package archive

import (
	"math"
	"math/rand/v2"
	"slices"
	"strconv"

	"github.com/tagcount/tagcount/cmd/tagcount/tagmix"
	"github.com/tagcount/tagcount/counter"
	"github.com/tagcount/tagcount/counter/tags"
	"github.com/tagcount/tagcount/drafts"
)

// How many tags of each kind a work carries, from the archive's public
// figures (2012 and 2017), chosen so a work has about 10.2 tags on
// average (ratings, warnings and categories are tagmix's shares).
var (
	// Probability of 0, 1, 2, ... tags of a kind.
	relationshipCounts = []float64{0.25, 0.45, 0.20, 0.10}                         // mean 1.15
	characterCounts    = []float64{0.12, 0.28, 0.30, 0.18, 0.12}                   // mean 1.90
	freeformCounts     = []float64{0.10, 0.15, 0.17, 0.16, 0.14, 0.12, 0.09, 0.07} // mean 3.16
)

// Vocabulary shares of the open tag types (fandoms, relationships,
// characters, free-form tags) in the tags a build makes: free-form tags are
// most of the archive's tags, most of them used once.
const (
	tagsPerWork       = 0.86
	fandomShare       = 0.03
	relationshipShare = 0.15
	characterShare    = 0.12
	// zipfExponent is the Zipf exponent of the open vocabularies, as the load
	// generator's default: a few tags are huge and most are tiny.
	zipfExponent = 1.1
	// synonymEvery makes one tag in synonymEvery of each open vocabulary a
	// synonym of the canonical tag synonymOffset ranks before it (a rank that
	// is never itself a synonym, so synonyms never chain).
	synonymEvery  = 20
	synonymOffset = 7
	// Shares of works: registered-only (the rest are public) and hidden by
	// a moderator (of either visibility).
	registeredShare = 0.22
	hiddenShare     = 0.02
	bodyChars       = 200
)

// vocab is one open tag type's vocabulary: ranks 0..size-1, named
// "<Prefix> <rank>" as the load generator names them (so its authors use
// the build's tags), with ids first..first+size-1 in rank order.
type vocab struct {
	typ, prefix string
	first, size int64
}

func (v vocab) id(rank int64) int64 { return v.first + rank }

// synonymOf returns the canonical tag of rank, or 0 when rank is canonical.
func (v vocab) synonymOf(rank int64) int64 {
	if rank%synonymEvery == synonymOffset {
		return v.id(rank - synonymOffset)
	}
	return 0
}

// shape is the tag vocabulary of a build of n works: the fixed tags (ids
// 1..17, in drafts' order) and the four open vocabularies after them, sized
// so the build has about 0.86 tags per work.
type shape struct {
	fixed                   map[string]int64 // "<type>\x00<name>" → id
	fixedTags               []tagRow
	fandom, rel, char, free vocab
	tags                    int64 // total
}

type tagRow struct {
	id        int64
	typ, name string
	synonymOf int64
}

func newShape(works int) *shape {
	s := &shape{fixed: map[string]int64{}}
	id := int64(1)
	for _, f := range []struct {
		typ   string
		names []string
	}{{tags.TypeRating, drafts.Ratings}, {tags.TypeWarning, drafts.Warnings}, {tags.TypeCategory, drafts.Categories}} {
		for _, n := range f.names {
			s.fixed[f.typ+"\x00"+n] = id
			s.fixedTags = append(s.fixedTags, tagRow{id: id, typ: f.typ, name: n})
			id++
		}
	}
	open := max(int64(math.Round(tagsPerWork*float64(works)))-id+1, 4)
	sizes := []int64{
		max(int64(fandomShare*float64(open)), 1),
		max(int64(relationshipShare*float64(open)), 1),
		max(int64(characterShare*float64(open)), 1),
	}
	sizes = append(sizes, max(open-sizes[0]-sizes[1]-sizes[2], 1))
	for i, v := range []*vocab{&s.fandom, &s.rel, &s.char, &s.free} {
		*v = vocab{typ: []string{tags.TypeFandom, tags.TypeRelationship, tags.TypeCharacter, tags.TypeFreeform}[i],
			prefix: []string{"Fandom", "Relationship", "Character", "Freeform"}[i], first: id, size: sizes[i]}
		id += sizes[i]
	}
	s.tags = id - 1
	return s
}

// vocabs are the open vocabularies in id order.
func (s *shape) vocabs() []vocab { return []vocab{s.fandom, s.rel, s.char, s.free} }

// canonical returns the tag a work using id is filed under.
func (s *shape) canonical(id int64) int64 {
	for _, v := range s.vocabs() {
		if id >= v.first && id < v.first+v.size {
			if c := v.synonymOf(id - v.first); c != 0 {
				return c
			}
		}
	}
	return id
}

// work is one generated work: its tags as the author listed them (ids and
// the JSON block), who may see it.
type work struct {
	tags       []int64
	block      drafts.Tags
	registered bool
	hidden     bool
	bodyAt     int
}

// visibility is the work's visibility as works and drafts store it.
func (w work) visibility() string {
	if w.registered {
		return drafts.VisibilityRegistered
	}
	return drafts.VisibilityPublic
}

// weight is how much the work counts: for logged-in readers unless
// hidden, for everyone if also public (as poster's weight).
func (w work) weight() counter.Sum {
	switch {
	case w.hidden:
		return counter.Sum{}
	case w.registered:
		return counter.Sum{Count: 1}
	}
	return counter.Sum{Count: 1, Public: 1}
}

// sampler draws works of a shape from one random source: a chunk's works
// depend only on the seed and the chunk, so a resumed build regenerates
// the chunks it already loaded exactly.
type sampler struct {
	s                       *shape
	r                       *rand.Rand
	fandom, rel, char, free *rand.Zipf
}

func newSampler(s *shape, seed uint64, chunk int) *sampler {
	r := rand.New(rand.NewPCG(seed, uint64(chunk)))
	z := func(v vocab) *rand.Zipf { return rand.NewZipf(r, zipfExponent, 1, uint64(v.size-1)) }
	return &sampler{s: s, r: r, fandom: z(s.fandom), rel: z(s.rel), char: z(s.char), free: z(s.free)}
}

// next draws a work.
func (g *sampler) next() work {
	r := g.r
	var w work
	fixed := func(typ, name string) string {
		w.tags = append(w.tags, g.s.fixed[typ+"\x00"+name])
		return name
	}
	w.block.Rating = fixed(tags.TypeRating, tagmix.Pick(r, tagmix.Ratings))
	switch u := r.Float64(); {
	case u < 2.0/3:
		w.block.Warnings = []string{fixed(tags.TypeWarning, "No Archive Warnings Apply")}
	case u < 2.0/3+0.18:
		w.block.Warnings = []string{fixed(tags.TypeWarning, "Creator Chose Not To Use Archive Warnings")}
	default:
		for n := 1 + tagmix.PickCount(r, []float64{0.7, 0.3}); len(w.block.Warnings) < n; {
			if name := tagmix.Pick(r, tagmix.OtherWarnings); !slices.Contains(w.block.Warnings, name) {
				w.block.Warnings = append(w.block.Warnings, fixed(tags.TypeWarning, name))
			}
		}
	}
	if r.Float64() < 0.7 {
		w.block.Categories = []string{fixed(tags.TypeCategory, tagmix.Pick(r, tagmix.Categories))}
		if name := tagmix.Pick(r, tagmix.Categories); r.Float64() < 0.15 && !slices.Contains(w.block.Categories, name) {
			w.block.Categories = append(w.block.Categories, fixed(tags.TypeCategory, name))
		}
	}
	nf := 1
	if r.Float64() < 0.2 {
		nf = 2
	}
	w.block.Fandoms = g.draw(&w, g.s.fandom, g.fandom, nf)
	w.block.Relationships = g.draw(&w, g.s.rel, g.rel, tagmix.PickCount(r, relationshipCounts))
	w.block.Characters = g.draw(&w, g.s.char, g.char, tagmix.PickCount(r, characterCounts))
	w.block.Freeforms = g.draw(&w, g.s.free, g.free, tagmix.PickCount(r, freeformCounts))
	w.registered = r.Float64() < registeredShare
	w.hidden = r.Float64() < hiddenShare
	w.bodyAt = r.IntN(len(bodyText) - bodyChars)
	return w
}

// draw adds up to n distinct tags of v to w and returns their names.
func (g *sampler) draw(w *work, v vocab, z *rand.Zipf, n int) []string {
	var names []string
	for tries := 0; len(names) < n && tries < 8*n; tries++ {
		rank := int64(z.Uint64())
		id := v.id(rank)
		if slices.Contains(w.tags, id) {
			continue
		}
		w.tags = append(w.tags, id)
		names = append(names, v.prefix+" "+strconv.FormatInt(rank, 10))
	}
	return names
}

// filters returns the canonical tags of tags, each once, in order.
func (s *shape) filters(tags []int64) []int64 {
	out := make([]int64, 0, len(tags))
	for _, t := range tags {
		if c := s.canonical(t); !slices.Contains(out, c) {
			out = append(out, c)
		}
	}
	return out
}

// bodyText is the shared text works' bodies are cut from: different works
// get different bodies without generating text per work. It has no tab,
// newline or backslash, so it needs no escaping in a bulk load.
var bodyText = func() string {
	words := []string{"the", "archive", "keeps", "every", "work", "its", "authors", "post", "and", "counts", "how",
		"many", "works", "use", "each", "tag", "she", "wrote", "late", "into", "night", "while", "rain", "fell"}
	r := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, 0, 8192)
	for len(b) < 8000 {
		b = append(b, words[r.IntN(len(words))]...)
		b = append(b, ' ')
	}
	return string(b)
}()
