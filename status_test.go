package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// `go test -run TestStatusGolden -update` rewrites testdata/status/*.golden. Another
// test file of the package may have registered -update first: share it then.
var updateGolden = func() func() bool {
	f := flag.Lookup("update")
	if f == nil {
		flag.Bool("update", false, "rewrite golden files under testdata/")
		f = flag.Lookup("update")
	}
	return func() bool { return f.Value.String() == "true" }
}()

// statusNow is the fixed clock of the golden tests.
var statusNow = time.Date(2026, 11, 25, 15, 30, 0, 0, time.UTC)

func ago(d time.Duration) time.Time { return statusNow.Add(-d) }

func intPtr(i int) *int { return &i }

func runningSweep() (*sweep, []instanceRecord) {
	s := &sweep{
		SweepID: "sw-20261125-7f3a9c", SweepName: "lr-grid-search", UserID: "arn:aws:iam::123456789012:user/ana",
		CreatedAt: ago(2*time.Hour + 13*time.Minute).Format(time.RFC3339), UpdatedAt: ago(4 * time.Second).Format(time.RFC3339),
		MaxConcurrent: 3, TotalParams: 20, Region: "us-east-1", AWSAccountID: "123456789012", Status: statusRunning,
		NextToLaunch: 12, Launched: 12, Failed: 1, Version: 57, Detached: true,
		LeaseOwner: "lambda-4b1c", LeaseExpiresAt: ago(-52 * time.Second), LastStepAt: ago(8 * time.Second),
		Counts:           counts{Succeeded: 8, Failed: 1},
		EstimatedCostUSD: 0.7123,
		Alive: []aliveInstance{
			{Index: 9, Attempt: 1, InstanceID: "i-0a1b2c3d4e5f60009", Region: "us-east-1", InstanceType: "m5.large", LaunchedAt: ago(41 * time.Minute), PriceHourly: 0.096},
			{Index: 10, Attempt: 1, InstanceID: "i-0a1b2c3d4e5f60010", Region: "eu-west-1", InstanceType: "c5.xlarge", Spot: true, LaunchedAt: ago(12*time.Minute + 5*time.Second)},
			{Index: 11, Attempt: 1, Region: "us-east-1", InstanceType: "m5.large"},
		},
	}
	var recs []instanceRecord
	for i := 0; i < 9; i++ {
		r := instanceRecord{Index: i, InstanceID: fmt.Sprintf("i-0a1b2c3d4e5f6%04d", i), Region: "us-east-1", InstanceType: "m5.large",
			State: "terminated", Outcome: outcomeSucceeded, Attempt: 1, LaunchedAt: ago(2 * time.Hour), TerminatedAt: ago(time.Hour + time.Duration(i)*time.Minute),
			ExitCode: intPtr(0), PriceHourly: 0.096, PriceSource: priceSourceAPI}
		if i == 4 {
			r.Outcome, r.ExitCode, r.ErrorMessage = outcomeFailed, intPtr(137), "command exited with code 137 (killed: out of memory?)"
		}
		recs = append(recs, r)
	}
	recs = append(recs, instanceRecord{Index: 9, InstanceID: "i-0a1b2c3d4e5f60009", Region: "us-east-1", InstanceType: "m5.large",
		State: "running", Attempt: 1, LaunchedAt: ago(41 * time.Minute), PriceHourly: 0.096, PriceSource: priceSourceAPI})
	return s, recs
}

