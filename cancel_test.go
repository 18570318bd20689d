package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"
)

// `spawn cancel` that finds the sweep completed once it holds the lease leaves it
// COMPLETED (and hands the lease back).
func TestCancelLeavesCompletedSweep(t *testing.T) {
	st := completesOnCancelStore{newFakeStore()}
	sw := &sweep{SweepID: "sw-cancel-completed", Status: statusRunning, MaxConcurrent: 1, PollInterval: "1s", TotalParams: 1,
		NextToLaunch: 1, Launched: 1, Region: "us-east-1"}
	if err := st.createSweep(context.Background(), sw); err != nil {
		t.Fatal(err)
	}
	// The dead holder's lease is on another clock: the cancel waits a full lease on its
	// own (a nap clock here) before it takes over.
	o := newTestOrchestrator(st, everyRegion(emptyEC2{}), &napClock{now: time.Now()})
	got, already, err := o.cancelRun(context.Background(), sw.SweepID)
	if err != nil {
		t.Fatalf("cancel: %v", err)
	}
	stored, err := st.loadSweep(context.Background(), sw.SweepID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != statusCompleted || stored.Status != statusCompleted || stored.LeaseOwner != "" || stored.Counts.Cancelled != 0 {
		t.Fatalf("cancel answered %s (already %v); stored %s, lease %q, counts %+v; want COMPLETED, released, nothing cancelled",
			got.Status, already, stored.Status, stored.LeaseOwner, stored.Counts)
	}
}

// TestCancelFindsInstancesByTag: cancel terminates instances of the sweep that no record
// names, found by their tags, and never one of another sweep, even where the backend
// ignores the tag filter (kumo: nothing is found by tag, nothing foreign is touched).
func TestCancelFindsInstancesByTag(t *testing.T) {
	a := newTestAWS(t)
	store := newTestStore(t)
	api := ec2.NewFromConfig(a.cfg)
	image := testImage(t, api)
	ctx := context.Background()
	sw := &sweep{SweepID: uniqueName("sw"), SweepName: "cancel", UserID: "arn:aws:iam::000000000000:user/test",
		Status: statusRunning, MaxConcurrent: 2, PollInterval: "1s", TotalParams: 4, NextToLaunch: 2,
		Region: a.cfg.Region, AWSAccountID: "000000000000"}
	if err := store.createSweep(ctx, sw); err != nil {
		t.Fatal(err)
	}
	run := func(sweepID string) string {
		out, err := api.RunInstances(ctx, &ec2.RunInstancesInput{
			ImageId: aws.String(image), InstanceType: ec2types.InstanceTypeT3Micro, MinCount: aws.Int32(1), MaxCount: aws.Int32(1),
			TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeInstance, Tags: []ec2types.Tag{
				{Key: aws.String("spawn:sweep-id"), Value: aws.String(sweepID)},
				{Key: aws.String("spawn:managed"), Value: aws.String("true")},
			}}},
		})
		if err != nil {
			t.Fatalf("RunInstances: %v", err)
		}
		return aws.ToString(out.Instances[0].InstanceId)
	}
	ours := []string{run(sw.SweepID), run(sw.SweepID)}
	foreign := run(uniqueName("other"))
	o := newTestOrchestrator(store, everyRegion(api), nil)
	o.owner = "cancel-test"
	got, already, err := o.cancelRun(ctx, sw.SweepID)
	if err != nil || already || got.Status != statusCancelled {
		t.Fatalf("cancel: %v, already %v, status %v", err, already, got)
	}
	if got.Counts.Cancelled != 4 || got.LeaseOwner != "" {
		t.Errorf("counts %+v, lease %q", got.Counts, got.LeaseOwner)
	}
	states := map[string]ec2types.InstanceStateName{}
	insts, err := describeInstances(ctx, api, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, inst := range insts {
		states[aws.ToString(inst.InstanceId)] = inst.State.Name
	}
	if !liveState(states[foreign]) {
		t.Errorf("an instance of another sweep was terminated: %s", states[foreign])
	}
	if !a.keepsEC2Tags() {
		if len(o.terminated) != 0 {
			t.Errorf("terminated %v on a backend that ignores tags", o.terminated)
		}
		t.Logf("backend %s ignores EC2 tags: only checked that nothing foreign was terminated", a.backend.name)
		return
	}
	for _, id := range ours {
		if liveState(states[id]) {
			t.Errorf("instance %s of the sweep is still %s", id, states[id])
		}
	}
	if len(o.terminated) != 2 {
		t.Errorf("terminated %v, want the sweep's 2", o.terminated)
	}
}

