package loadgen

import (
	"fmt"
	"math"
	"math/rand/v2"
)

// zipf draws ranks 0..n-1 with P(k) ∝ (v+k)^-s, by the rejection-inversion
// method of W. Hörmann and G. Derflinger, as math/rand/v2's Zipf does. Unlike
// rand.Zipf it is immutable and takes the random source per draw, so one
// sampler per vocabulary serves every work's own source.
type zipf struct {
	imax, v, q, s           float64
	oneMinusQ, oneMinusQInv float64
	hxm, hx0MinusHxm        float64
}

// newZipf returns a sampler over n ranks with exponent s > 1 and v >= 1.
func newZipf(n int, s, v float64) (*zipf, error) {
	if n < 1 {
		return nil, fmt.Errorf("zipf: vocabulary size %d < 1", n)
	}
	if !(s > 1) || v < 1 {
		return nil, fmt.Errorf("zipf: need exponent > 1 and v >= 1, got s=%g v=%g", s, v)
	}
	z := &zipf{imax: float64(n - 1), v: v, q: s}
	z.oneMinusQ = 1 - z.q
	z.oneMinusQInv = 1 / z.oneMinusQ
	z.hxm = z.h(z.imax + 0.5)
	z.hx0MinusHxm = z.h(0.5) - math.Exp(math.Log(z.v)*(-z.q)) - z.hxm
	z.s = 1 - z.hinv(z.h(1.5)-math.Exp(-z.q*math.Log(z.v+1)))
	return z, nil
}

func (z *zipf) h(x float64) float64 {
	return math.Exp(z.oneMinusQ*math.Log(z.v+x)) * z.oneMinusQInv
}

func (z *zipf) hinv(x float64) float64 {
	return math.Exp(z.oneMinusQInv*math.Log(z.oneMinusQ*x)) - z.v
}

// rank draws a rank in [0, n).
func (z *zipf) rank(r *rand.Rand) int {
	for {
		ur := z.hxm + r.Float64()*z.hx0MinusHxm
		x := z.hinv(ur)
		k := math.Floor(x + 0.5)
		if k-x <= z.s || ur >= z.h(k+0.5)-math.Exp(-math.Log(k+z.v)*z.q) {
			if k < 0 {
				k = 0
			}
			if k > z.imax {
				k = z.imax
			}
			return int(k)
		}
	}
}
