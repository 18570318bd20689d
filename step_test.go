package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"
)

func TestRetryableLaunchError(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{&smithy.GenericAPIError{Code: "InsufficientInstanceCapacity"}, true},
		{&smithy.GenericAPIError{Code: "RequestLimitExceeded"}, true},
		{&smithy.GenericAPIError{Code: "ThrottlingException"}, true},
		{&smithy.GenericAPIError{Code: "Unavailable"}, true},
		{&smithy.GenericAPIError{Code: "InternalError"}, true},
		{context.DeadlineExceeded, true},
		{&smithy.GenericAPIError{Code: "InvalidParameterValue"}, false},
		// EC2's answer while a just-created instance profile propagates.
		{&smithy.GenericAPIError{Code: "InvalidParameterValue", Message: "Value (spawnd-role) for parameter iamInstanceProfile.name is invalid. Invalid IAM Instance Profile name"}, true},
		{&smithy.GenericAPIError{Code: "InvalidAMIID.NotFound"}, false},
		{&smithy.GenericAPIError{Code: "InvalidSubnetID.NotFound"}, false},
		{&smithy.GenericAPIError{Code: "UnsupportedOperation"}, false},
		{&smithy.GenericAPIError{Code: "InvalidKeyPair.NotFound"}, false},
	} {
		if got := retryableLaunchError(tc.err); got != tc.want {
			t.Errorf("retryableLaunchError(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

func TestTransitionTime(t *testing.T) {
	got, ok := transitionTime("User initiated (2024-01-02 03:04:05 GMT)")
	if !ok || !got.Equal(time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)) {
		t.Errorf("got %v %v", got, ok)
	}
	if _, ok := transitionTime("Client.UserInitiatedShutdown"); ok {
		t.Error("parsed a reason without a time")
	}
}

// BenchmarkPollStep measures one poll step of a sweep at max_concurrent 50 whose
// instances all end within a poll, so every step gives 50 outcomes and makes 50 launches:
// ns/op and the bytes DynamoDB is asked to write per launch (the record and the instance
// items), which must not grow with the number of items.
func BenchmarkPollStep(b *testing.B) {
	for _, n := range []int{1_000, 10_000, 100_000} {
		b.Run(fmt.Sprintf("items=%d", n), func(b *testing.B) {
			s := newSim(1, func(format string, args ...any) { b.Fatalf(format, args...) })
			store := &meteredStore{sweepStore: newFakeStore()}
			fe := newBenchEC2(s, 50, func(f string, a ...any) { b.Fatalf(f, a...) })
			items := make([]item, n)
			for i := range items {
				items[i] = item{Index: i, InstanceType: "c5.large", Params: []param{{Key: "lr", Value: "0.001"}, {Key: "seed", Value: strconv.Itoa(i)}}}
			}
			ctx := context.Background()
			var sw *sweep
			var o *orchestrator
			start := func() {
				sw = &sweep{SweepID: uniqueName("bench"), SweepName: "bench", UserID: "arn:aws:iam::123456789012:user/bench",
					Status: statusInitializing, MaxConcurrent: 50, LaunchDelay: "0s", PollInterval: "10s", TotalParams: n,
					Region: "us-east-1", AWSAccountID: "123456789012", TTL: "1h"}
				if err := store.createSweep(ctx, sw); err != nil {
					b.Fatal(err)
				}
				o = newTestOrchestrator(store, fe.client, s)
				o.owner, o.items = "bench", items
				o.init()
				renewLease(sw, o.owner, s.now, o.leaseTTL)
				for i := range n {
					fe.fates[fmt.Sprintf("%s-%d-1", sw.SweepID, i)] = &fate{runFor: 5 * time.Second, end: "exit0"}
				}
			}
			start()
			launches := 0
			store.reset()
			b.ResetTimer()
			for range b.N {
				before := sw.Launched
				if err := o.step(ctx, sw); err != nil {
					b.Fatal(err)
				}
				launches += sw.Launched - before
				s.now = s.now.Add(10 * time.Second)
				if terminalStatus(sw.Status) {
					b.StopTimer()
					start()
					b.StartTimer()
				}
			}
			b.StopTimer()
			if launches > 0 {
				b.ReportMetric(float64(store.bytes)/float64(launches), "dynamodb_bytes/launch")
				b.ReportMetric(float64(launches)/float64(b.N), "launches/op")
			}
		})
	}
}

// A completed sweep stays COMPLETED when the write that completed it is reported stale
// and a cancel arrives right after it (found by TestFaultsEndToEnd, seed 700066509:
// the status went from COMPLETED to CANCELLED).
func TestCompletedSweepIgnoresLateCancel(t *testing.T) {
	st := &landedStaleStore{fakeStore: newFakeStore()}
	sw := &sweep{SweepID: "sw-late-cancel", Status: statusRunning, MaxConcurrent: 1, PollInterval: "1s", TotalParams: 1,
		NextToLaunch: 1, Launched: 1, Region: "us-east-1", Counts: counts{Succeeded: 1}}
	if err := st.createSweep(context.Background(), sw); err != nil {
		t.Fatal(err)
	}
	o := newTestOrchestrator(st, everyRegion(emptyEC2{}), nil)
	o.loadItems = itemsOf([]item{{Index: 0, InstanceType: "t3.micro"}})
	if err := o.run(context.Background(), sw.SweepID, time.Time{}); err != nil {
		t.Fatalf("run: %v", err)
	}
	got, err := st.loadSweep(context.Background(), sw.SweepID)
	if err != nil {
		t.Fatal(err)
	}
	if !st.tripped || got.Status != statusCompleted || got.LeaseOwner != "" || got.Counts.Cancelled != 0 {
		t.Fatalf("stale report given %v; status %s, lease %q, counts %+v; want COMPLETED, released, nothing cancelled",
			st.tripped, got.Status, got.LeaseOwner, got.Counts)
	}
}

// A failed read of an ended instance's tags decides nothing: the instance is looked at
// again next step and gets the exit code it reported (found by TestFaultsEndToEnd, seed
// 449186682: items that reported exit code 0 were recorded unknown).
func TestFailedTagReadDecidesNoOutcome(t *testing.T) {
	st := newFakeStore()
	sw := &sweep{SweepID: "sw-tags-later", Status: statusRunning, MaxConcurrent: 1, PollInterval: "10ms", TotalParams: 1,
		NextToLaunch: 1, Launched: 1, Region: "us-east-1", Alive: []aliveInstance{{Index: 0, Attempt: 1, InstanceID: "i-tagged",
			Region: "us-east-1", InstanceType: "t3.micro", ClientToken: "tok-0", LaunchedAt: time.Now().Add(-time.Minute)}}}
	if err := st.createSweep(context.Background(), sw); err != nil {
		t.Fatal(err)
	}
	api := &tagsLaterEC2{}
	o := newTestOrchestrator(st, everyRegion(api), nil)
	o.loadItems = itemsOf([]item{{Index: 0, InstanceType: "t3.micro"}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := o.run(ctx, sw.SweepID, time.Time{}); err != nil {
		t.Fatalf("run: %v", err)
	}
	got, err := st.loadSweep(context.Background(), sw.SweepID)
	if err != nil {
		t.Fatal(err)
	}
	recs, _ := st.listInstances(context.Background(), sw.SweepID)
	if got.Status != statusCompleted || got.Counts.Succeeded != 1 || len(recs) != 1 || recs[0].Outcome != outcomeSucceeded || api.tagCalls < 2 {
		t.Fatalf("status %s, counts %+v, items %+v after %d DescribeTags calls; want COMPLETED with the item succeeded",
			got.Status, got.Counts, recs, api.tagCalls)
	}
}

// TestQuotaRefusalWaits: an account quota or capacity refusal keeps the item waiting
// under its client token, with the reason for status; it never fails the item, and the
// launch goes ahead once EC2 takes it.
func TestQuotaRefusalWaits(t *testing.T) {
	for _, code := range []string{"VcpuLimitExceeded", "InstanceLimitExceeded", "MaxSpotInstanceCountExceeded",
		"InsufficientFreeAddressesInSubnet", "SpotMaxPriceTooLow", "UnfulfillableCapacity", "InsufficientInstanceCapacity"} {
		t.Run(code, func(t *testing.T) {
			st := newFakeStore()
			sw := &sweep{SweepID: "sw-q", Status: statusRunning, MaxConcurrent: 2, TotalParams: 2, Region: "us-east-1", PollInterval: "10s"}
			if err := st.createSweep(context.Background(), sw); err != nil {
				t.Fatal(err)
			}
			api := &refusingEC2{code: code, refusals: 3}
			clk := &napClock{now: time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)}
			o := newTestOrchestrator(st, everyRegion(api), clk)
			o.items = []item{{Index: 0, InstanceType: "t3.micro"}, {Index: 1, InstanceType: "t3.micro"}}
			o.jitter = func() float64 { return 0 }
			o.init()
			o.owner = "holder"
			if sw, err := acquireLease(context.Background(), st, "sw-q", "holder", clk.now, 0, nil); err != nil {
				t.Fatal(err)
			} else if err := o.step(context.Background(), sw); err != nil {
				t.Fatalf("step: %v", err)
			}
			got, _ := st.loadSweep(context.Background(), "sw-q")
			if got.Counts.Failed != 0 || len(got.Alive) != 2 {
				t.Fatalf("after a %s refusal: counts %+v, alive %d; want nothing failed and both waiting", code, got.Counts, len(got.Alive))
			}
			want := "(" + code + ")"
			v := &statusView{s: got}
			if line := v.waitingLine(); !strings.HasPrefix(line, "waiting  2 items: ") || !strings.HasSuffix(line, want) {
				t.Errorf("status line %q, want 2 items waiting for %s", line, want)
			}
			// EC2 takes them once the refusals stop: the same tokens launch.
			for range 6 {
				clk.now = clk.now.Add(time.Minute)
				cur, _ := st.loadSweep(context.Background(), "sw-q")
				if err := o.step(context.Background(), cur); err != nil {
					t.Fatalf("step: %v", err)
				}
			}
			got, _ = st.loadSweep(context.Background(), "sw-q")
			if api.launched != 2 || got.Launched != 2 || got.Alive[0].WaitReason != "" {
				t.Errorf("after the refusals stopped: %d launched by EC2, %d recorded, reason %q", api.launched, got.Launched, got.Alive[0].WaitReason)
			}
		})
	}
}

// refusingEC2 refuses the first refusals RunInstances calls with code, then launches.
type refusingEC2 struct {
	emptyEC2
	code, msg string
	refusals  int
	launched  int
}

func (f *refusingEC2) RunInstances(ctx context.Context, in *ec2.RunInstancesInput, _ ...func(*ec2.Options)) (*ec2.RunInstancesOutput, error) {
	if f.refusals > 0 {
		f.refusals--
		msg := f.msg
		if msg == "" {
			msg = "refused for now"
		}
		return nil, &smithy.GenericAPIError{Code: f.code, Message: msg, Fault: smithy.FaultClient}
	}
	f.launched++
	return &ec2.RunInstancesOutput{Instances: []ec2types.Instance{{InstanceId: aws.String(fmt.Sprintf("i-%d", f.launched)),
		State: &ec2types.InstanceState{Name: ec2types.InstanceStateNamePending}}}}, nil
}

// TestReusedTokenOfATerminatedInstance: EC2 answers a client token whose instance has
// terminated with IdempotentInstanceTerminated (since 2025). The item ran: while EC2
// still shows the instance, it is adopted and gets the outcome it reported; once EC2
// has forgotten it, the attempt's exit record names it and gives its outcome, and with
// no record the item ends unknown — never "failed: launch refused".
func TestReusedTokenOfATerminatedInstance(t *testing.T) {
	for _, tc := range []struct{ visible, recorded bool }{{true, false}, {false, false}, {false, true}} {
		visible := tc.visible
		st := newFakeStore()
		sw := &sweep{SweepID: "sw-t", Status: statusRunning, MaxConcurrent: 1, TotalParams: 1, NextToLaunch: 1,
			Region: "us-east-1", PollInterval: "10s",
			Alive: []aliveInstance{{Index: 0, Attempt: 1, Region: "us-east-1", ClientToken: "tok-0",
				ReservedAt: time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)}}}
		if err := st.createSweep(context.Background(), sw); err != nil {
			t.Fatal(err)
		}
		api := &terminatedTokenEC2{hidden: 1} // the first lookup by token misses it: RunInstances is called
		if visible {
			api.inst = &ec2types.Instance{InstanceId: aws.String("i-done"), ClientToken: aws.String("tok-0"),
				State: &ec2types.InstanceState{Name: ec2types.InstanceStateNameTerminated},
				Tags:  append(launchTagsOf("sw-t"), ec2types.Tag{Key: aws.String(tagExitCode), Value: aws.String("0")})}
		}
		clk := &napClock{now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
		o := newTestOrchestrator(st, everyRegion(api), clk)
		o.items = []item{{Index: 0, InstanceType: "t3.micro"}}
		o.jitter = func() float64 { return 0 }
		if tc.recorded {
			// Its exit record names it: the item gets the outcome it reported.
			reports := memReports{exitReportKey("sw-t", 0, 1, "AROAEXAMPLE:i-gone"): `{"exit_code": 3}`}
			o.exitReports = reports.read
			o.exitReporter = func(context.Context, *sweep, *aliveInstance) (string, error) { return "i-gone", nil }
		}
		if err := o.run(context.Background(), "sw-t", time.Time{}); err != nil {
			t.Fatalf("visible=%v: run: %v", visible, err)
		}
		got, _ := st.loadSweep(context.Background(), "sw-t")
		want := counts{Succeeded: 1}
		switch {
		case tc.recorded:
			want = counts{Failed: 1}
		case !visible:
			want = counts{Unknown: 1}
		}
		if got.Status != statusCompleted || got.Counts != want {
			t.Errorf("visible=%v: status %s counts %+v, want COMPLETED %+v", visible, got.Status, got.Counts, want)
		}
	}
}

// terminatedTokenEC2 answers RunInstances with IdempotentInstanceTerminated and shows
// inst (if any) to DescribeInstances.
type terminatedTokenEC2 struct {
	emptyEC2
	inst   *ec2types.Instance
	hidden int // DescribeInstances calls that do not show inst yet
}

func (f *terminatedTokenEC2) RunInstances(context.Context, *ec2.RunInstancesInput, ...func(*ec2.Options)) (*ec2.RunInstancesOutput, error) {
	return nil, &smithy.GenericAPIError{Code: "IdempotentInstanceTerminated", Message: "the instance for this token has terminated", Fault: smithy.FaultClient}
}

func (f *terminatedTokenEC2) DescribeInstances(context.Context, *ec2.DescribeInstancesInput, ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error) {
	if f.inst == nil || f.hidden > 0 {
		f.hidden--
		return &ec2.DescribeInstancesOutput{}, nil
	}
	return &ec2.DescribeInstancesOutput{Reservations: []ec2types.Reservation{{Instances: []ec2types.Instance{*f.inst}}}}, nil
}

// TestHostClockOffFromEC2: the engine's host clock 30 minutes fast or slow against EC2
// never terminates an instance before its TTL, never declares a launch lost while EC2
// does not show it yet (which would refill its slot: two alive at max 1), and still
// calls an instance that ran its TTL "expired", by EC2's own times.
func TestHostClockOffFromEC2(t *testing.T) {
	for _, offset := range []time.Duration{30 * time.Minute, -30 * time.Minute} {
		for _, visible := range []bool{true, false} {
			name := fmt.Sprintf("host %v, visible %v", offset, visible)
			st := newFakeStore()
			sw := &sweep{SweepID: "sw-k", Status: statusRunning, MaxConcurrent: 1, TotalParams: 2, Region: "us-east-1",
				PollInterval: "10s", TTL: "20m"}
			if err := st.createSweep(context.Background(), sw); err != nil {
				t.Fatal(err)
			}
			clk := &napClock{now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
			api := &skewEC2{clk: clk, offset: -offset, visible: visible}
			o := newTestOrchestrator(st, everyRegion(api), clk)
			o.items = []item{{Index: 0, InstanceType: "t3.micro"}, {Index: 1, InstanceType: "t3.micro"}}
			o.jitter = func() float64 { return 0 }
			for range 12 { // two minutes of steps
				cur, _ := st.loadSweep(context.Background(), "sw-k")
				if err := o.step(context.Background(), cur); err != nil {
					t.Fatalf("%s: step: %v", name, err)
				}
				clk.now = clk.now.Add(10 * time.Second)
			}
			if api.terminated > 0 || api.launches != 1 {
				t.Errorf("%s: %d terminates and %d launches in the first two minutes, want none and 1", name, api.terminated, api.launches)
			}
			if !visible {
				continue
			}
			// The instance powers itself off at its TTL, by EC2's clock, with no report;
			// the engine gives the report its minute to appear, then decides.
			api.endAfter(20 * time.Minute)
			for range 8 {
				cur, _ := st.loadSweep(context.Background(), "sw-k")
				if err := o.step(context.Background(), cur); err != nil {
					t.Fatal(err)
				}
				clk.now = clk.now.Add(10 * time.Second)
			}
			got, _ := st.loadSweep(context.Background(), "sw-k")
			if got.Counts.Expired != 1 {
				t.Errorf("%s: counts %+v, want the instance expired", name, got.Counts)
			}
		}
	}
}

// skewEC2 is one instance on an EC2 whose clock is offset from the engine's; it may stay
// invisible to DescribeInstances.
type skewEC2 struct {
	emptyEC2
	clk        clock
	offset     time.Duration // EC2's clock minus the engine's
	visible    bool
	launches   int
	terminated int
	launchedAt time.Time // EC2's clock
	endedAt    time.Time // EC2's clock; zero while running
}

func (f *skewEC2) RunInstances(context.Context, *ec2.RunInstancesInput, ...func(*ec2.Options)) (*ec2.RunInstancesOutput, error) {
	if !f.endedAt.IsZero() {
		// Only one instance here: once it ended, the next item waits for capacity.
		return nil, &smithy.GenericAPIError{Code: "InsufficientInstanceCapacity", Message: "no capacity"}
	}
	f.launches++
	f.launchedAt = f.clk.Now().Add(f.offset)
	return &ec2.RunInstancesOutput{Instances: []ec2types.Instance{f.instance()}}, nil
}

func (f *skewEC2) instance() ec2types.Instance {
	inst := ec2types.Instance{InstanceId: aws.String("i-skew"), LaunchTime: aws.Time(f.launchedAt),
		State: &ec2types.InstanceState{Name: ec2types.InstanceStateNameRunning}, Tags: launchTagsOf("sw-k")}
	if !f.endedAt.IsZero() {
		inst.State.Name = ec2types.InstanceStateNameTerminated
		inst.StateTransitionReason = aws.String("User initiated (" + f.endedAt.UTC().Format("2006-01-02 15:04:05 MST") + ")")
	}
	return inst
}

func (f *skewEC2) endAfter(d time.Duration) { f.endedAt = f.launchedAt.Add(d) }

func (f *skewEC2) DescribeInstances(_ context.Context, in *ec2.DescribeInstancesInput, _ ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error) {
	if !f.visible || f.launches == 0 {
		return &ec2.DescribeInstancesOutput{}, nil
	}
	for _, flt := range in.Filters {
		if aws.ToString(flt.Name) == "client-token" {
			return &ec2.DescribeInstancesOutput{}, nil
		}
	}
	return &ec2.DescribeInstancesOutput{Reservations: []ec2types.Reservation{{Instances: []ec2types.Instance{f.instance()}}}}, nil
}

func (f *skewEC2) TerminateInstances(context.Context, *ec2.TerminateInstancesInput, ...func(*ec2.Options)) (*ec2.TerminateInstancesOutput, error) {
	f.terminated++
	return &ec2.TerminateInstancesOutput{}, nil
}

// A --no-detach host whose clock is 30 minutes slow launches an instance with a 20-minute
// TTL, then an engine on the true clock (Lambda, after 'spawn resume') carries on: the
// deadline the host recorded is on the host's clock, and the engine must not read it on
// its own (it would terminate the instance at once, 10 minutes into its TTL).
func TestDeadlineFromAnotherHostsClock(t *testing.T) {
	st, host, clk, api, _ := reportFixture(t, 1)
	st.sweeps["sw-r"].TTL = "20m"
	slow := &napClock{now: clk.now.Add(-30 * time.Minute)}
	host.clock, host.clockName = slow, "host-a"
	cur, _ := st.loadSweep(context.Background(), "sw-r")
	if err := host.step(context.Background(), cur); err != nil {
		t.Fatal(err)
	}
	lambda := newTestOrchestrator(st, everyRegion(api), clk)
	lambda.items, lambda.clockName = host.items, "lambda"
	for range 6 * 15 { // 15 minutes of steps on the true clock
		steps(t, st, lambda, clk, 1)
		if api.terminated > 0 {
			t.Fatalf("terminated %v after launch, before its 20-minute TTL", clk.now.Sub(api.insts["i-0001"].launchedAt))
		}
	}
}

// TestInstanceProfileNotVisibleYetWaits: right after `spawn deploy` EC2 may not know the
// instance profile IAM just created (InvalidParameterValue … Invalid IAM Instance
// Profile name, for up to tens of seconds): the launch waits with that reason and the
// item runs once EC2 sees it. A name EC2 never knows fails the item after propagationLimitIAM.
func TestInstanceProfileNotVisibleYetWaits(t *testing.T) {
	const msg = "Value (spawnd-role) for parameter iamInstanceProfile.name is invalid. Invalid IAM Instance Profile name"
	for _, refusals := range []int{3, 1000} {
		st := newFakeStore()
		sw := &sweep{SweepID: "sw-i", Status: statusRunning, MaxConcurrent: 1, TotalParams: 1, Region: "us-east-1", PollInterval: "10s"}
		if err := st.createSweep(context.Background(), sw); err != nil {
			t.Fatal(err)
		}
		api := &refusingEC2{code: "InvalidParameterValue", msg: msg, refusals: refusals}
		clk := &napClock{now: time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)}
		o := newTestOrchestrator(st, everyRegion(api), clk)
		o.items = []item{{Index: 0, InstanceType: "t3.micro"}}
		o.jitter = func() float64 { return 0 }
		var got *sweep
		for range 120 { // 20 minutes of steps
			cur, _ := st.loadSweep(context.Background(), "sw-i")
			if err := o.step(context.Background(), cur); err != nil {
				t.Fatalf("step: %v", err)
			}
			got, _ = st.loadSweep(context.Background(), "sw-i")
			if refusals == 3 && len(got.Alive) == 1 && got.Alive[0].WaitReason != "" && !strings.HasPrefix(got.Alive[0].WaitReason, iamWaitReason) {
				t.Fatalf("wait reason %q", got.Alive[0].WaitReason)
			}
			clk.now = clk.now.Add(10 * time.Second)
		}
		switch {
		case refusals == 3 && (api.launched != 1 || got.Counts.Failed != 0):
			t.Errorf("a profile EC2 saw after 3 refusals: %d launched, counts %+v; want it launched", api.launched, got.Counts)
		case refusals == 1000 && (got.Counts.Failed != 1 || got.Status != statusCompleted):
			t.Errorf("a profile EC2 never sees: %s %+v; want the item failed", got.Status, got.Counts)
		}
	}
}
