package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"
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
