package main

import (
	"math/big"
	"strconv"
)

// The "grid" section: the Cartesian product of its lists, keys in file order, the last
// varying fastest. A list of objects links keys: each object's keys are set together.

// gridPlan is a read grid: its axes, each value already cut into the fields it sets.
type gridPlan struct {
	off   int // where "grid" was written
	axes  []gridAxis
	total *big.Int // the items it makes: exact, however many
}

type gridAxis struct {
	name  string
	elems [][]field // per value, the keys it sets
}

// readGrid reads the grid's axes and counts its items without making any.
func (p *paramParser) readGrid(f *field) (*gridPlan, error) {
	g := &gridPlan{total: new(big.Int)}
	if f == nil {
		return g, nil
	}
	g.off = f.off
	at := where{idx: atTop, key: "grid"}
	if f.val[0] != '{' {
		return nil, p.errAt(f.off, at, `expected %s of axes like {"lr": [0.1, 0.01], "batch": [32, 64]}, found %s`, p.objectWord(), p.kindOf(f.val))
	}
	axes, err := p.fields(&walker{b: p.data, i: f.off}, where{path: "grid"}, nil)
	if err != nil {
		return nil, err
	}
	if len(axes) == 0 {
		return nil, p.errAt(f.off, at, `the grid has no axes: add "key": [value, ...] for each key to vary`)
	}
	setBy := make(map[string]string, len(axes))
	g.total.SetInt64(1)
	for _, ax := range axes {
		a, err := p.gridAxis(ax, setBy)
		if err != nil {
			return nil, err
		}
		g.axes = append(g.axes, a)
		g.total.Mul(g.total, big.NewInt(int64(len(a.elems))))
	}
	return g, nil
}

// gridAxis reads one axis. setBy records which axis sets each key: a key set by two axes
// would make the later silently win, so it is refused.
func (p *paramParser) gridAxis(ax field, setBy map[string]string) (gridAxis, error) {
	a := gridAxis{name: ax.key}
	if ax.val[0] != '[' {
		return a, p.errAt(ax.off, ax.at, "expected %s of values, one item each, found %s: write a single value as [value], or put the key in defaults",
			p.listWord(), p.kindOf(ax.val))
	}
	w := &walker{b: p.data, i: ax.off + 1}
	linked := false
	for j := 0; ; j++ {
		w.skipWS()
		if w.b[w.i] == ']' {
			break
		}
		if w.b[w.i] == ',' {
			w.i++
			w.skipWS()
		}
		off := w.i
		v := w.value()
		at := where{path: "grid." + ax.key + "[" + strconv.Itoa(j) + "]"}
		isObj := v[0] == '{'
		if j == 0 {
			linked = isObj
		} else if isObj != linked {
			return a, p.errAt(off, at, "the axis mixes %ss and single values: make every value %s of keys set together, or none",
				p.objectNoun(), p.objectWord())
		}
		if !isObj {
			if j == 0 {
				if err := p.claim(setBy, ax.key, ax.key, ax.off, ax.at); err != nil {
					return a, err
				}
			}
			a.elems = append(a.elems, []field{{key: ax.key, val: v, off: off, koff: ax.koff, at: at}})
			continue
		}
		fs, err := p.fields(&walker{b: p.data, i: off}, at, nil)
		if err != nil {
			return a, err
		}
		for _, f := range fs {
			if err := p.claim(setBy, f.key, ax.key, f.off, f.at); err != nil {
				return a, err
			}
		}
		a.elems = append(a.elems, fs)
	}
	if len(a.elems) == 0 {
		return a, p.errAt(ax.off, ax.at, "the list is empty: give at least one value, or remove the axis")
	}
	return a, nil
}

// claim records that axis sets key, refusing a key another axis sets.
func (p *paramParser) claim(setBy map[string]string, key, axis string, off int, at where) error {
	other, ok := setBy[key]
	if !ok {
		setBy[key] = axis
		return nil
	}
	if other == axis {
		return nil
	}
	return p.errAt(off, at, "%q is also set by the axis %q: set each key in one axis, and link keys that go together in a list of %ss",
		key, other, p.objectNoun())
}

// expandGrid makes the grid's items in order, the last axis varying fastest.
func (p *paramParser) expandGrid(g *gridPlan, base *itemBase) error {
	if len(g.axes) == 0 {
		return nil
	}
	n := int(g.total.Int64())
	pos := make([]int, len(g.axes))
	var fs []field
	for range n {
		fs = fs[:0]
		for a, ax := range g.axes {
			fs = append(fs, ax.elems[pos[a]]...)
		}
		if err := p.addItem(base, fs, where{idx: len(p.out), sect: sectGrid}, g.off); err != nil {
			return err
		}
		for a := len(pos) - 1; a >= 0; a-- {
			if pos[a]++; pos[a] < len(g.axes[a].elems) {
				break
			}
			pos[a] = 0
		}
	}
	return nil
}
