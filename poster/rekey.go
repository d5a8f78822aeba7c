package poster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"unicode/utf8"

	"github.com/tagcount/tagcount/counter/tags"
)

// RekeyReport is what Rekey did.
type RekeyReport struct {
	Tags    int // tags read
	Rekeyed int // tags whose key changed
	// Jobs are the wrangling jobs that make the tags whose new key
	// collided synonyms of the oldest tag with that key.
	Jobs []Job
	// Skipped says, per tag id, why a tag was left as it was: a name with
	// no visible character or a key too long, or a tag that cannot become
	// a synonym (it has synonyms of its own).
	Skipped map[int64]string
}

// rekeyPage is how many tags one read of Rekey lists.
const rekeyPage = 1000

// tempKeyPrefix starts the key a changing tag holds between Rekey's two
// passes. No name may hold a control character, so no real key does.
const tempKeyPrefix = "\x00rekey:"

// Rekey gives every tag the key of tags.NameKey (tags keyed by an older
// rule keep their id and name). Tags whose new keys collide are one name
// now: the oldest (lowest id) keeps the key and stays canonical; each
// other keeps its name and its own count, takes the key "<key>#<id>", and
// is made a synonym of the oldest's canonical tag by the normal wrangling
// job, so the filter numbers move exactly. Running it again changes
// nothing that is already right. It returns a database error, with what
// was done so far.
func (p *Poster) Rekey(ctx context.Context) (RekeyReport, error) {
	rep := RekeyReport{Skipped: map[int64]string{}}
	groups, err := p.changedKeys(ctx, &rep)
	if err != nil {
		return rep, err
	}
	// First every changing tag leaves its key, so no new key is held by a
	// tag that is about to give it up.
	for _, g := range groups {
		for _, t := range g.changing {
			if err := tags.SetNameKey(ctx, p.cfg.DB, t.ID, tempKeyPrefix+strconv.FormatInt(t.ID, 10)); err != nil {
				return rep, fmt.Errorf("rekey tag %d: %w", t.ID, err)
			}
		}
	}
	for _, g := range groups {
		if err := p.rekeyGroup(ctx, g, &rep); err != nil {
			return rep, err
		}
	}
	return rep, nil
}

// keyGroup is the tags of one type whose names now have one key: those
// whose stored key differs (changing, ascending ids), and the tag already
// holding it, if any.
type keyGroup struct {
	typ, key string
	changing []tags.Row
}

// changedKeys reads every tag and returns the groups of tags whose key
// changes, in the order first seen.
func (p *Poster) changedKeys(ctx context.Context, rep *RekeyReport) ([]*keyGroup, error) {
	var groups []*keyGroup
	byKey := map[[2]string]*keyGroup{}
	for after := int64(0); ; {
		page, err := tags.List(ctx, p.cfg.DB, after, rekeyPage)
		if err != nil || len(page) == 0 {
			return groups, err
		}
		after = page[len(page)-1].ID
		for _, t := range page {
			rep.Tags++
			key := tags.NameKey(t.Name)
			switch {
			case key == "" || utf8.RuneCountInString(key) > tags.MaxNameKey:
				rep.Skipped[t.ID] = "its name has no visible character or is too long once normalised; rename it by hand"
				continue
			case key == t.Key:
				continue
			}
			g := byKey[[2]string{t.Type, key}]
			if g == nil {
				g = &keyGroup{typ: t.Type, key: key}
				byKey[[2]string{t.Type, key}] = g
				groups = append(groups, g)
			}
			g.changing = append(g.changing, t)
		}
	}
}

// rekeyGroup gives the tags of g their keys and makes every one but the
// oldest a synonym of the oldest's canonical tag.
func (p *Poster) rekeyGroup(ctx context.Context, g *keyGroup, rep *RekeyReport) error {
	members := g.changing
	holder, err := p.tagByKey(ctx, g.typ, g.key)
	if err != nil {
		return err
	}
	if holder != nil {
		members = append([]tags.Row{*holder}, members...)
		if members[1].ID < holder.ID {
			// An older tag takes the key from the one holding it.
			members[0], members[1] = members[1], members[0]
		}
	}
	oldest := members[0]
	// The others first: the holder, if not the oldest, gives the key up.
	for _, t := range append(slices.Clone(members[1:]), oldest) {
		key := g.key
		if t.ID != oldest.ID {
			if key, err = p.freeKey(ctx, g.typ, g.key+"#"+strconv.FormatInt(t.ID, 10)); err != nil {
				return err
			}
		}
		if t.Key == key {
			continue
		}
		if err := tags.SetNameKey(ctx, p.cfg.DB, t.ID, key); err != nil {
			return fmt.Errorf("rekey tag %d: %w", t.ID, err)
		}
		rep.Rekeyed++
	}
	canonical := oldest.ID
	if oldest.SynonymOf != 0 {
		canonical = oldest.SynonymOf
	}
	for _, t := range members[1:] {
		if t.SynonymOf == canonical || t.ID == canonical {
			continue
		}
		job, err := p.MakeSynonym(ctx, t.ID, canonical)
		switch {
		case errors.Is(err, ErrHasSynonyms):
			rep.Skipped[t.ID] = err.Error()
		case err != nil:
			return fmt.Errorf("make tag %d a synonym of tag %d: %w", t.ID, canonical, err)
		default:
			rep.Jobs = append(rep.Jobs, job)
		}
	}
	return nil
}

// tagByKey returns the tag of type typ holding key, or nil.
func (p *Poster) tagByKey(ctx context.Context, typ, key string) (*tags.Row, error) {
	t, ok, err := tags.ByKey(ctx, p.cfg.DB, typ, key)
	if err != nil || !ok {
		return nil, err
	}
	return &t, nil
}

// freeKey returns key, or key with '#' appended until no tag of type typ
// holds it.
func (p *Poster) freeKey(ctx context.Context, typ, key string) (string, error) {
	for {
		held, err := p.tagByKey(ctx, typ, key)
		if err != nil || held == nil {
			return key, err
		}
		key += "#"
	}
}
