package main

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
)

// lifeEC2 is an EC2 whose instances the test ends, tags and makes EC2 forget, one call
// at a time: what the engine sees of an instance's end as AWS documents it.
type lifeEC2 struct {
	emptyEC2
	clk        clock
	insts      map[string]*lifeInstance // by id
	byToken    map[string]string
	launches   int
	terminated int
}

type lifeInstance struct {
	id, token   string
	launchedAt  time.Time
	ended       bool
	endedAt     time.Time
	tagged      bool // the exit-code tag is visible
	code        int
	forgotten   bool // EC2 no longer shows it
	invisibleTo time.Time
	launchTags  []ec2types.Tag // from RunInstances' TagSpecifications
}

func newLifeEC2(clk clock) *lifeEC2 {
	return &lifeEC2{clk: clk, insts: map[string]*lifeInstance{}, byToken: map[string]string{}}
}

func (f *lifeEC2) RunInstances(_ context.Context, in *ec2.RunInstancesInput, _ ...func(*ec2.Options)) (*ec2.RunInstancesOutput, error) {
	token := aws.ToString(in.ClientToken)
	id, ok := f.byToken[token]
	if !ok {
		f.launches++
		id = fmt.Sprintf("i-%04d", f.launches)
		f.byToken[token] = id
		f.insts[id] = &lifeInstance{id: id, token: token, launchedAt: f.clk.Now()}
		for _, spec := range in.TagSpecifications {
			f.insts[id].launchTags = append(f.insts[id].launchTags, spec.Tags...)
		}
	}
	return &ec2.RunInstancesOutput{Instances: []ec2types.Instance{f.describe(f.insts[id])}}, nil
}

func (f *lifeEC2) describe(li *lifeInstance) ec2types.Instance {
	inst := ec2types.Instance{InstanceId: aws.String(li.id), ClientToken: aws.String(li.token), LaunchTime: aws.Time(li.launchedAt),
		State: &ec2types.InstanceState{Name: ec2types.InstanceStateNameRunning}}
	if li.ended {
		inst.State.Name = ec2types.InstanceStateNameTerminated
		inst.StateTransitionReason = aws.String("User initiated (" + li.endedAt.UTC().Format("2006-01-02 15:04:05 MST") + ")")
	}
	inst.Tags = slices.Clone(li.launchTags)
	if li.tagged {
		inst.Tags = append(inst.Tags, ec2types.Tag{Key: aws.String(tagExitCode), Value: aws.String(fmt.Sprint(li.code))})
	}
	return inst
}

func (f *lifeEC2) DescribeInstances(_ context.Context, in *ec2.DescribeInstancesInput, _ ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error) {
	var out []ec2types.Instance
	for _, li := range f.insts {
		if li.forgotten || f.clk.Now().Before(li.invisibleTo) {
			continue
		}
		ok := len(in.InstanceIds) == 0
		for _, id := range in.InstanceIds {
			ok = ok || id == li.id
		}
		for _, flt := range in.Filters {
			if aws.ToString(flt.Name) == "client-token" {
				ok = ok && len(flt.Values) > 0 && flt.Values[0] == li.token
			}
		}
		if ok {
			out = append(out, f.describe(li))
		}
	}
	return &ec2.DescribeInstancesOutput{Reservations: []ec2types.Reservation{{Instances: out}}}, nil
}

func (f *lifeEC2) TerminateInstances(_ context.Context, in *ec2.TerminateInstancesInput, _ ...func(*ec2.Options)) (*ec2.TerminateInstancesOutput, error) {
	for _, id := range in.InstanceIds {
		if li, ok := f.insts[id]; ok && !li.ended {
			f.terminated++
			li.ended, li.endedAt = true, f.clk.Now()
		}
	}
	return &ec2.TerminateInstancesOutput{}, nil
}

func (f *lifeEC2) end(id string, code int, tagged bool) {
	li := f.insts[id]
	li.ended, li.endedAt, li.code, li.tagged = true, f.clk.Now(), code, tagged
}

// memReports is a bucket of exit records (key → body) the engine reads through its
// exitReports hook, as it reads S3.
type memReports map[string]string

func (m memReports) read(_ context.Context, sw *sweep, e *aliveInstance) (*exitReport, error) {
	for k, body := range m {
		if strings.HasPrefix(k, exitReportPrefix(sw.SweepID, e.Index, e.Attempt)) && strings.HasSuffix(k, ":"+e.InstanceID+".json") {
			return parseExitReport([]byte(body)), nil
		}
	}
	return nil, nil
}

