package main

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

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