// regionEC2 is one region's EC2 for the cancel tests: instances by id, with their
// client token and tags; a region may refuse every call; an instance may stay invisible
// until a time; RunInstances is counted and refused (cancel must never call it).
type regionEC2 struct {
	clk    clock
	refuse error
	insts  map[string]*regionInstance
	runs   int
	killed []string
}

type regionInstance struct {
	token     string
	tags      map[string]string
	state     ec2types.InstanceStateName
	visibleAt time.Time
}

func (f *regionEC2) RunInstances(context.Context, *ec2.RunInstancesInput, ...func(*ec2.Options)) (*ec2.RunInstancesOutput, error) {
	f.runs++
	return nil, &smithy.GenericAPIError{Code: "InsufficientInstanceCapacity", Message: "no capacity", Fault: smithy.FaultClient}
}

func (f *regionEC2) DescribeInstances(_ context.Context, in *ec2.DescribeInstancesInput, _ ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error) {
	if f.refuse != nil {
		return nil, f.refuse
	}
	var out []ec2types.Instance
	for _, id := range sortedKeys(f.insts) {
		inst := f.insts[id]
		if f.clk.Now().Before(inst.visibleAt) || !regionMatches(in.Filters, id, inst) {
			continue
		}
		var tags []ec2types.Tag
		for _, k := range sortedKeys(inst.tags) {
			tags = append(tags, ec2types.Tag{Key: aws.String(k), Value: aws.String(inst.tags[k])})
		}
		out = append(out, ec2types.Instance{InstanceId: aws.String(id), ClientToken: aws.String(inst.token), Tags: tags,
			State: &ec2types.InstanceState{Name: inst.state}})
	}
	return &ec2.DescribeInstancesOutput{Reservations: []ec2types.Reservation{{Instances: out}}}, nil
}

func regionMatches(filters []ec2types.Filter, id string, inst *regionInstance) bool {
	for _, f := range filters {
		name, vals := aws.ToString(f.Name), f.Values
		var got string
		switch {
		case name == "instance-id":
			got = id
		case name == "client-token":
			got = inst.token
		case name == "instance-state-name":
			got = string(inst.state)
		case strings.HasPrefix(name, "tag:"):
			got = inst.tags[strings.TrimPrefix(name, "tag:")]
		default:
			continue
		}
		if !slices.Contains(vals, got) {
			return false
		}
	}
	return true
}

func (f *regionEC2) TerminateInstances(_ context.Context, in *ec2.TerminateInstancesInput, _ ...func(*ec2.Options)) (*ec2.TerminateInstancesOutput, error) {
	if f.refuse != nil {
		return nil, f.refuse
	}
	// As EC2: one id it does not know (forgotten, or not visible yet) fails the call.
	for _, id := range in.InstanceIds {
		if inst, ok := f.insts[id]; !ok || (f.clk != nil && f.clk.Now().Before(inst.visibleAt)) {
			return nil, &smithy.GenericAPIError{Code: "InvalidInstanceID.NotFound", Message: "The instance ID '" + id + "' does not exist"}
		}
	}
	for _, id := range in.InstanceIds {
		inst := f.insts[id]
		inst.state = ec2types.InstanceStateNameShuttingDown
		f.killed = append(f.killed, id)
	}
	return &ec2.TerminateInstancesOutput{}, nil
}

func (f *regionEC2) running() []string {
	var ids []string
	for _, id := range sortedKeys(f.insts) {
		if s := f.insts[id].state; s == ec2types.InstanceStateNameRunning || s == ec2types.InstanceStateNamePending {
			ids = append(ids, id)
		}
	}
	return ids
}