// reportFixture is a RUNNING sweep of n items at max 1 on a lifeEC2, with exit records
// read from reports.
func reportFixture(t *testing.T, n int) (*fakeStore, *orchestrator, *napClock, *lifeEC2, memReports) {
	t.Helper()
	st := newFakeStore()
	sw := &sweep{SweepID: "sw-r", Status: statusRunning, MaxConcurrent: 1, TotalParams: n, Region: "us-east-1", PollInterval: "10s"}
	if err := st.createSweep(context.Background(), sw); err != nil {
		t.Fatal(err)
	}
	clk := &napClock{now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	api := newLifeEC2(clk)
	o := newTestOrchestrator(st, everyRegion(api), clk)
	for i := range n {
		o.items = append(o.items, item{Index: i, InstanceType: "t3.micro"})
	}
	o.jitter = func() float64 { return 0 }
	o.price = func(context.Context, string, string, bool) (float64, string) { return 0.10, "test" }
	reports := memReports{}
	o.exitReports = reports.read
	return st, o, clk, api, reports
}

// steps runs k steps, 10 s apart.
func steps(t *testing.T, st *fakeStore, o *orchestrator, clk *napClock, k int) *sweep {
	t.Helper()
	for range k {
		cur, err := st.loadSweep(context.Background(), "sw-r")
		if err != nil {
			t.Fatal(err)
		}
		if err := o.step(context.Background(), cur); err != nil {
			t.Fatalf("step: %v", err)
		}
		clk.now = clk.now.Add(10 * time.Second)
	}
	sw, _ := st.loadSweep(context.Background(), "sw-r")
	return sw
}

func instanceOutcome(t *testing.T, st *fakeStore, index int) instanceRecord {
	t.Helper()
	recs, _ := st.listInstances(context.Background(), "sw-r")
	for _, r := range recs {
		if r.Index == index && r.Outcome != "" {
			return r
		}
	}
	t.Fatalf("item %d has no outcome; records %+v", index, recs)
	return instanceRecord{}
}

// An instance tags its exit code and powers off within seconds, and tags show late: the
// engine sees it terminated with no tag first. It frees the slot at once, and the item
// gets the code the tag shows 20 s later, not "unknown".
func TestLateExitTagIsWaitedFor(t *testing.T) {
	st, o, clk, api, _ := reportFixture(t, 2)
	steps(t, st, o, clk, 2)
	api.end("i-0001", 0, false)
	sw := steps(t, st, o, clk, 1)
	if sw.Counts.Unknown != 0 || len(sw.Alive) != 2 || api.launches != 2 {
		t.Fatalf("after the end with no tag: counts %+v, %d entries, %d launches; want the item waiting for its report and the next one launched",
			sw.Counts, len(sw.Alive), api.launches)
	}
	api.insts["i-0001"].tagged = true
	sw = steps(t, st, o, clk, 2)
	if rec := instanceOutcome(t, st, 0); rec.Outcome != outcomeSucceeded || sw.Counts.Succeeded != 1 {
		t.Errorf("outcome %q (%s), counts %+v; want succeeded by the late tag", rec.Outcome, rec.ErrorMessage, sw.Counts)
	}
}

// With no report at all, the item is unknown once its report had the wait to appear,
// and not before.
func TestNoReportIsUnknownAfterTheWait(t *testing.T) {
	st, o, clk, api, _ := reportFixture(t, 1)
	o.reportWait = time.Minute
	steps(t, st, o, clk, 2)
	api.end("i-0001", 0, false)
	if sw := steps(t, st, o, clk, 5); sw.Counts.Unknown != 0 {
		t.Fatalf("unknown after 50 s: %+v", sw.Counts)
	}
	sw := steps(t, st, o, clk, 3)
	if sw.Counts.Unknown != 1 || sw.Status != statusCompleted {
		t.Errorf("after the wait: %s %+v, want COMPLETED with the item unknown", sw.Status, sw.Counts)
	}
}

// The tag never shows (or EC2 forgot the instance while nobody stepped: after a stalled
// chain or a paused --no-detach): the exit record in S3 gives the outcome, and the cost
// comes from the uptime it reports.
func TestExitRecordOutlivesEC2(t *testing.T) {
	for _, tc := range []struct {
		name         string
		seen, forget bool
	}{
		{"ended, tag lost", true, false},
		{"seen running, then forgotten", true, true},
		{"forgotten before anyone saw it", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, o, clk, api, reports := reportFixture(t, 1)
			// The first step launches; a second sees it running. Unseen, it ran and was
			// forgotten while nobody looked (the launching invocation died).
			steps(t, st, o, clk, 1)
			if tc.seen {
				steps(t, st, o, clk, 1)
			}
			api.end("i-0001", 2, false)
			api.insts["i-0001"].forgotten = tc.forget
			reports[exitReportKey("sw-r", 0, 1, "AROAEXAMPLE:i-0001")] = `{"exit_code":2,"ran_seconds":1800}`
			reports[exitReportKey("sw-r", 0, 1, "AROAEXAMPLE:i-0001x")] = `{"exit_code":0}` // another instance's name
			sw := steps(t, st, o, clk, 1)
			rec := instanceOutcome(t, st, 0)
			if rec.Outcome != outcomeFailed || rec.ExitCode == nil || *rec.ExitCode != 2 || sw.Status != statusCompleted {
				t.Fatalf("outcome %q exit %v (%s), sweep %s; want failed with code 2 from the exit record", rec.Outcome, derefInt(rec.ExitCode), rec.ErrorMessage, sw.Status)
			}
			if tc.forget && math.Abs(rec.CostUSD-0.05) > 1e-9 {
				t.Errorf("cost $%.4f at $%.2f/h, want half an hour's by the reported uptime", rec.CostUSD, rec.PriceHourly)
			}
		})
	}
}

