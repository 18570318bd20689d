package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// A result keeps its finite numbers and says what it dropped; one that is not an object
// or is too big gives no metrics.
func TestParseResult(t *testing.T) {
	many := map[string]any{}
	for i := range maxResultMetrics + 3 {
		many[fmt.Sprintf("m%03d", i)] = i
	}
	tests := []struct {
		name, raw   string
		want        map[string]float64
		wantProblem string // a part of it; "" for none
	}{
		{"numbers", `{"loss": 0.12, "acc": 97e-2, "epochs": 10}`, map[string]float64{"loss": 0.12, "acc": 0.97, "epochs": 10}, ""},
		{"empty object", `{}`, nil, ""},
		{"array", `[1, 2]`, nil, "not a JSON object"},
		{"string", `"loss=0.1"`, nil, "not a JSON object"},
		{"null", `null`, nil, "not a JSON object"},
		{"not JSON", `loss: 0.1`, nil, "not a JSON object"},
		{"too big", `{"x": "` + strings.Repeat("a", maxResultBytes) + `"}`, nil, "over 64 KB"},
		{"non-numeric", `{"loss": 0.5, "note": "ok", "done": true, "hist": [1], "nested": {"a": 1}, "none": null}`,
			map[string]float64{"loss": 0.5}, `not finite numbers: "done", "hist", "nested", "none", "note"`},
		{"NaN and Inf", `{"a": "NaN", "b": 1e999, "c": "-Inf", "d": -2}`, map[string]float64{"d": -2}, `not finite numbers: "a", "b", "c"`},
		{"bad names", `{"": 1, "` + strings.Repeat("n", maxMetricNameBytes+1) + `": 2, "tab\there": 3, "ok": 4}`, map[string]float64{"ok": 4}, "not metric names"},
		{"too many", jsonOf(t, many), nil, fmt.Sprintf("dropped 3 metrics past the first %d", maxResultMetrics)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := parseResult([]byte(tt.raw))
			if tt.name == "too many" {
				if len(got.Metrics) != maxResultMetrics || got.Metrics["m000"] != 0 || got.Metrics["m099"] != 99 {
					t.Errorf("kept %d metrics, want the first %d", len(got.Metrics), maxResultMetrics)
				}
			} else if !maps.Equal(got.Metrics, tt.want) {
				t.Errorf("metrics %v, want %v", got.Metrics, tt.want)
			}
			if (tt.wantProblem == "") != (got.Problem == "") || !strings.Contains(got.Problem, tt.wantProblem) {
				t.Errorf("problem %q, want one containing %q", got.Problem, tt.wantProblem)
			}
			if len(got.Problem) > maxResultProblem {
				t.Errorf("problem of %d bytes", len(got.Problem))
			}
		})
	}
}

// memResults is a bucket of result objects (key → body) read through the results hook;
// fail makes the next reads fail, as a throttled S3 does.
type memResults struct {
	objects map[string]string
	fail    int
}

func (m *memResults) read(_ context.Context, sw *sweep, e *aliveInstance) (*itemResult, error) {
	if m.fail > 0 {
		m.fail--
		return nil, errors.New("SlowDown: please reduce your request rate")
	}
	for k, body := range m.objects {
		if strings.HasPrefix(k, resultPrefix(sw.SweepID, e.Index)) && strings.HasSuffix(k, ":"+e.InstanceID+".json") {
			r := parseResult([]byte(body))
			return &r, nil
		}
	}
	return nil, nil
}

// The item's outcome carries the metrics its instance wrote, and only its own: another
// instance's result for the same item is not believed.
func TestFinishStoresTheMetrics(t *testing.T) {
	st, o, clk, api, _ := reportFixture(t, 2)
	res := &memResults{objects: map[string]string{
		resultPrefix("sw-r", 0) + "AROAX:i-0001.json": `{"loss": 0.25, "note": "x"}`,
		resultPrefix("sw-r", 1) + "AROAX:i-0999.json": `{"loss": 9}`,
	}}
	o.results = res.read
	steps(t, st, o, clk, 2)
	api.end("i-0001", 0, true)
	steps(t, st, o, clk, 3)
	api.end("i-0002", 0, true)
	steps(t, st, o, clk, 2)
	if rec := instanceOutcome(t, st, 0); !maps.Equal(rec.Metrics, map[string]float64{"loss": 0.25}) || !strings.Contains(rec.ResultError, `"note"`) {
		t.Errorf("item 0: metrics %v, result error %q", rec.Metrics, rec.ResultError)
	}
	if rec := instanceOutcome(t, st, 1); rec.Metrics != nil || rec.ResultError != "" {
		t.Errorf("item 1 took another instance's result: %v %q", rec.Metrics, rec.ResultError)
	}
}