func completedWithFailuresSweep() (*sweep, []instanceRecord) {
	s := &sweep{
		SweepID: "sw-20261124-0c11d2", SweepName: "a-very-long-sweep-name-that-goes-on-and-on-past-any-sensible-width", UserID: "arn:aws:iam::123456789012:user/ana",
		CreatedAt: ago(26 * time.Hour).Format(time.RFC3339), UpdatedAt: ago(20 * time.Hour).Format(time.RFC3339), CompletedAt: ago(20 * time.Hour).Format(time.RFC3339),
		MaxConcurrent: 2, TotalParams: 6, Region: "us-west-2", Status: statusCompleted, NextToLaunch: 6, Launched: 6, Failed: 3, Version: 30,
		Counts: counts{Succeeded: 3, Failed: 1, Expired: 1, Unknown: 1},
	}
	outcomes := []string{outcomeSucceeded, outcomeFailed, outcomeSucceeded, outcomeExpired, outcomeUnknown, outcomeSucceeded}
	var recs []instanceRecord
	for i, o := range outcomes {
		r := instanceRecord{Index: i, InstanceID: fmt.Sprintf("i-0ffee%012d", i), Region: "us-west-2", InstanceType: "g4dn.xlarge",
			State: "terminated", Outcome: o, Attempt: 1, LaunchedAt: ago(25 * time.Hour), TerminatedAt: ago(24*time.Hour - time.Duration(i)*7*time.Minute)}
		switch o {
		case outcomeFailed:
			r.ExitCode = intPtr(1)
			r.ErrorMessage = "Traceback (most recent call last):\n  File \"train.py\", line 88, in <module>\n    main()\nRuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"
		case outcomeExpired:
			r.ErrorMessage = "ttl 1h0m0s reached: terminated"
		case outcomeUnknown:
			r.Attempt = 3
			r.ErrorMessage = "instance ended without reporting an exit code (spot interruption on the last of 3 attempts)"
		}
		recs = append(recs, r)
	}
	return s, recs
}

func cancelledSweep() (*sweep, []instanceRecord) {
	s := &sweep{
		SweepID: "sw-20261125-c4nc3l", SweepName: "ablation", UserID: "arn:aws:iam::123456789012:user/ana",
		CreatedAt: ago(50 * time.Minute).Format(time.RFC3339), UpdatedAt: ago(3 * time.Minute).Format(time.RFC3339), CompletedAt: ago(3 * time.Minute).Format(time.RFC3339),
		MaxConcurrent: 4, TotalParams: 100, Region: "us-east-1", Status: statusCancelled, CancelRequested: true,
		NextToLaunch: 10, Launched: 10, Version: 12, ErrorMessage: "cancelled by arn:aws:iam::123456789012:user/ana",
		Counts: counts{Succeeded: 6, Cancelled: 4},
	}
	var recs []instanceRecord
	for i := 0; i < 10; i++ {
		r := instanceRecord{Index: i, InstanceID: fmt.Sprintf("i-0cafe%012d", i), Region: "us-east-1", InstanceType: "t3.micro",
			State: "terminated", Outcome: outcomeSucceeded, Attempt: 1, LaunchedAt: ago(45 * time.Minute), TerminatedAt: ago(20 * time.Minute)}
		if i >= 6 {
			r.Outcome, r.TerminatedAt = outcomeCancelled, ago(3*time.Minute)
		}
		recs = append(recs, r)
	}
	return s, recs
}

var statusFixtures = map[string]func() (*sweep, []instanceRecord){
	"running":               runningSweep,
	"completed-with-failed": completedWithFailuresSweep,
	"cancelled":             cancelledSweep,
}