// cancelFixture is a RUNNING sweep with no lease holder, its alive entries, and an EC2
// per region.
func cancelFixture(t *testing.T, alive []aliveInstance, regions map[string]*regionEC2) (*fakeStore, *orchestrator, *napClock) {
	t.Helper()
	clk := &napClock{now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	st := newFakeStore()
	sw := &sweep{SweepID: "sw-c", Status: statusRunning, MaxConcurrent: len(alive), TotalParams: len(alive),
		NextToLaunch: len(alive), Region: "us-east-1", PollInterval: "10s", Alive: alive}
	if err := st.createSweep(context.Background(), sw); err != nil {
		t.Fatal(err)
	}
	for _, r := range regions {
		r.clk = clk
	}
	o := newTestOrchestrator(st, func(_ context.Context, region string) (ec2API, error) {
		if r, ok := regions[region]; ok {
			return r, nil
		}
		return nil, fmt.Errorf("no EC2 for %s in this test", region)
	}, clk)
	o.jitter = func() float64 { return 0 }
	o.consistencyWindow = 30 * time.Second
	return st, o, clk
}

func runningInstance(token string) *regionInstance {
	return &regionInstance{token: token, state: ec2types.InstanceStateNameRunning,
		tags: map[string]string{tagSweepID: "sw-c", tagManaged: "true"}}
}

// TestCancelNeverLaunchesAndTerminatesDespiteCapacity: a reservation in capacity backoff
// whose wait has passed is not "resolved" by calling RunInstances (which EC2 refuses in
// a shortage, and which would launch if it did not): it is looked up by its token, and
// the running instance is terminated at once.
func TestCancelNeverLaunchesAndTerminatesDespiteCapacity(t *testing.T) {
	east := &regionEC2{insts: map[string]*regionInstance{"i-run": runningInstance("tok-0")}}
	longAgo := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	st, o, _ := cancelFixture(t, []aliveInstance{
		{Index: 0, Attempt: 1, Region: "us-east-1", ClientToken: "tok-0", InstanceID: "i-run", ReservedAt: longAgo, LaunchedAt: longAgo},
		{Index: 1, Attempt: 1, Region: "us-east-1", ClientToken: "tok-1", ReservedAt: longAgo, LaunchTries: 9,
			NotBefore: longAgo.Add(time.Hour), WaitReason: "no capacity (InsufficientInstanceCapacity)"},
	}, map[string]*regionEC2{"us-east-1": east})
	sw, already, err := o.cancelRun(context.Background(), "sw-c")
	if err != nil || already || sw.Status != statusCancelled {
		t.Fatalf("cancel: %v, already %v, status %v", err, already, sw)
	}
	if east.runs != 0 {
		t.Errorf("cancel called RunInstances %d times", east.runs)
	}
	if got := east.running(); len(got) != 0 {
		t.Errorf("still running after cancel: %v", got)
	}
	rec, _ := st.loadSweep(context.Background(), "sw-c")
	if rec.Counts.Cancelled != 2 {
		t.Errorf("counts %+v, want 2 cancelled", rec.Counts)
	}
}

// TestCancelTerminatesEveryRegionItCanReach: a region that refuses DescribeInstances
// (opt-in not enabled, an organisation policy) does not stop the terminate of the
// others; the cancel says which region it could not reach and leaves the sweep
// cancel-requested, and running it again once the region answers finishes the job.
func TestCancelTerminatesEveryRegionItCanReach(t *testing.T) {
	denied := &smithy.GenericAPIError{Code: "UnauthorizedOperation", Message: "denied by policy", Fault: smithy.FaultClient}
	south := &regionEC2{refuse: denied, insts: map[string]*regionInstance{"i-s": runningInstance("tok-2")}}
	east := &regionEC2{insts: map[string]*regionInstance{"i-a": runningInstance("tok-0"), "i-b": runningInstance("tok-1")}}
	at := time.Date(2026, 3, 1, 11, 59, 0, 0, time.UTC)
	st, o, _ := cancelFixture(t, []aliveInstance{
		{Index: 0, Attempt: 1, Region: "us-east-1", ClientToken: "tok-0", InstanceID: "i-a", ReservedAt: at, LaunchedAt: at},
		{Index: 1, Attempt: 1, Region: "us-east-1", ClientToken: "tok-1", InstanceID: "i-b", ReservedAt: at, LaunchedAt: at},
		{Index: 2, Attempt: 1, Region: "ap-south-2", ClientToken: "tok-2", InstanceID: "i-s", ReservedAt: at, LaunchedAt: at},
	}, map[string]*regionEC2{"us-east-1": east, "ap-south-2": south})
	_, _, err := o.cancelRun(context.Background(), "sw-c")
	var inc *cancelIncomplete
	if !errors.As(err, &inc) || !strings.Contains(err.Error(), "could not reach ap-south-2") || !strings.Contains(err.Error(), "spawn cancel") {
		t.Fatalf("cancel with a denied region: %v; want it named, and the advice to run cancel again", err)
	}
	if got := east.running(); len(got) != 0 {
		t.Errorf("us-east-1 still running %v: a denied region stopped the others", got)
	}
	rec, _ := st.loadSweep(context.Background(), "sw-c")
	if rec.Status == statusCancelled || !rec.CancelRequested || rec.LeaseOwner != "" {
		t.Errorf("after a partial cancel: status %s, cancel requested %v, lease %q; want RUNNING, requested, released", rec.Status, rec.CancelRequested, rec.LeaseOwner)
	}
	south.refuse = nil
	o2 := newTestOrchestrator(st, o.ec2For, o.clock)
	o2.consistencyWindow = time.Second
	sw, _, err := o2.cancelRun(context.Background(), "sw-c")
	if err != nil || sw.Status != statusCancelled || len(south.running()) != 0 {
		t.Fatalf("cancel again once the region answers: %v, %+v, running %v", err, sw, south.running())
	}
}

// TestCancelFindsALaunchEC2DoesNotShowYet: RunInstances timed out after EC2 created the
// instance, and DescribeInstances shows it only 20 s later. The cancel must not take "not
// found" for "never launched": it looks again by token and tags until the consistency
// window has passed, and terminates the instance when it appears. So too from a laptop
// whose clock is 30 minutes fast: the reservation's times, recorded by the engine on
// the true clock, look half an hour old there, and a rule "a reservation that old cannot
// be launching" would take the invisible instance for one that never launched.
func TestCancelFindsALaunchEC2DoesNotShowYet(t *testing.T) {
	for _, offset := range []time.Duration{0, 30 * time.Minute} {
		east := &regionEC2{insts: map[string]*regionInstance{}}
		_, o, clk := cancelFixture(t, []aliveInstance{
			{Index: 0, Attempt: 1, Region: "us-east-1", ClientToken: "tok-0", LaunchTries: 1,
				ReservedAt: time.Date(2026, 3, 1, 11, 59, 50, 0, time.UTC), NotBefore: time.Date(2026, 3, 1, 12, 0, 2, 0, time.UTC)},
		}, map[string]*regionEC2{"us-east-1": east})
		late := runningInstance("tok-0")
		late.visibleAt = clk.now.Add(20 * time.Second)
		east.insts["i-late"] = late
		if offset != 0 {
			o.clock, o.clockName = &offsetNap{base: clk, offset: offset}, "laptop"
		}
		sw, _, err := o.cancelRun(context.Background(), "sw-c")
		if err != nil || sw.Status != statusCancelled {
			t.Fatalf("clock %v: cancel: %v, %+v", offset, err, sw)
		}
		if got := east.running(); len(got) != 0 || east.runs != 0 || !slices.Contains(o.terminated, "i-late") {
			t.Errorf("clock %v: after cancel: running %v, RunInstances calls %d, terminated %v", offset, got, east.runs, o.terminated)
		}
	}
}

// offsetNap is a napClock seen from a host whose clock is offset from it.
type offsetNap struct {
	base   *napClock
	offset time.Duration
}

func (c *offsetNap) Now() time.Time { return c.base.Now().Add(c.offset) }
func (c *offsetNap) Sleep(ctx context.Context, d time.Duration) error {
	return c.base.Sleep(ctx, d)
}

// TestHolderStopsCancellingARegionThatKeepsRefusing: the orchestrator that holds a
// cancelled sweep while a region refuses every call does not retry for ever (a Lambda
// chain would run, and bill, until the region answered): after a few attempts it records
// what it could not reach, releases the lease and ends with that error; the record
// tells a `spawn cancel` beside it which region, and the watchdog tries again later.
func TestHolderStopsCancellingARegionThatKeepsRefusing(t *testing.T) {
	denied := &smithy.GenericAPIError{Code: "UnauthorizedOperation", Message: "denied by policy", Fault: smithy.FaultClient}
	south := &regionEC2{refuse: denied, insts: map[string]*regionInstance{"i-s": runningInstance("tok-1")}}
	east := &regionEC2{insts: map[string]*regionInstance{"i-a": runningInstance("tok-0")}}
	at := time.Date(2026, 3, 1, 11, 59, 0, 0, time.UTC)
	st, o, _ := cancelFixture(t, []aliveInstance{
		{Index: 0, Attempt: 1, Region: "us-east-1", ClientToken: "tok-0", InstanceID: "i-a", ReservedAt: at, LaunchedAt: at},
		{Index: 1, Attempt: 1, Region: "ap-south-2", ClientToken: "tok-1", InstanceID: "i-s", ReservedAt: at, LaunchedAt: at},
	}, map[string]*regionEC2{"us-east-1": east, "ap-south-2": south})
	if _, err := st.requestCancel(context.Background(), "sw-c"); err != nil {
		t.Fatal(err)
	}
	o.items = []item{{Index: 0}, {Index: 1}}
	err := o.run(context.Background(), "sw-c", time.Time{})
	var inc *cancelIncomplete
	if !errors.As(err, &inc) || inc.regions["ap-south-2"] == nil {
		t.Fatalf("run: %v; want it to stop with the region it could not reach", err)
	}
	rec, _ := st.loadSweep(context.Background(), "sw-c")
	if rec.LeaseOwner != "" || rec.Status == statusCancelled || rec.CancelUnreached["ap-south-2"] == "" || len(east.running()) != 0 {
		t.Errorf("after the holder stopped: lease %q, status %s, unreached %v, us-east-1 running %v",
			rec.LeaseOwner, rec.Status, rec.CancelUnreached, east.running())
	}
	if got := unreachedOf(rec); got == nil || !strings.Contains(got.Error(), "could not reach ap-south-2") {
		t.Errorf("what a cancel beside it would say: %v", got)
	}
}

// TestCancelSkipsAnInstanceEC2Forgot: a recorded instance that ended over an hour ago
// (EC2 forgot it: InvalidInstanceID.NotFound, which fails a whole TerminateInstances)
// while no orchestrator ran does not stop the cancel: the others are terminated and the
// sweep is CANCELLED, instead of "could not reach us-east-1" on every try.
func TestCancelSkipsAnInstanceEC2Forgot(t *testing.T) {
	east := &regionEC2{insts: map[string]*regionInstance{"i-live": runningInstance("tok-1")}}
	at := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	_, o, _ := cancelFixture(t, []aliveInstance{
		{Index: 0, Attempt: 1, Region: "us-east-1", ClientToken: "tok-0", InstanceID: "i-forgotten", Seen: true, ReservedAt: at, LaunchedAt: at},
		{Index: 1, Attempt: 1, Region: "us-east-1", ClientToken: "tok-1", InstanceID: "i-live", Seen: true, ReservedAt: at, LaunchedAt: at},
	}, map[string]*regionEC2{"us-east-1": east})
	sw, _, err := o.cancelRun(context.Background(), "sw-c")
	if err != nil || sw.Status != statusCancelled || len(east.running()) != 0 {
		t.Fatalf("cancel: %v, %+v, running %v", err, sw, east.running())
	}
}
