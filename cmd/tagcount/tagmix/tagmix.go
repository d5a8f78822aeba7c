// Package tagmix holds the archive's shares of ratings, warnings and
// categories, and the weighted draws over them, so the load generator and
// the archive builder shape works alike.
package tagmix

import "math/rand/v2"

// Shares of the archive's works, from its public figures (2012 and 2017):
// ratings, the warnings other than "No Archive Warnings Apply" and
// "Creator Chose Not To Use Archive Warnings", and categories.
var (
	Ratings = []Share{
		{"Teen And Up Audiences", 0.31}, {"General Audiences", 0.30}, {"Explicit", 0.18},
		{"Mature", 0.16}, {"Not Rated", 0.05},
	}
	OtherWarnings = []Share{
		{"Graphic Depictions Of Violence", 0.45}, {"Major Character Death", 0.30},
		{"Underage", 0.13}, {"Rape/Non-Con", 0.12},
	}
	Categories = []Share{
		{"M/M", 0.32}, {"F/M", 0.25}, {"Gen", 0.22}, {"F/F", 0.10}, {"Multi", 0.06}, {"Other", 0.05},
	}
)

// Share is a name and the share of draws that give it.
type Share struct {
	Name string
	W    float64
}

// Pick returns a name of ss drawn by share; the last one when the shares
// sum to less than the draw.
func Pick(r *rand.Rand, ss []Share) string {
	u := r.Float64()
	for _, s := range ss {
		if u < s.W {
			return s.Name
		}
		u -= s.W
	}
	return ss[len(ss)-1].Name
}

// PickCount returns an index of ps drawn with probability ps[i]; the last
// index when the probabilities sum to less than the draw.
func PickCount(r *rand.Rand, ps []float64) int {
	u := r.Float64()
	for i, p := range ps {
		if u < p {
			return i
		}
		u -= p
	}
	return len(ps) - 1
}