// A result read that fails keeps the item waiting for a while, then the outcome is
// recorded without metrics, saying why: it never blocks the sweep.
func TestResultReadFailureDelaysThenGivesUp(t *testing.T) {
	for _, tt := range []struct {
		name      string
		fail      int
		wantError bool
	}{
		{"one failure", 1, false},
		{"failing for good", 1000, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			st, o, clk, api, _ := reportFixture(t, 1)
			o.reportWait = time.Minute
			res := &memResults{objects: map[string]string{resultPrefix("sw-r", 0) + "AROAX:i-0001.json": `{"acc": 0.9}`}}
			o.results = res.read
			steps(t, st, o, clk, 2)
			api.end("i-0001", 0, true)
			res.fail = tt.fail
			if sw := steps(t, st, o, clk, 1); sw.Counts.Succeeded != 0 {
				t.Fatalf("recorded while the result read failed: %+v", sw.Counts)
			}
			sw := steps(t, st, o, clk, 8)
			rec := instanceOutcome(t, st, 0)
			if sw.Status != statusCompleted || rec.Outcome != outcomeSucceeded {
				t.Fatalf("status %s, outcome %q", sw.Status, rec.Outcome)
			}
			if tt.wantError != (rec.Metrics == nil) || tt.wantError != strings.Contains(rec.ResultError, "could not be read") {
				t.Errorf("metrics %v, result error %q", rec.Metrics, rec.ResultError)
			}
		})
	}
}

