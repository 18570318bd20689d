package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// What each item measured, joined with its params and outcome, and ranked: the rows of
// `spawn results`. The metrics come from the instance items (the engine copied them
// from each instance's result object when the item ended); the params from the sweep's
// params object, the same file the engine launched from.

// resultRow is one item of `spawn results --output json`.
type resultRow struct {
	Index        int                `json:"index"`
	Params       map[string]string  `json:"params"`
	Outcome      string             `json:"outcome"` // or the state of an item not yet ended: running, pending
	InstanceType string             `json:"instance_type"`
	Region       string             `json:"region"`
	Spot         bool               `json:"spot"`
	Cost         float64            `json:"cost"`
	Metrics      map[string]float64 `json:"metrics"`
	ResultError  string             `json:"result_error,omitempty"`

	params []param // in the file's key order, for text and CSV
}

// resultsDoc is `spawn results --output json`.
type resultsDoc struct {
	SweepID   string      `json:"sweep_id"`
	Objective *objective  `json:"objective"`
	Results   []resultRow `json:"results"`

	status  string
	total   int        // items before --top
	sortKey resultSort // what the rows are sorted by
}

// Item states of rows whose item has no outcome yet.
const (
	resultRunning = "running"
	resultPending = "pending"
)

// buildResults joins every item with its latest instance (v, the status of the sweep
// as of now, which also prices it) and the metrics its instance item holds.
func buildResults(v *statusView, items []item, obj *objective, recs []instanceRecord) *resultsDoc {
	doc := &resultsDoc{SweepID: v.s.SweepID, Objective: obj, status: v.s.Status, Results: make([]resultRow, 0, len(items))}
	latest := map[int]instanceRecord{}
	for _, r := range recs {
		if old, ok := latest[r.Index]; !ok || r.Attempt >= old.Attempt {
			latest[r.Index] = r
		}
	}
	byIndex := map[int]statusInstance{}
	for _, si := range v.instances {
		byIndex[si.Index] = si
	}
	for _, it := range items {
		row := resultRow{Index: it.Index, Params: map[string]string{}, Outcome: resultPending, InstanceType: it.InstanceType,
			Region: regionOf(v.s, it), Spot: it.Spot, Metrics: map[string]float64{}, params: it.Params}
		for _, p := range it.Params {
			row.Params[p.Key] = p.Value
		}
		if si, ok := byIndex[it.Index]; ok {
			row.InstanceType, row.Region, row.Cost = orElse(si.InstanceType, row.InstanceType), orElse(si.Region, row.Region), roundUSD(si.CostUSD)
			if it.Fallback != nil && it.Fallback.SpotPrefer && si.InstanceID != "" {
				row.Spot = si.Spot // the market it ran in: a "prefer" item may have fallen back
			}
			switch {
			case si.Outcome != "":
				row.Outcome = si.Outcome
			case si.alive && si.InstanceID != "":
				row.Outcome = resultRunning
			}
		}
		if r, ok := latest[it.Index]; ok && r.Outcome != "" {
			for k, m := range r.Metrics {
				row.Metrics[k] = m
			}
			row.ResultError = r.ResultError
		}
		doc.Results = append(doc.Results, row)
	}
	doc.total = len(doc.Results)
	return doc
}

