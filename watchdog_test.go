package main

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	lambdasvc "github.com/aws/aws-sdk-go-v2/service/lambda"
)

// memIndex is a running index in memory.
type memIndex struct{ ids map[string]bool }

func (m *memIndex) markRunning(_ context.Context, id string) error   { m.ids[id] = true; return nil }
func (m *memIndex) unmarkRunning(_ context.Context, id string) error { delete(m.ids, id); return nil }
func (m *memIndex) runningSweeps(context.Context) ([]string, error)  { return sortedKeys(m.ids), nil }

// The watchdog starts exactly the detached sweeps nobody drives, leaves live holders and
// --no-detach sweeps alone, and drops ended and unknown sweeps from the index.
func TestWatchdogStartsOnlyUndrivenDetachedSweeps(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	st := newFakeStore()
	for _, sw := range []*sweep{
		{SweepID: "sw-dead", Status: statusRunning, Detached: true, LeaseOwner: "lambda-1", LeaseExpiresAt: now.Add(-time.Minute)},
		{SweepID: "sw-free", Status: statusInitializing, Detached: true},
		{SweepID: "sw-cancelling", Status: statusRunning, Detached: true, CancelRequested: true},
		{SweepID: "sw-live", Status: statusRunning, Detached: true, LeaseOwner: "lambda-2", LeaseExpiresAt: now.Add(30 * time.Second)},
		{SweepID: "sw-here", Status: statusRunning, LeaseOwner: "cli-1", LeaseExpiresAt: now.Add(-time.Hour)},
		{SweepID: "sw-done", Status: statusCompleted, Detached: true},
	} {
		if err := st.createSweep(context.Background(), sw); err != nil {
			t.Fatal(err)
		}
	}
	idx := &memIndex{ids: map[string]bool{"sw-dead": true, "sw-free": true, "sw-cancelling": true, "sw-live": true,
		"sw-here": true, "sw-done": true, "sw-gone": true}}
	var started []string
	ans, err := watchdog(context.Background(), st, idx, now, func(_ context.Context, id string) error {
		started = append(started, id)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"sw-cancelling", "sw-dead", "sw-free"}
	if !slices.Equal(started, want) || !slices.Equal(ans.Revived, want) || ans.Attached != 1 || ans.Running != 7 {
		t.Errorf("started %v, answer %+v; want %v started and one --no-detach sweep left to its process", started, ans, want)
	}
	if got := sortedKeys(idx.ids); !slices.Equal(got, []string{"sw-cancelling", "sw-dead", "sw-free", "sw-here", "sw-live"}) {
		t.Errorf("index after the watchdog: %v; want the ended and the unknown sweep dropped", got)
	}
	// A start that fails is reported and tried again by the next watchdog.
	ans, _ = watchdog(context.Background(), st, idx, now, func(context.Context, string) error { return errors.New("throttled") })
	if len(ans.Failed) != 3 || len(ans.Revived) != 0 {
		t.Errorf("with every start refused: %+v", ans)
	}
}

// The running index on the emulator's DynamoDB: a new sweep is in it, a sweep whose
// record turns terminal leaves it, resuming a FAILED sweep puts it back, and `list`
// never shows the index item.
func TestRunningIndexOnEmulator(t *testing.T) {
	st := newTestStore(t)
	ctx := context.Background()
	for _, id := range []string{"sw-a", "sw-b"} {
		if err := st.createSweep(ctx, &sweep{SweepID: id, UserID: "u", Status: statusRunning, TotalParams: 1, MaxConcurrent: 1}); err != nil {
			t.Fatal(err)
		}
	}
	ids, err := st.runningSweeps(ctx)
	if err != nil || !slices.Equal(ids, []string{"sw-a", "sw-b"}) {
		t.Fatalf("running after two launches: %v, %v", ids, err)
	}
	b, _ := st.loadSweep(ctx, "sw-b")
	b.Status = statusFailed
	if err := st.saveSweep(ctx, b); err != nil {
		t.Fatal(err)
	}
	if ids, _ = st.runningSweeps(ctx); !slices.Equal(ids, []string{"sw-a"}) {
		t.Errorf("running after sw-b failed: %v", ids)
	}
	if _, _, err := prepareResume(ctx, st, "sw-b", false); err != nil {
		t.Fatal(err)
	}
	if ids, _ = st.runningSweeps(ctx); !slices.Equal(ids, []string{"sw-a", "sw-b"}) {
		t.Errorf("running after sw-b was resumed: %v", ids)
	}
	listed, _, err := st.listSweeps(ctx, "u", "", 100, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, sw := range listed {
		if sw.SweepID == runningIndexID {
			t.Errorf("list shows the running index: %+v", sw)
		}
	}
}

// TestWatchdogRevivesADeadChainOnKumo: the function that ran a sweep stops for good
// (its processes killed, its queued events never delivered: the chain is dead), and the
// watchdog's event, sent to the deployment's function as the EventBridge rule would,
// continues the sweep to COMPLETED with no user command and no second launch.
func TestWatchdogRevivesADeadChainOnKumo(t *testing.T) {
	e := newE2EEnv(t, 6)
	const items = 6
	before := e.instances(t)
	id := e.launch(t, items, 2)
	ctx := context.Background()
	deadline := time.Now().Add(time.Minute)
	for {
		sw, err := e.store.loadSweep(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if sw.Launched >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the sweep never launched: %+v", sw)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, p := range e.procs {
		p.kill()
	}
	// The deployment's function from now on: a fresh one, as after the chain died.
	revived := uniqueName("fn")
	createTestFunction(t, e.a.cfg, revived, 6)
	env := map[string]string{"SPAWN_TABLE": e.store.table, "SPAWN_INSTANCES_TABLE": e.store.instancesTable,
		"SPAWN_BUCKET": sweepBucket(t, e, id), "SPAWN_FUNCTION": revived}
	e.procs = append(e.procs, startFunctionProcess(t, e.a.backend.endpoint, revived, env))
	waitFunctionReady(t, e.a.cfg, revived)
	stop := make(chan struct{})
	defer close(stop)
	go workload(t, e.a, e.ec2, keys(before), stop)

	lc := lambdasvc.NewFromConfig(e.a.cfg)
	var sw *sweep
	deadline = time.Now().Add(3 * time.Minute)
	for sw == nil || sw.Status != statusCompleted {
		if time.Now().After(deadline) {
			t.Fatalf("not revived: %+v\n%s", sw, e.output())
		}
		// Every "five minutes" (here: two seconds) the rule's event.
		out, err := lc.Invoke(ctx, &lambdasvc.InvokeInput{FunctionName: aws.String(revived), Payload: []byte(`{"watchdog": true}`)})
		if err != nil || out.FunctionError != nil {
			t.Fatalf("watchdog event: %v %+v", err, out)
		}
		time.Sleep(2 * time.Second)
		if sw, err = e.store.loadSweep(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	made := 0
	for iid := range e.instances(t) {
		if _, old := before[iid]; !old {
			made++
		}
	}
	if made != items || sw.Counts.Succeeded+sw.Counts.Unknown != items {
		t.Errorf("%d instances made for %d items; counts %+v", made, items, sw.Counts)
	}
	if ids, _ := e.store.runningSweeps(ctx); slices.Contains(ids, id) {
		t.Errorf("the completed sweep is still in the running index")
	}
}

func keys[V any](m map[string]V) map[string]bool {
	out := map[string]bool{}
	for k := range m {
		out[k] = true
	}
	return out
}

func sweepBucket(t *testing.T, e *e2eEnv, id string) string {
	t.Helper()
	sw, err := e.store.loadSweep(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return sw.S3Bucket
}
