package main

import (
	"fmt"
	"math"
	"math/bits"
	"math/rand/v2"
	"strconv"
)

// The "random" section: samples drawn from a distribution per key, seeded, so that the
// same file gives the same items, byte for byte, on every platform and Go release. Only
// PCG's Uint64 is used (a specified algorithm); the float and the bounded integer made
// of it, the log and the exp are spawn's own, with every product rounded on its own.

// pcgStream is PCG's second seed word: fixed, so "seed" alone picks the sequence.
const pcgStream = 0x7370_6177_6e00_0001

const (
	distUniform = iota
	distLogUniform
	distRandInt
	distChoice
)

var distNames = []string{"uniform", "loguniform", "randint", "choice"}

// randomPlan is a read random search.
type randomPlan struct {
	off     int // where "random" was written
	samples int64
	seed    uint64
	dims    []randomDim
}

// randomDim is one key of the space: how to draw its value.
type randomDim struct {
	key  string
	dist int
	// uniform: lo + u·(hi-lo); loguniform: the same over the logs of the bounds, then
	// exp, kept within [min, max] against rounding.
	lo, span, min, max float64
	// randint: ilo + a draw below n.
	ilo int64
	n   uint64
	// choice: one field per value, as written.
	choices []field
	off     int
	at      where
}

// readRandom reads {"samples": N, "seed": S, "space": {...}} and checks every bound.
func (p *paramParser) readRandom(f *field) (*randomPlan, error) {
	r := &randomPlan{}
	if f == nil {
		return r, nil
	}
	r.off = f.off
	at := where{idx: atTop, key: "random"}
	if f.val[0] != '{' {
		return nil, p.errAt(f.off, at, `expected %s like {"samples": 20, "seed": 1, "space": {...}}, found %s`, p.objectWord(), p.kindOf(f.val))
	}
	fs, err := p.fields(&walker{b: p.data, i: f.off}, where{path: "random"}, nil)
	if err != nil {
		return nil, err
	}
	var samples, seed, space *field
	for i := range fs {
		g := &fs[i]
		switch g.key {
		case "samples":
			samples = g
		case "seed":
			seed = g
		case "space":
			space = g
		default:
			hint := `a random search has "samples", "seed" and "space"`
			if s := closest(g.key, []string{"samples", "seed", "space"}); s != "" {
				hint = fmt.Sprintf("did you mean %q?", s)
			}
			return nil, p.errAt(g.koff, g.at, "unknown key: %s", hint)
		}
	}
	switch {
	case samples == nil:
		return nil, p.errAt(f.off, at, `no "samples": say how many items to draw, e.g. "samples": 20`)
	case seed == nil:
		return nil, p.errAt(f.off, at, `no "seed": give a whole number, e.g. "seed": 1, so that the same file always draws the same items`)
	case space == nil:
		return nil, p.errAt(f.off, at, `no "space": give each key's distribution, e.g. "space": {"lr": {"loguniform": [1e-5, 0.1]}}`)
	}
	if r.samples, err = p.wholeNumber(*samples); err == nil && r.samples < 1 {
		err = p.errAt(samples.off, samples.at, "%d samples make no item: give at least 1", r.samples)
	}
	if err != nil {
		return nil, err
	}
	if r.seed, err = p.seed(*seed); err != nil {
		return nil, err
	}
	r.dims, err = p.space(space)
	return r, err
}

// wholeNumber is a JSON integer such as 20 (not 20.0 or 2e1).
func (p *paramParser) wholeNumber(f field) (int64, error) {
	n, err := strconv.ParseInt(string(f.val), 10, 64)
	if err != nil {
		return 0, p.errAt(f.off, f.at, "expected a whole number, found %s", p.valueText(f.val))
	}
	return n, nil
}

func (p *paramParser) seed(f field) (uint64, error) {
	if n, err := strconv.ParseUint(string(f.val), 10, 64); err == nil {
		return n, nil
	}
	n, err := p.wholeNumber(f)
	return uint64(n), err
}

// valueText shows a value in a message: short scalars as written, others by kind.
func (p *paramParser) valueText(v []byte) string {
	if len(v) > 0 && len(v) <= 40 && v[0] != '{' && v[0] != '[' {
		return string(v)
	}
	return p.kindOf(v)
}

func (p *paramParser) space(f *field) ([]randomDim, error) {
	if f.val[0] != '{' {
		return nil, p.errAt(f.off, f.at, `expected %s of keys to distributions, like {"lr": {"loguniform": [1e-5, 0.1]}}, found %s`,
			p.objectWord(), p.kindOf(f.val))
	}
	es, err := p.fields(&walker{b: p.data, i: f.off}, where{path: "random.space"}, nil)
	if err != nil {
		return nil, err
	}
	if len(es) == 0 {
		return nil, p.errAt(f.off, f.at, `the space is empty: give each key to draw, e.g. "lr": {"loguniform": [1e-5, 0.1]}`)
	}
	dims := make([]randomDim, 0, len(es))
	for _, e := range es {
		d, err := p.randomDim(e)
		if err != nil {
			return nil, err
		}
		dims = append(dims, d)
	}
	return dims, nil
}