func jsonOf(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// resultsFixture is a sweep of 6 items (a grid of lr × model, objective val_loss min):
// four ended with metrics or not, one running, one not launched.
func resultsFixture(t *testing.T) *resultsDoc {
	t.Helper()
	ps, err := readParamFile("grid.json", []byte(`{
  "defaults": {"instance_type": "g5.xlarge", "spot": true, "command": "python3 train.py"},
  "grid": {"model": ["small", "a-model-with-a-name-long-enough-to-be-cut-in-the-text-view"], "lr": ["0.1", "0.01", "0.001"]},
  "objective": {"metric": "val_loss", "goal": "min"}
}`), paramFileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s := &sweep{SweepID: "sw-20261125-7f3a9c", Region: "us-east-1", Status: statusRunning, TotalParams: 6,
		Alive: []aliveInstance{{Index: 4, Attempt: 1, InstanceID: "i-04", Region: "us-east-1", InstanceType: "g5.xlarge", Spot: true, LaunchedAt: ago(time.Hour), PriceHourly: 0.5}}}
	rec := func(i int, outcome string, cost float64, m map[string]float64) instanceRecord {
		return instanceRecord{Index: i, InstanceID: fmt.Sprintf("i-%02d", i), Region: "us-east-1", InstanceType: "g5.xlarge", State: "terminated",
			Outcome: outcome, Attempt: 1, LaunchedAt: ago(2 * time.Hour), TerminatedAt: ago(time.Hour), PriceHourly: 0.5, CostUSD: cost, Metrics: m}
	}
	recs := []instanceRecord{
		rec(0, outcomeSucceeded, 0.5, map[string]float64{"val_loss": 0.42, "acc": 0.81, "epochs": 10}),
		rec(1, outcomeSucceeded, 0.5, map[string]float64{"val_loss": 0.123, "acc": 0.93, "epochs": 10}),
		rec(2, outcomeFailed, 0.25, nil),
		rec(3, outcomeSucceeded, 0.5, map[string]float64{"val_loss": 0.2, "acc": 0.97, "epochs": 12, "model": 3}),
		{Index: 4, InstanceID: "i-04", Region: "us-east-1", InstanceType: "g5.xlarge", State: "running", Attempt: 1, LaunchedAt: ago(time.Hour), PriceHourly: 0.5},
	}
	recs[2].ResultError = "the result is not a JSON object"
	v := buildStatus(context.Background(), s, recs, nil, statusNow)
	return buildResults(v, ps.Items, ps.Objective, recs)
}

func checkResultsGolden(t *testing.T, name, got string) {
	t.Helper()
	checkGolden(t, filepath.Join("testdata", "results", name), got)
}

// checkGolden compares got with the golden file at path; -update rewrites it.
func checkGolden(t *testing.T, path, got string) {
	t.Helper()
	if updateGolden() {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v: run go test -run %s -update", err, t.Name())
	}
	if got != string(want) {
		t.Errorf("%s differs (go test -run %s -update rewrites it):\n got:\n%s\nwant:\n%s", path, t.Name(), got, want)
	}
}

// The three outputs of one sweep, sorted by its objective, and the text view fits 80 columns.
func TestResultsGolden(t *testing.T) {
	for _, tt := range []struct {
		file, sort string
		top        int
		render     func(io.Writer, *resultsDoc) error
	}{
		{"objective.txt", "", 0, renderResults},
		{"top-acc.txt", "-acc", 2, renderResults},
		{"objective.json", "", 0, func(w io.Writer, d *resultsDoc) error {
			enc := json.NewEncoder(w)
			enc.SetIndent("", "  ")
			return enc.Encode(d)
		}},
		{"objective.csv", "", 0, writeResultsCSV},
	} {
		t.Run(tt.file, func(t *testing.T) {
			doc := resultsFixture(t)
			rs, err := doc.parseSortKey(tt.sort)
			if err != nil {
				t.Fatal(err)
			}
			doc.sortRows(rs, tt.top)
			var b strings.Builder
			if err := tt.render(&b, doc); err != nil {
				t.Fatal(err)
			}
			for _, l := range strings.Split(b.String(), "\n") {
				if strings.HasSuffix(tt.file, ".txt") && utf8.RuneCountInString(l) > screenWidth {
					t.Errorf("line of %d columns: %q", utf8.RuneCountInString(l), l)
				}
			}
			checkResultsGolden(t, tt.file, b.String())
		})
	}
}

// Sorting: ascending and descending by a metric, items lacking it last either way,
// columns and params, ties in index order; --top keeps the first N.
func TestResultsSort(t *testing.T) {
	tests := []struct {
		key  string
		top  int
		want []int
	}{
		{"", 0, []int{1, 3, 0, 2, 4, 5}},
		{"val_loss", 0, []int{1, 3, 0, 2, 4, 5}},
		{"-val_loss", 0, []int{0, 3, 1, 2, 4, 5}},
		{"-acc", 2, []int{3, 1}},
		{"epochs", 0, []int{0, 1, 3, 2, 4, 5}},
		{"-epochs", 0, []int{3, 0, 1, 2, 4, 5}},
		{"metric.model", 0, []int{3, 0, 1, 2, 4, 5}},
		{"-cost", 0, []int{0, 1, 3, 4, 2, 5}},
		{"outcome", 0, []int{2, 5, 4, 0, 1, 3}},
		{"-index", 3, []int{5, 4, 3}},
		{"lr", 0, []int{2, 5, 1, 4, 0, 3}},
		{"-model", 1, []int{3}}, // a metric before a param of the same name
		{"", 100, []int{1, 3, 0, 2, 4, 5}},
	}
	for _, tt := range tests {
		doc := resultsFixture(t)
		rs, err := doc.parseSortKey(tt.key)
		if err != nil {
			t.Errorf("--sort %q: %v", tt.key, err)
			continue
		}
		doc.sortRows(rs, tt.top)
		var got []int
		for _, r := range doc.Results {
			got = append(got, r.Index)
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("--sort %q --top %d: %v, want %v", tt.key, tt.top, got, tt.want)
		}
	}
	doc := resultsFixture(t)
	_, err := doc.parseSortKey("-los")
	if !errors.Is(err, errSortKey) || !strings.Contains(err.Error(), `"los"`) || !strings.Contains(err.Error(), "the metrics are acc, epochs, model, val_loss") {
		t.Errorf("unknown key: %v", err)
	}
}

// Outcomes: an item not yet ended shows its state; metrics come only from an ended item.
func TestResultsRowsJoin(t *testing.T) {
	doc := resultsFixture(t)
	want := map[int]string{0: outcomeSucceeded, 2: outcomeFailed, 4: resultRunning, 5: resultPending}
	for _, r := range doc.Results {
		if w, ok := want[r.Index]; ok && r.Outcome != w {
			t.Errorf("item %d: outcome %q, want %q", r.Index, r.Outcome, w)
		}
		if r.Params["lr"] == "" || r.InstanceType != "g5.xlarge" || !r.Spot || r.Region != "us-east-1" {
			t.Errorf("item %d: %+v", r.Index, r)
		}
	}
	if doc.Results[2].ResultError == "" || len(doc.Results[4].Metrics) != 0 {
		t.Errorf("rows: %+v", doc.Results)
	}
}

// status names the best item by the objective; an objective nobody reported gives none.
func TestFindBest(t *testing.T) {
	recs := []instanceRecord{
		{Index: 0, Metrics: map[string]float64{"loss": 0.5}},
		{Index: 1, Metrics: map[string]float64{"acc": 0.5}},
		{Index: 2, Metrics: map[string]float64{"loss": 0.25}},
		{Index: 3, Metrics: map[string]float64{"loss": 0.25}},
		{Index: 4, Metrics: map[string]float64{"loss": 0.75}},
	}
	if b, ok := findBest(&objective{Metric: "loss", Goal: "min"}, recs); !ok || b.Index != 2 || b.Value != 0.25 {
		t.Errorf("min: %+v %v", b, ok)
	}
	if b, ok := findBest(&objective{Metric: "loss", Goal: "max"}, recs); !ok || b.Index != 4 {
		t.Errorf("max: %+v %v", b, ok)
	}
	if _, ok := findBest(&objective{Metric: "f1", Goal: "max"}, recs); ok {
		t.Error("best of a metric nobody reported")
	}
	if _, ok := findBest(nil, recs); ok {
		t.Error("best without an objective")
	}
}

// objectiveOf reads the objective of the canonical file without its items.
func TestObjectiveOf(t *testing.T) {
	ps, err := readParamFile("g.json", []byte(`{"defaults": {"ttl": "1h", "command": "true"}, "grid": {"lr": [1, 2]}, "objective": {"metric": "acc", "goal": "max"}}`),
		paramFileOptions{Canonical: true})
	if err != nil {
		t.Fatal(err)
	}
	if o := objectiveOf(ps.Canonical); o == nil || *o != (objective{Metric: "acc", Goal: "max"}) {
		t.Errorf("objective %+v from %s", o, ps.Canonical)
	}
	for _, raw := range []string{`{"params": [{"lr": 1}], "objective": {"metric": "x"}}`, `[]`, `{"defaults": {}}`, `not json`} {
		if o := objectiveOf([]byte(raw)); o != nil {
			t.Errorf("%s: %+v", raw, o)
		}
	}
}

// status shows the best item so far, in text and JSON, when the file has an objective.
func TestStatusShowsBest(t *testing.T) {
	s, recs := completedWithFailuresSweep()
	recs[0].Metrics = map[string]float64{"val_loss": 0.5}
	recs[2].Metrics = map[string]float64{"val_loss": 0.123}
	v := buildStatus(context.Background(), s, recs, nil, statusNow)
	v.setBest(&objective{Metric: "val_loss", Goal: "min"}, recs)
	var b strings.Builder
	if err := renderStatus(&b, v, textStyle{}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "\nbest     item 2: val_loss 0.123 (min)\n") {
		t.Errorf("text view lacks the best line:\n%s", b.String())
	}
	js := jsonOf(t, v.doc())
	if !strings.Contains(js, `"best":{"index":2,"metric":"val_loss","value":0.123}`) {
		t.Errorf("JSON lacks best: %s", js)
	}
	v = buildStatus(context.Background(), s, recs, nil, statusNow)
	v.setBest(nil, recs)
	if strings.Contains(jsonOf(t, v.doc()), `"best"`) {
		t.Error("best without an objective")
	}
}