func TestStatusGolden(t *testing.T) {
	for name, fixture := range statusFixtures {
		t.Run(name, func(t *testing.T) {
			s, recs := fixture()
			v := buildStatus(context.Background(), s, recs, newTablePricer(s.Region), statusNow)
			var got bytes.Buffer
			if err := renderStatus(&got, v, textStyle{}); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", "status", name+".golden")
			if updateGolden() {
				if err := os.WriteFile(path, got.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if got.String() != string(want) {
				t.Errorf("status text differs from %s (run with -update if the change is intended)\ngot:\n%s\nwant:\n%s", path, got.String(), want)
			}
			assertFitsWidth(t, got.String())
		})
	}
}

func assertFitsWidth(t *testing.T, text string) {
	t.Helper()
	for i, l := range strings.Split(text, "\n") {
		if n := utf8.RuneCountInString(l); n > screenWidth {
			t.Errorf("line %d is %d columns wide (max %d): %q", i+1, n, screenWidth, l)
		}
	}
}

// TestStatusFitsWidthWithWideCells makes every cell too wide and checks the cut.
func TestStatusFitsWidthWithWideCells(t *testing.T) {
	long := strings.Repeat("x", 200)
	s := &sweep{SweepID: "sw-" + long[:60], SweepName: long, CreatedAt: ago(time.Hour).Format(time.RFC3339), Region: "ap-southeast-2",
		MaxConcurrent: 100000, TotalParams: 100000, Status: statusRunning, ErrorMessage: long,
		Counts: counts{Succeeded: 99990, Failed: 1}}
	for i := 0; i < 30; i++ {
		s.Alive = append(s.Alive, aliveInstance{Index: 99000 + i, InstanceID: "i-" + long[:40], Region: "ap-southeast-2", InstanceType: "x" + long[:30], LaunchedAt: ago(time.Minute)})
	}
	recs := []instanceRecord{{Index: 5, InstanceID: "i-" + long, Region: "me-central-1", InstanceType: long, Outcome: outcomeFailed, ErrorMessage: long}}
	v := buildStatus(context.Background(), s, recs, newTablePricer("us-east-1"), statusNow)
	var out bytes.Buffer
	if err := renderStatus(&out, v, textStyle{color: true}); err != nil {
		t.Fatal(err)
	}
	plain := stripANSI(out.String())
	assertFitsWidth(t, plain)
	if !strings.Contains(out.String(), "\x1b[36mRUNNING\x1b[0m") {
		t.Errorf("no colour on the status word:\n%s", out.String())
	}
	if !strings.Contains(plain, "... and 15 more alive") {
		t.Errorf("alive table not capped:\n%s", plain)
	}
}

func stripANSI(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == 0x1b {
			for i < len(s) && s[i] != 'm' {
				i++
			}
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func TestStatusJSONDocument(t *testing.T) {
	s, recs := runningSweep()
	v := buildStatus(context.Background(), s, recs, newTablePricer(s.Region), statusNow)
	raw, err := json.Marshal(v.doc())
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"sweep_id", "sweep_name", "user_id", "created_at", "updated_at", "s3_params_key", "max_concurrent",
		"launch_delay", "total_params", "region", "aws_account_id", "status", "next_to_launch", "launched", "failed", "version",
		"cancel_requested", "counts", "instances", "estimated_cost_usd"} {
		if _, ok := doc[k]; !ok {
			t.Errorf("status document has no %q", k)
		}
	}
	c := doc["counts"].(map[string]any)
	want := map[string]float64{"pending": 8, "running": 3, "succeeded": 8, "failed": 1, "expired": 0, "cancelled": 0, "unknown": 0}
	for k, w := range want {
		if c[k] != w {
			t.Errorf("counts.%s = %v, want %v", k, c[k], w)
		}
	}
	inst := doc["instances"].([]any)
	if len(inst) != 12 {
		t.Fatalf("%d instances, want 12 (9 ended, 3 alive)", len(inst))
	}
	for _, x := range inst {
		m := x.(map[string]any)
		for _, k := range []string{"index", "instance_id", "region", "instance_type", "state", "outcome", "attempt", "launched_at", "terminated_at", "error_message", "price_hourly", "price_source"} {
			if _, ok := m[k]; !ok {
				t.Errorf("instance %v has no %q", m["index"], k)
			}
		}
		if at, ok := m["launched_at"].(string); ok {
			if _, err := time.Parse(time.RFC3339, at); err != nil {
				t.Errorf("launched_at %q is not RFC 3339", at)
			}
		}
	}
	// Ended cost from the record (0.7123) plus the running ones so far:
	// 41 min of m5.large at the recorded 0.096, 12m05s of c5.xlarge spot priced from
	// the table's on-demand bound 0.17, and the slot not yet launched (0).
	wantCost := roundUSD(0.7123 + roundUSD(41.0/60*0.096) + roundUSD((12*60+5)/3600.0*0.17))
	if got := doc["estimated_cost_usd"].(float64); got != wantCost {
		t.Errorf("estimated_cost_usd = %v, want %v", got, wantCost)
	}
	i10 := inst[10].(map[string]any)
	if i10["price_source"] != priceSourceOnDemandBound || i10["price_hourly"] != 0.17 {
		t.Errorf("index 10 priced %v from %v, want 0.17 on-demand-bound", i10["price_hourly"], i10["price_source"])
	}
	if inst[11].(map[string]any)["launched_at"] != nil {
		t.Errorf("a slot not yet launched has launched_at %v, want null", inst[11].(map[string]any)["launched_at"])
	}
}

func TestFmtAge(t *testing.T) {
	for d, want := range map[time.Duration]string{
		-time.Second: "0s", 45 * time.Second: "45s", 12*time.Minute + 5*time.Second: "12m05s",
		2*time.Hour + 13*time.Minute + 59*time.Second: "2h13m", 76 * time.Hour: "3d04h",
	} {
		if got := fmtAge(d); got != want {
			t.Errorf("fmtAge(%v) = %q, want %q", d, got, want)
		}
	}
}

// BenchmarkStatusView100k prices, counts and renders a 100,000-item sweep: what one
// `spawn status` (and one --watch refresh) costs once the items are read.
func BenchmarkStatusView100k(b *testing.B) {
	const n = 100000
	s := &sweep{SweepID: "sw-bench", SweepName: "bench", CreatedAt: ago(time.Hour).Format(time.RFC3339), Region: "us-east-1",
		MaxConcurrent: 500, TotalParams: n, Status: statusRunning, Counts: counts{Succeeded: n - 600, Failed: 100}}
	recs := make([]instanceRecord, 0, n)
	for i := 0; i < n-500; i++ {
		r := instanceRecord{Index: i, InstanceID: fmt.Sprintf("i-%017d", i), Region: "us-east-1", InstanceType: "c5.large", State: "terminated",
			Outcome: outcomeSucceeded, Attempt: 1, LaunchedAt: ago(time.Hour), TerminatedAt: ago(30 * time.Minute)}
		if i%1000 == 0 {
			r.Outcome, r.ErrorMessage = outcomeFailed, "command exited with code 1"
		}
		recs = append(recs, r)
	}
	for i := n - 500; i < n; i++ {
		s.Alive = append(s.Alive, aliveInstance{Index: i, Attempt: 1, InstanceID: fmt.Sprintf("i-%017d", i), Region: "us-east-1", InstanceType: "c5.large", LaunchedAt: ago(time.Minute)})
	}
	p := newTablePricer("us-east-1")
	var jsonBytes int
	b.ResetTimer()
	for b.Loop() {
		v := buildStatus(context.Background(), s, recs, p, statusNow)
		if err := renderStatus(io.Discard, v, textStyle{}); err != nil {
			b.Fatal(err)
		}
		raw, err := json.Marshal(v.doc())
		if err != nil {
			b.Fatal(err)
		}
		jsonBytes = len(raw)
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/view")
	b.ReportMetric(float64(jsonBytes), "json-bytes")
}

// The orchestrator line: how long ago the last step ran; when nobody has stepped for
// two lease periods, that nobody drives the sweep and what continues it, by its mode.
func TestStatusSaysWhetherAnOrchestratorRuns(t *testing.T) {
	for _, tc := range []struct {
		name     string
		edit     func(*sweep)
		want     []string
		wantNone bool
	}{
		{"stepping", func(s *sweep) {}, []string{"orchestrator  last step 8s ago"}, false},
		{"detached, chain dead", func(s *sweep) { s.LastStepAt = ago(7 * time.Minute) },
			[]string{"orchestrator  none for 7m00s: the watchdog continues it within 5 min;", "'spawn resume sw-20261125-7f3a9c' does it now"}, false},
		{"no-detach process gone", func(s *sweep) { s.LastStepAt, s.Detached = ago(7*time.Minute), false },
			[]string{"its --no-detach process stopped", "'spawn resume sw-20261125-7f3a9c' continues it"}, false},
		{"just launched", func(s *sweep) { s.LastStepAt, s.CreatedAt = time.Time{}, ago(3*time.Second).Format(time.RFC3339) },
			[]string{"orchestrator  starting"}, false},
		{"ended", func(s *sweep) { s.Status = statusCompleted }, nil, true},
	} {
		s, recs := runningSweep()
		tc.edit(s)
		v := buildStatus(context.Background(), s, recs, newTablePricer(s.Region), statusNow)
		var b bytes.Buffer
		if err := renderStatus(&b, v, textStyle{}); err != nil {
			t.Fatal(err)
		}
		out := b.String()
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Errorf("%s: status lacks %q:\n%s", tc.name, w, out)
			}
		}
		if tc.wantNone && strings.Contains(out, "orchestrator") {
			t.Errorf("%s: an ended sweep shows an orchestrator line:\n%s", tc.name, out)
		}
		doc := v.doc()
		if tc.name == "stepping" && (doc.Orchestrator.Owner != "lambda-4b1c" || doc.Orchestrator.LastStepAt == nil || doc.Orchestrator.LeaseExpiresAt == nil) {
			t.Errorf("JSON orchestrator %+v", doc.Orchestrator)
		}
	}
}