func TestParseExitReport(t *testing.T) {
	for body, want := range map[string]int{
		`{"exit_code":0}`: 0, `{"exit_code":137,"ran_seconds":3.5}`: 137,
		`{"exit_code":-1}`: -1, `{"exit_code":256}`: -1, `{}`: -1, `not json`: -1, `{"exit_code":"0"}`: -1,
		`{"exit_code":1,"pad":"` + strings.Repeat("x", maxExitReportBytes) + `"}`: -1,
	} {
		got := -1
		if r := parseExitReport([]byte(body)); r.ExitCode != nil {
			got = *r.ExitCode
		}
		if got != want {
			t.Errorf("parseExitReport(%.40q) = %d, want %d", body, got, want)
		}
	}
}

// readExitReport on the emulator's S3: it finds the record named by the instance it
// asks for among its item's records, and none for an instance that wrote none.
func TestReadExitReportOnEmulator(t *testing.T) {
	a := newTestAWS(t)
	bucket := createTestBucket(t, a, "spawn-exit")
	api := newS3Client(a.cfg, "")
	ctx := context.Background()
	put := func(key, body string) {
		if _, err := api.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(key), Body: strings.NewReader(body)}); err != nil {
			t.Fatal(err)
		}
	}
	put(exitReportKey("sw-e", 3, 1, "AROAEXAMPLE:i-0aaa"), `{"exit_code":0,"ran_seconds":12}`)
	put(exitReportKey("sw-e", 3, 1, "AROAEXAMPLE:i-0bbb"), `{"exit_code":5}`)
	put(exitReportKey("sw-e", 30, 1, "AROAEXAMPLE:i-0ccc"), `{"exit_code":7}`)
	put(exitReportKey("sw-e", 3, 2, "AROAEXAMPLE:i-0eee"), `{"exit_code":8}`)
	put(exitReportPrefix("sw-e", 3, 1)+"nested/AROAEXAMPLE:i-0ddd.json", `{"exit_code":9}`)
	for id, want := range map[string]int{"i-0aaa": 0, "i-0bbb": 5, "i-0ccc": -1, "i-0ddd": -1, "i-0eee": -1, "i-0zzz": -1} {
		rep, err := readExitReport(ctx, api, bucket, "sw-e", 3, 1, id)
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		got := -1
		if rep != nil && rep.ExitCode != nil {
			got = *rep.ExitCode
		}
		if got != want {
			t.Errorf("item 3, instance %s: exit %d, want %d", id, got, want)
		}
	}
	// The instance of an attempt whose id was never learned: named by the attempt's one
	// record, and by none when there are two.
	for attempt, want := range map[int]string{2: "i-0eee", 1: "", 5: ""} {
		if got, err := exitReporter(ctx, api, bucket, "sw-e", 3, attempt); err != nil || got != want {
			t.Errorf("attempt %d's reporter: %q, %v; want %q", attempt, got, err, want)
		}
	}
}

// TestVanishedParamsDrainThenFail: a fresh invocation cannot read the sweep's params
// object (deleted, or access refused) while an instance runs. It launches nothing, keeps
// watching the instance to its end (its outcome recorded), then ends the sweep FAILED
// with the reason: never RUNNING with nobody able to drive it, and never with an
// instance left unwatched.
func TestVanishedParamsDrainThenFail(t *testing.T) {
	st, o, clk, api, _ := reportFixture(t, 3)
	steps(t, st, o, clk, 2) // item 0 launched and seen running
	cur, _ := st.loadSweep(context.Background(), "sw-r")
	if err := releaseLease(context.Background(), st, cur, cur.LeaseOwner); err != nil {
		t.Fatal(err)
	}
	fresh := newTestOrchestrator(st, everyRegion(api), clk)
	fresh.loadItems = func(context.Context, *sweep) ([]item, error) {
		return nil, &smithy.GenericAPIError{Code: "NoSuchKey", Message: "The specified key does not exist."}
	}
	ends := clk.now.Add(3 * time.Minute)
	clk.onNap = func(now time.Time) {
		if li := api.insts["i-0001"]; !li.ended && !now.Before(ends) {
			api.end("i-0001", 0, true)
		}
	}
	if err := fresh.run(context.Background(), "sw-r", time.Time{}); err != nil {
		t.Fatalf("run: %v", err)
	}
	sw, _ := st.loadSweep(context.Background(), "sw-r")
	if sw.Status != statusFailed || !strings.Contains(sw.ErrorMessage, "NoSuchKey") || sw.LeaseOwner != "" {
		t.Errorf("sweep %s (%q), lease %q; want FAILED with the reason, released", sw.Status, sw.ErrorMessage, sw.LeaseOwner)
	}
	if rec := instanceOutcome(t, st, 0); rec.Outcome != outcomeSucceeded || api.launches != 1 {
		t.Errorf("item 0 %s, %d launches; want the running instance watched to its success and nothing launched", rec.Outcome, api.launches)
	}
	if clk.now.Before(ends) {
		t.Errorf("ended at %v, before the instance did", clk.now)
	}
}