// randomDim reads one key's distribution, such as {"uniform": [0, 0.5]}.
func (p *paramParser) randomDim(e field) (randomDim, error) {
	d := randomDim{key: e.key, off: e.off, at: e.at}
	if e.val[0] != '{' {
		return d, p.errAt(e.off, e.at, `expected one distribution like {"uniform": [0, 1]}, found %s: use uniform, loguniform, randint or choice`, p.kindOf(e.val))
	}
	ds, err := p.fields(&walker{b: p.data, i: e.off}, where{path: "random.space." + e.key}, nil)
	if err != nil {
		return d, err
	}
	if len(ds) != 1 {
		return d, p.errAt(e.off, e.at, `expected exactly one distribution, found %d keys: give one of uniform, loguniform, randint or choice`, len(ds))
	}
	g := ds[0]
	d.dist = -1
	for i, n := range distNames {
		if g.key == n {
			d.dist = i
		}
	}
	switch d.dist {
	case distUniform, distLogUniform:
		err = p.floatBounds(g, &d)
	case distRandInt:
		err = p.intBounds(g, &d)
	case distChoice:
		d.choices, err = p.choices(g, e.key)
	default:
		hint := "use uniform, loguniform, randint or choice"
		if s := closest(g.key, distNames); s != "" {
			hint = fmt.Sprintf("did you mean %q?", s)
		}
		err = p.errAt(g.koff, g.at, "unknown distribution: %s", hint)
	}
	return d, err
}

// bounds reads [low, high]: two numbers, low not above high.
func (p *paramParser) bounds(g field) (lo, hi []byte, err error) {
	var el [][]byte
	if g.val[0] == '[' {
		_ = elements(g.val, func(_ int, v []byte) error { el = append(el, v); return nil })
	}
	if len(el) != 2 || kindOf(el[0]) != "a number" || kindOf(el[1]) != "a number" {
		return nil, nil, p.errAt(g.off, g.at, "expected [low, high], two numbers, found %s", p.valueText(g.val))
	}
	return el[0], el[1], nil
}

func (p *paramParser) floatBounds(g field, d *randomDim) error {
	rawLo, rawHi, err := p.bounds(g)
	if err != nil {
		return err
	}
	lo, err1 := strconv.ParseFloat(string(rawLo), 64)
	hi, err2 := strconv.ParseFloat(string(rawHi), 64)
	switch {
	case err1 != nil || err2 != nil || math.IsInf(hi-lo, 0):
		return p.errAt(g.off, g.at, "[%s, %s] is too wide for a float64: narrow the bounds", rawLo, rawHi)
	case lo > hi:
		return p.errAt(g.off, g.at, "the low bound %s is above the high bound %s: swap them", rawLo, rawHi)
	case d.dist == distLogUniform && !(lo > 0):
		return p.errAt(g.off, g.at, "the low bound %s must be above 0, as a log scale has no zero: use a small positive number such as 1e-6, or uniform", rawLo)
	}
	d.min, d.max = lo, hi
	if d.dist == distLogUniform {
		lo, hi = logPortable(lo), logPortable(hi)
	}
	d.lo, d.span = lo, hi-lo
	return nil
}

// intBounds reads randint's bounds: whole numbers, both included.
func (p *paramParser) intBounds(g field, d *randomDim) error {
	rawLo, rawHi, err := p.bounds(g)
	if err != nil {
		return err
	}
	const limit = 1 << 53 // what every JSON reader holds exactly
	lo, err1 := strconv.ParseInt(string(rawLo), 10, 64)
	hi, err2 := strconv.ParseInt(string(rawHi), 10, 64)
	switch {
	case err1 != nil || err2 != nil:
		return p.errAt(g.off, g.at, "[%s, %s]: randint's bounds are whole numbers: write them without a fraction or exponent, or use uniform", rawLo, rawHi)
	case lo < -limit || hi > limit:
		return p.errAt(g.off, g.at, "[%s, %s] passes ±2^53: keep the bounds within ±9007199254740992", rawLo, rawHi)
	case lo > hi:
		return p.errAt(g.off, g.at, "the low bound %s is above the high bound %s: swap them", rawLo, rawHi)
	}
	d.ilo, d.n = lo, uint64(hi-lo)+1
	return nil
}

// choices reads choice's list. Every value is checked now, as an item would take it:
// a bad value must not wait for the draw that picks it.
func (p *paramParser) choices(g field, key string) ([]field, error) {
	if g.val[0] != '[' {
		return nil, p.errAt(g.off, g.at, "expected %s of values to pick from, found %s", p.listWord(), p.kindOf(g.val))
	}
	var out []field
	err := elements(g.val, func(rel int, v []byte) error {
		f := field{key: key, val: v, off: g.off + rel, koff: g.koff, at: g.at.inner(len(out))}
		var it item
		var ps []param
		err := p.apply(&it, &ps, f)
		p.drop = p.drop[:0]
		out = append(out, f)
		return err
	})
	if err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, p.errAt(g.off, g.at, "the list is empty: give at least one value to pick from")
	}
	return out, nil
}

