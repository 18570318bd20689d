package main

import (
	"context"
	"errors"
	"slices"
	"testing"
)

func TestPrepareResume(t *testing.T) {
	ctx := context.Background()
	st := newFakeStore()
	sw := &sweep{SweepID: "sw-r", Status: statusRunning, TotalParams: 5, MaxConcurrent: 2, NextToLaunch: 5,
		Alive: []aliveInstance{{Index: 4, Attempt: 1, ClientToken: "t4"}}}
	sw.Counts = counts{Succeeded: 1, Failed: 3}
	fixCounts(sw)
	if err := st.createSweep(ctx, sw); err != nil {
		t.Fatal(err)
	}
	for _, rec := range []instanceRecord{
		{SweepID: "sw-r", Index: 0, Attempt: 1, Outcome: outcomeSucceeded},
		{SweepID: "sw-r", Index: 1, Attempt: 1, Outcome: outcomeFailed},
		{SweepID: "sw-r", Index: 2, Attempt: 2, Outcome: outcomeFailed},
		{SweepID: "sw-r", Index: 3, Attempt: 1, Outcome: outcomeFailed},
		{SweepID: "sw-r", Index: 4, Attempt: 1},
	} {
		if err := st.putInstance(ctx, &rec); err != nil {
			t.Fatal(err)
		}
	}
	got, queued, err := prepareResume(ctx, st, "sw-r", true)
	if err != nil || queued != 3 {
		t.Fatalf("queued %d, err %v", queued, err)
	}
	want := []retryItem{{1, 2}, {2, 3}, {3, 2}}
	if !slices.Equal(got.RetryQueue, want) || got.Counts.Failed != 0 || got.Counts.Pending != 3 || got.Counts.Running != 1 {
		t.Errorf("retry queue %v, counts %+v", got.RetryQueue, got.Counts)
	}
	// A second --retry-failed before the orchestrator relaunched them queues nothing twice.
	if _, queued, err := prepareResume(ctx, st, "sw-r", true); err != nil || queued != 0 {
		t.Errorf("second retry-failed: queued %d, err %v", queued, err)
	}
	for _, status := range []string{statusCompleted, statusCancelled} {
		cur, _ := st.loadSweep(ctx, "sw-r")
		cur.Status = status
		if err := st.saveSweep(ctx, cur); err != nil {
			t.Fatal(err)
		}
		if _, _, err := prepareResume(ctx, st, "sw-r", false); !errors.Is(err, errNothingToResume) {
			t.Errorf("%s: err %v (exit %d), want a usage error", status, err, exitCode(err))
		}
	}
	if _, _, err := prepareResume(ctx, st, "nope", false); !errors.Is(err, errSweepNotFound) {
		t.Errorf("unknown sweep: exit %d", exitCode(err))
	}
}
