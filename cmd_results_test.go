package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// On the emulator: simulated instances write their results under their own names, the
// engine's finish stores the metrics in the instance items, and `spawn results` joins
// them with the params launch uploaded.
func TestResultsCommandOnEmulator(t *testing.T) {
	e := newStatusEnv(t)
	ctx := context.Background()
	s3c := newS3Client(e.a.cfg, "")
	if _, err := s3c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(e.bucket)}); err != nil {
		t.Fatalf("CreateBucket: %v", err)
	}
	e.env["XDG_CACHE_HOME"] = t.TempDir() // the CLI's params cache
	ps, err := readParamFile("grid.yaml", []byte("defaults: {command: python3 train.py, instance_type: c7g.large}\n"+
		"grid: {lr: [0.1, 0.01, 0.001]}\nobjective: {metric: loss, goal: min}\n"), paramFileOptions{Canonical: true})
	if err != nil {
		t.Fatal(err)
	}
	id := uniqueName("sw")
	key, sum, err := newParamsStore(s3c, e.bucket, t.TempDir()).uploadParams(ctx, id, ps.Canonical)
	if err != nil {
		t.Fatal(err)
	}
	sw := &sweep{SweepID: id, SweepName: "results", UserID: e.userID, CreatedAt: formatRecordTime(time.Now()), S3Bucket: e.bucket,
		S3ParamsKey: key, ParamsChecksum: sum, MaxConcurrent: 3, LaunchDelay: "0s", PollInterval: "10s", TotalParams: 3,
		Region: "us-east-1", AWSAccountID: "000000000000", Status: statusRunning}
	if err := e.store.createSweep(ctx, sw); err != nil {
		t.Fatal(err)
	}
	clk := &napClock{now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	api := newLifeEC2(clk)
	o := newTestOrchestrator(e.store, everyRegion(api), clk)
	o.items, o.jitter = ps.Items, func() float64 { return 0 }
	o.price = func(context.Context, string, string, bool) (float64, string) { return 0.10, "test" }
	o.results = func(ctx context.Context, sw *sweep, a *aliveInstance) (*itemResult, error) {
		return readResult(ctx, s3c, sw.S3Bucket, sw.SweepID, a.Index, a.InstanceID)
	}
	step := func(k int) *sweep {
		for range k {
			cur, err := e.store.loadSweep(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if err := o.step(ctx, cur); err != nil {
				t.Fatalf("step: %v", err)
			}
			clk.now = clk.now.Add(10 * time.Minute)
		}
		cur, _ := e.store.loadSweep(ctx, id)
		return cur
	}
	step(2)
	put := func(index int, name, body string) {
		k := resultPrefix(id, index) + name + ".json"
		if _, err := s3c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(e.bucket), Key: aws.String(k), Body: strings.NewReader(body)}); err != nil {
			t.Fatalf("PutObject %s: %v", k, err)
		}
	}
	// Items 0 and 2 write results; item 1 writes none and fails, and a result under
	// another instance's name is not believed.
	put(0, "AROAEXAMPLE:i-0001", `{"loss": 0.31, "acc": 0.88}`)
	put(2, "AROAEXAMPLE:i-0003", `{"loss": 0.12, "acc": 0.91, "note": "best so far"}`)
	put(1, "AROAEXAMPLE:i-0999", `{"loss": 0.01}`)
	for i, code := range []int{0, 1, 0} {
		api.end(fmt.Sprintf("i-%04d", i+1), code, true)
	}
	if cur := step(2); cur.Status != statusCompleted {
		t.Fatalf("sweep %s, counts %+v", cur.Status, cur.Counts)
	}
	recs, err := e.store.listInstances(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if r.Index == 2 && (r.Metrics["loss"] != 0.12 || !strings.Contains(r.ResultError, `"note"`)) {
			t.Errorf("item 2 stored %v, %q", r.Metrics, r.ResultError)
		}
	}

	out, errOut, code := runSpawn(t, e.env, e.args("results", id, "--output", "csv")...)
	if code != 0 {
		t.Fatalf("results: exit %d, stderr %s", code, errOut)
	}
	checkResultsGolden(t, "emulator.csv", strings.ReplaceAll(out, id, "SWEEP"))

	out, errOut, code = runSpawn(t, e.env, e.args("status", id)...)
	if code != 0 || !strings.Contains(out, "\nbest     item 2: loss 0.12 (min)\n") {
		t.Errorf("status: exit %d, stderr %s, no best line:\n%s", code, errOut, out)
	}
	// The CI summary: both Markdown views through the command line, the flag after the id.
	out, errOut, code = runSpawn(t, e.env, e.args("results", id, "--output", "markdown", "--top", "2")...)
	if code != 0 {
		t.Fatalf("results --output markdown: exit %d, stderr %s", code, errOut)
	}
	checkMarkdownGolden(t, "emulator-results.md", strings.ReplaceAll(out, id, "SWEEP"))
	out, errOut, code = runSpawn(t, e.env, e.args("status", id, "--output", "markdown")...)
	if code != 0 || !strings.HasPrefix(out, "### ❌ Sweep results: COMPLETED\n") || !strings.Contains(out, "\n- **best** item 2: loss 0.12 (min)\n") ||
		!strings.Contains(out, "\n| 0 | 0 | 2 | 1 | 0 | 0 | 0 |\n") {
		t.Errorf("status --output markdown: exit %d, stderr %s:\n%s", code, errOut, out)
	}
	_, errOut, code = runSpawn(t, e.env, e.args("results", id, "--sort", "-los")...)
	if msg, help, ok := usageError(errOut); code != exitUsage || !ok || !strings.Contains(msg, "the metrics are acc, loss") || help != "run 'spawn results --help'" {
		t.Errorf("unknown sort key: exit %d, stderr %q", code, errOut)
	}
	_, errOut, code = runSpawn(t, e.env, e.args("status", "--output", "csv", id)...)
	if code != exitUsage || !strings.Contains(errOut, "--output csv is for 'spawn results' only") {
		t.Errorf("status --output csv: exit %d, stderr %q", code, errOut)
	}
}