// expandRandom draws the samples: for each, one value per key in file order.
func (p *paramParser) expandRandom(r *randomPlan, base *itemBase) error {
	if r.samples == 0 {
		return nil
	}
	src := rand.NewPCG(r.seed, pcgStream)
	fs := make([]field, len(r.dims))
	var buf []byte
	for range r.samples {
		buf = buf[:0]
		for i := range r.dims {
			d := &r.dims[i]
			if d.dist == distChoice {
				fs[i] = d.choices[below(src, uint64(len(d.choices)))]
				continue
			}
			start := len(buf)
			switch d.dist {
			case distUniform:
				buf = strconv.AppendFloat(buf, within(d.lo+float64(unit(src)*d.span), d.min, d.max), 'g', -1, 64)
			case distLogUniform:
				buf = strconv.AppendFloat(buf, within(expPortable(d.lo+float64(unit(src)*d.span)), d.min, d.max), 'g', -1, 64)
			case distRandInt:
				buf = strconv.AppendInt(buf, d.ilo+int64(below(src, d.n)), 10)
			}
			// An earlier value's bytes stay valid if buf grows: they keep the old array.
			fs[i] = field{key: d.key, val: buf[start:], off: d.off, koff: d.off, at: d.at}
		}
		if err := p.addItem(base, fs, where{idx: len(p.out), sect: sectRandom}, r.off); err != nil {
			return err
		}
	}
	return nil
}

// unit is a float64 in [0, 1) from the top 53 bits of one draw.
func unit(src *rand.PCG) float64 { return float64(src.Uint64()>>11) * 0x1p-53 }

// below is a uniform draw in [0, n), n ≥ 1 (Lemire's multiply-and-reject).
func below(src *rand.PCG, n uint64) uint64 {
	hi, lo := bits.Mul64(src.Uint64(), n)
	if lo < n {
		for thresh := -n % n; lo < thresh; {
			hi, lo = bits.Mul64(src.Uint64(), n)
		}
	}
	return hi
}

func within(v, lo, hi float64) float64 { return max(lo, min(hi, v)) }

// logPortable is math.Log by Go's pure-Go algorithm (FreeBSD's e_log.c), with every
// product rounded on its own. math.Log runs assembly on amd64 and s390x, and the compiler
// may fuse a*b+c into one FMA on arm64, ppc64, s390x or GOAMD64=v3: either may change the
// last bit, and a seeded file must draw the same values everywhere. x > 0, finite.
func logPortable(x float64) float64 {
	const (
		ln2Hi = 6.93147180369123816490e-01
		ln2Lo = 1.90821492927058770002e-10
		l1    = 6.666666666666735130e-01
		l2    = 3.999999999940941908e-01
		l3    = 2.857142874366239149e-01
		l4    = 2.222219843214978396e-01
		l5    = 1.818357216161805012e-01
		l6    = 1.531383769920937332e-01
		l7    = 1.479819860511658591e-01
	)
	f1, ki := math.Frexp(x)
	if f1 < math.Sqrt2/2 {
		f1 *= 2
		ki--
	}
	f := f1 - 1
	k := float64(ki)
	s := f / (2 + f)
	s2 := float64(s * s)
	s4 := float64(s2 * s2)
	t1 := float64(s2 * (l1 + float64(s4*(l3+float64(s4*(l5+float64(s4*l7)))))))
	t2 := float64(s4 * (l2 + float64(s4*(l4+float64(s4*l6)))))
	r := t1 + t2
	hfsq := float64(float64(0.5*f) * f)
	return float64(k*ln2Hi) - ((hfsq - (float64(s*(hfsq+r)) + float64(k*ln2Lo))) - f)
}

// expPortable is math.Exp by Go's pure-Go algorithm (FreeBSD's e_exp.c), rounded as
// logPortable is. x is finite.
func expPortable(x float64) float64 {
	const (
		ln2Hi     = 6.93147180369123816490e-01
		ln2Lo     = 1.90821492927058770002e-10
		log2e     = 1.44269504088896338700e+00
		overflow  = 7.09782712893383973096e+02
		underflow = -7.45133219101941108420e+02
		nearZero  = 1.0 / (1 << 28)
		p1        = 1.66666666666666657415e-01
		p2        = -2.77777777770155933842e-03
		p3        = 6.61375632143793436117e-05
		p4        = -1.65339022054652515390e-06
		p5        = 4.13813679705723846039e-08
	)
	switch {
	case x > overflow:
		return math.Inf(1)
	case x < underflow:
		return 0
	case -nearZero < x && x < nearZero:
		return 1 + x
	}
	var k int
	switch {
	case x < 0:
		k = int(float64(log2e*x) - 0.5)
	case x > 0:
		k = int(float64(log2e*x) + 0.5)
	}
	hi := x - float64(float64(k)*ln2Hi)
	lo := float64(float64(k) * ln2Lo)
	r := hi - lo
	t := float64(r * r)
	c := r - float64(t*(p1+float64(t*(p2+float64(t*(p3+float64(t*(p4+float64(t*p5)))))))))
	y := 1 - ((lo - float64(r*c)/(2-c)) - hi)
	return math.Ldexp(y, k)
}