func orElse(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// resultSort is what rows are ordered by: a metric, a column or a param, ascending or
// descending. Rows lacking the value sort last either way; ties keep index order.
type resultSort struct {
	key  string
	kind string // "metric", "column", "param"; "" for index order
	desc bool
}

// resultColumns are the columns --sort takes besides metrics and params.
var resultColumns = []string{"index", "outcome", "instance_type", "region", "spot", "cost"}

// errSortKey: --sort names nothing the rows have.
var errSortKey = errors.New("unknown sort key")

// parseSortKey reads --sort: "loss" ascending, "-acc" descending; a metric first (also
// as "metric.<name>"), then a column, then a param. Empty: the objective, else index.
func (doc *resultsDoc) parseSortKey(s string) (resultSort, error) {
	if s == "" {
		if o := doc.Objective; o != nil {
			return resultSort{key: o.Metric, kind: "metric", desc: o.Goal == "max"}, nil
		}
		return resultSort{key: "index", kind: "column"}, nil
	}
	rs := resultSort{key: s}
	if rest, ok := strings.CutPrefix(s, "-"); ok {
		rs.key, rs.desc = rest, true
	}
	metrics, params := doc.metricNames(), doc.paramKeys()
	name, explicit := strings.CutPrefix(rs.key, "metric.")
	switch {
	case explicit && slices.Contains(metrics, name):
		rs.key, rs.kind = name, "metric"
	case slices.Contains(metrics, rs.key) || doc.Objective != nil && rs.key == doc.Objective.Metric:
		rs.kind = "metric"
	case slices.Contains(resultColumns, rs.key):
		rs.kind = "column"
	case slices.Contains(params, rs.key):
		rs.kind = "param"
	default:
		known := "no item has reported metrics yet"
		if len(metrics) > 0 {
			known = "the metrics are " + strings.Join(metrics, ", ")
		}
		return rs, fmt.Errorf("%w %q: %s; the columns are %s; a leading - sorts descending", errSortKey, rs.key, known, strings.Join(resultColumns, ", "))
	}
	return rs, nil
}

// sortRows orders the rows by rs, then keeps the first top (0: all).
func (doc *resultsDoc) sortRows(rs resultSort, top int) {
	doc.sortKey = rs
	sort.SliceStable(doc.Results, func(i, j int) bool {
		a, b := &doc.Results[i], &doc.Results[j]
		av, aok := a.sortValue(rs)
		bv, bok := b.sortValue(rs)
		if aok != bok {
			return aok // a missing value sorts last in either direction
		}
		c := 0
		if aok {
			c = compareValues(av, bv)
		}
		switch {
		case c == 0:
			return a.Index < b.Index
		case rs.desc:
			return c > 0
		}
		return c < 0
	})
	if top > 0 && top < len(doc.Results) {
		doc.Results = doc.Results[:top]
	}
}

// compareValues compares two numbers as numbers, anything else as text.
func compareValues(a, b string) int {
	af, aerr := strconv.ParseFloat(a, 64)
	bf, berr := strconv.ParseFloat(b, 64)
	if aerr == nil && berr == nil {
		return cmpFloat(af, bf)
	}
	return strings.Compare(a, b)
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// sortValue is the row's value under rs as text (numbers compare as numbers).
func (r *resultRow) sortValue(rs resultSort) (string, bool) {
	switch rs.kind {
	case "metric":
		m, ok := r.Metrics[rs.key]
		return strconv.FormatFloat(m, 'g', -1, 64), ok
	case "param":
		p, ok := r.Params[rs.key]
		return p, ok
	}
	cols := r.columns()
	i := slices.Index(resultColumns, rs.key)
	if i < 0 {
		return strconv.Itoa(r.Index), true
	}
	return cols[i], true
}

// columns are the row's values of resultColumns, as CSV writes them.
func (r *resultRow) columns() []string {
	return []string{strconv.Itoa(r.Index), r.Outcome, r.InstanceType, r.Region, strconv.FormatBool(r.Spot), strconv.FormatFloat(r.Cost, 'f', -1, 64)}
}

// metricNames is every metric any row has, sorted.
func (doc *resultsDoc) metricNames() []string {
	seen := map[string]bool{}
	for _, r := range doc.Results {
		for k := range r.Metrics {
			seen[k] = true
		}
	}
	return sortedKeys(seen)
}

// paramKeys is every param key any row has, sorted.
func (doc *resultsDoc) paramKeys() []string {
	seen := map[string]bool{}
	for _, r := range doc.Results {
		for _, p := range r.params {
			seen[p.Key] = true
		}
	}
	return sortedKeys(seen)
}

// writeResultsCSV writes a header, then a row per item: the columns, each param under
// its key, each metric under its name (metric.<name> when a column or param has that
// name; a param named like a column is param.<name>). An empty cell: no such value.
func writeResultsCSV(w io.Writer, doc *resultsDoc) error {
	params, metrics := doc.paramKeys(), doc.metricNames()
	header := slices.Clone(resultColumns)
	for _, k := range params {
		if slices.Contains(resultColumns, k) {
			k = "param." + k
		}
		header = append(header, k)
	}
	for _, m := range metrics {
		if slices.Contains(resultColumns, m) || slices.Contains(params, m) {
			m = "metric." + m
		}
		header = append(header, m)
	}
	cw := csv.NewWriter(w)
	if err := cw.Write(header); err != nil {
		return err
	}
	for _, r := range doc.Results {
		rec := r.columns()
		for _, k := range params {
			rec = append(rec, r.Params[k])
		}
		for _, m := range metrics {
			v, ok := r.Metrics[m]
			if !ok {
				rec = append(rec, "")
				continue
			}
			rec = append(rec, strconv.FormatFloat(v, 'g', -1, 64))
		}
		if err := cw.Write(rec); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

// maxTextMetrics is how many metric columns the text view has room for.
const maxTextMetrics = 3

// renderResults writes the text view: a heading, then one row per item; every line
// fits screenWidth. Region, type and spot get a column only when items differ in
// them (else the heading names them), so the params have room; the sort metric and
// the objective come first among the metrics.
func renderResults(w io.Writer, doc *resultsDoc) error {
	var b strings.Builder
	b.WriteString(ellipsize(doc.heading(), screenWidth) + "\n")
	cols, same := doc.varyingColumns()
	if len(same) > 0 {
		b.WriteString(ellipsize("every item: "+strings.Join(same, ", "), screenWidth) + "\n")
	}
	metrics := doc.textMetrics(maxTextMetrics)
	head := []string{"INDEX", "OUTCOME"}
	for _, c := range cols {
		head = append(head, strings.ToUpper(c.head))
	}
	rows := [][]string{append(append(append(head, "COST $"), metrics...), "PARAMS")}
	for ri := range doc.Results {
		rows = append(rows, tableRow(&doc.Results[ri], cols, metrics, func(s string) string { return s }))
	}
	writeTable(&b, rows, nil)
	if n := len(doc.metricNames()) - len(metrics); n > 0 {
		b.WriteString(fmt.Sprintf("%s not shown: --output csv or json has every metric\n", plural(n, "more metric")))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// tableRow is one item's row of the text and Markdown tables: index, outcome, the
// varying columns, cost, the metrics shown and its params, with esc applied to the text.
func tableRow(r *resultRow, cols []optionalColumn, metrics []string, esc func(string) string) []string {
	row := []string{strconv.Itoa(r.Index), r.Outcome}
	for _, c := range cols {
		row = append(row, esc(c.val(r)))
	}
	row = append(row, fmt.Sprintf("%.4f", r.Cost))
	for _, m := range metrics {
		row = append(row, fmtMetric(r.Metrics, m))
	}
	var ps []string
	for _, p := range r.params {
		ps = append(ps, p.Key+"="+oneLine(p.Value))
	}
	return append(row, orDash(esc(strings.Join(ps, " "))))
}

// optionalColumn is a column the text and Markdown views show only when items differ
// in it: its header and the row's value.
type optionalColumn struct {
	head string
	val  func(r *resultRow) string
}

var optionalColumns = []optionalColumn{
	{"region", func(r *resultRow) string { return r.Region }},
	{"type", func(r *resultRow) string { return r.InstanceType }},
	{"spot", func(r *resultRow) string { return map[bool]string{true: "spot", false: "on-demand"}[r.Spot] }},
}

// varyingColumns splits optionalColumns into those whose value differs between rows
// (they get a column) and the one value of each other (the heading names it).
func (doc *resultsDoc) varyingColumns() (cols []optionalColumn, same []string) {
	for _, c := range optionalColumns {
		vals := map[string]bool{}
		for ri := range doc.Results {
			vals[c.val(&doc.Results[ri])] = true
		}
		if len(vals) == 1 {
			same = append(same, c.val(&doc.Results[0]))
		} else {
			cols = append(cols, c)
		}
	}
	return cols, same
}

// heading is the text view's first line: the sweep, its status, how many items and
// in which order.
func (doc *resultsDoc) heading() string {
	return fmt.Sprintf("%s  %s  %s", doc.SweepID, doc.status, doc.order())
}

// order says how many items are shown and in which order: "top 5 of 6 items, by
// val_loss, lowest first".
func (doc *resultsDoc) order() string {
	order := "by index"
	if rs := doc.sortKey; rs.key != "index" || rs.desc {
		dir := "lowest first"
		if rs.desc {
			dir = "highest first"
		}
		order = "by " + rs.key + ", " + dir
	}
	shown := plural(doc.total, "item")
	if len(doc.Results) < doc.total {
		shown = fmt.Sprintf("top %d of %d items", len(doc.Results), doc.total)
	}
	return shown + ", " + order
}

// textMetrics are the metric columns of a view: the sort metric, the objective, then
// the others by name, at most n.
func (doc *resultsDoc) textMetrics(n int) []string {
	var out []string
	add := func(m string) {
		if len(out) < n && !slices.Contains(out, m) {
			out = append(out, m)
		}
	}
	names := doc.metricNames()
	if doc.sortKey.kind == "metric" && slices.Contains(names, doc.sortKey.key) {
		add(doc.sortKey.key)
	}
	if o := doc.Objective; o != nil && slices.Contains(names, o.Metric) {
		add(o.Metric)
	}
	for _, m := range names {
		add(m)
	}
	return out
}

// fmtMetric is a metric as the text view shows it: six significant digits, "-" when
// the item has none.
func fmtMetric(m map[string]float64, name string) string {
	v, ok := m[name]
	if !ok {
		return "-"
	}
	return strconv.FormatFloat(v, 'g', 6, 64)
}

// bestResult is the item whose metric is best by the objective, among items that
// reported it; ok is false when none did.
type bestResult struct {
	Index  int     `json:"index"`
	Metric string  `json:"metric"`
	Value  float64 `json:"value"`

	goal string
}

// line is the status view's: "best     item 7: val_loss 0.123 (min)".
func (b *bestResult) line() string {
	return fmt.Sprintf("best     item %d: %s %s (%s)", b.Index, b.Metric, strconv.FormatFloat(b.Value, 'g', 6, 64), b.goal)
}

// setBest notes the best item by obj among recs, if any reported its metric.
func (v *statusView) setBest(obj *objective, recs []instanceRecord) {
	if b, ok := findBest(obj, recs); ok {
		v.best = &b
	}
}

func findBest(obj *objective, recs []instanceRecord) (bestResult, bool) {
	if obj == nil {
		return bestResult{}, false
	}
	best := bestResult{Metric: obj.Metric, goal: obj.Goal}
	found := false
	for _, r := range recs {
		v, ok := r.Metrics[obj.Metric]
		if !ok || math.IsNaN(v) {
			continue
		}
		better := v < best.Value
		if obj.Goal == "max" {
			better = v > best.Value
		}
		if !found || better || v == best.Value && r.Index < best.Index {
			best.Index, best.Value, found = r.Index, v, true
		}
	}
	return best, found
}

// objectiveOf reads only the objective of a canonical params file ({"defaults",
// "objective", "params"}, in that order): it stops at "params", so a 100,000-item file
// costs no parse of its items. nil when the file names none or is not one.
func objectiveOf(raw []byte) *objective {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil
	}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil
		}
		switch t {
		case "objective":
			var o objective
			if dec.Decode(&o) != nil || o.Metric == "" {
				return nil
			}
			return &o
		case "params":
			return nil
		}
		var skip json.RawMessage
		if dec.Decode(&skip) != nil {
			return nil
		}
	}
	return nil
}

// loadSweepParams reads the items and objective of a sweep from its params object,
// checked against the record's checksum (and cached, as the engine does).
func loadSweepParams(ctx context.Context, ps *paramsStore, s *sweep) (*paramSet, error) {
	raw, err := ps.downloadParams(ctx, s.S3ParamsKey, s.ParamsChecksum, false)
	if err != nil {
		return nil, err
	}
	return readParamFile(s.S3ParamsKey, raw, paramFileOptions{})
}
