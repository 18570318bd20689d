package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// worstAlive is an alive entry with every field set at its longest.
func worstAlive(i int) aliveInstance {
	now := time.Date(2026, 12, 6, 8, 0, 0, 123456789, time.UTC)
	host := "host-01234567" // a host's clock name (orchestrator.init)
	return aliveInstance{Index: 99999 - i, Attempt: 99, InstanceID: "i-0123456789abcdef0", Region: "ap-southeast-4",
		InstanceType: "u7in-32tb.224xlarge", ClientToken: fmt.Sprintf("sw-20261206-080000-abcdef-%d-99", 99999-i), Spot: true,
		ReservedAt: now, LaunchedAt: now, Deadline: now, DeadlineClock: host, PriceHourly: 407.68123456789, PriceSource: "pricing-api",
		LaunchTries: 123, NotBefore: now, WaitReason: strings.Repeat("w", maxWaitReason),
		IdleAlarm: true, Seen: true, Unseen: &sinceMark{At: now, Clock: host}, Ended: &sinceMark{At: now, Clock: host},
		Candidate: maxCandidates - 1, Tried: maxCandidates, Refused: true}
}

// worstReservation is the longest entry that has not launched: the marks of its waits
// instead of its instance's (setLaunched clears them).
func worstReservation(i int) aliveInstance {
	e := worstAlive(i)
	host := e.DeadlineClock
	e.InstanceID, e.LaunchedAt, e.Deadline, e.DeadlineClock, e.Seen, e.Unseen, e.Ended, e.IdleAlarm = "", time.Time{}, time.Time{}, "", false, nil, nil, false
	e.Unsettled, e.Propagating = &sinceMark{At: e.ReservedAt, Clock: host}, &sinceMark{At: e.ReservedAt, Clock: host}
	return e
}

// TestRecordAtItsLimitsFits: a record at every limit at once — max_concurrent alive
// entries with every field at its longest, and a full retry queue — stays under
// DynamoDB's 400 KB item limit, and each entry within the size the limits assume.
func TestRecordAtItsLimitsFits(t *testing.T) {
	base := &sweep{SweepID: "sw-20261206-080000-abcdef", SweepName: strings.Repeat("n", 128), MaxConcurrent: maxConcurrentLimit}
	empty := fakeItemSize(base)
	one := *base
	for _, e := range []aliveInstance{worstAlive(0), worstReservation(0)} {
		one.Alive = []aliveInstance{e}
		if n := fakeItemSize(&one) - empty; n > maxAliveEntryBytes {
			t.Errorf("an alive entry takes %d bytes, over maxAliveEntryBytes %d: %+v", n, maxAliveEntryBytes, e)
		}
	}
	one.Alive, one.RetryQueue = nil, []retryItem{{Index: 99999, Attempt: 99}}
	if n := fakeItemSize(&one) - empty; n > maxRetryEntryBytes {
		t.Errorf("a retry entry takes %d bytes, over maxRetryEntryBytes %d", n, maxRetryEntryBytes)
	}
	full := *base
	for i := range maxConcurrentLimit {
		full.Alive = append(full.Alive, worstAlive(i))
	}
	for i := range retryRoom(maxConcurrentLimit) {
		full.RetryQueue = append(full.RetryQueue, retryItem{Index: 99999 - i, Attempt: 99})
	}
	t.Logf("at max_concurrent %d with %d queued retries: %d bytes (alive entry at most %d, retry %d)",
		maxConcurrentLimit, retryRoom(maxConcurrentLimit), fakeItemSize(&full), maxAliveEntryBytes, maxRetryEntryBytes)
	if n := fakeItemSize(&full); n > dynamoItemLimit-recordBaseBytes {
		t.Errorf("a record at its limits is %d bytes: over %d (400 KB less the room kept for the rest)", n, dynamoItemLimit-recordBaseBytes)
	}
	if minRetryRoom < 500 || retryRoom(10) < 9000 {
		t.Errorf("retry room %d at max_concurrent %d, %d at 10: too small to be useful", minRetryRoom, maxConcurrentLimit, retryRoom(10))
	}
}

// TestRetryFailedHoldsAHundredThousand: a 100,000-item sweep where every item failed;
// `resume --retry-failed` queues as many as the record holds, the rest stay failed, and
// resuming again once those ran queues the next ones, until every item was retried. The
// record never passes its size limit.
func TestRetryFailedHoldsAHundredThousand(t *testing.T) {
	const n = 100_000
	ctx := context.Background()
	st := newFakeStore()
	sw := &sweep{SweepID: "sw-big", Status: statusFailed, TotalParams: n, NextToLaunch: n, MaxConcurrent: 50,
		Counts: counts{Failed: n}, Failed: n}
	if err := st.createSweep(ctx, sw); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if err := st.putInstance(ctx, &instanceRecord{SweepID: "sw-big", Index: i, Attempt: 1, Outcome: outcomeFailed}); err != nil {
			t.Fatal(err)
		}
	}
	retried := map[int]bool{}
	for round := 1; len(retried) < n; round++ {
		if round > 20 {
			t.Fatalf("%d of %d retried after 20 resumes", len(retried), n)
		}
		got, queued, err := prepareResume(ctx, st, "sw-big", true)
		if err != nil {
			t.Fatal(err)
		}
		if queued == 0 || queued > retryRoom(50) || got.Counts.Failed != n-len(retried)-queued {
			t.Fatalf("round %d: queued %d (room %d), %d still failed", round, queued, retryRoom(50), got.Counts.Failed)
		}
		if size := fakeItemSize(got); size > dynamoItemLimit {
			t.Fatalf("round %d: record %d bytes", round, size)
		}
		// The engine runs the queue: every retry succeeds this time.
		for _, q := range got.RetryQueue {
			if retried[q.Index] || q.Attempt != 2 {
				t.Fatalf("index %d queued twice or as attempt %d", q.Index, q.Attempt)
			}
			retried[q.Index] = true
			_ = st.putInstance(ctx, &instanceRecord{SweepID: "sw-big", Index: q.Index, Attempt: 2, Outcome: outcomeSucceeded})
		}
		got.Counts.Succeeded += len(got.RetryQueue)
		got.RetryQueue = nil
		got.Status = statusFailed // as when a few failed again
		if err := st.saveSweep(ctx, got); err != nil {
			t.Fatal(err)
		}
	}
}

// A record that would pass the limit is refused by the store with errRecordTooBig,
// before DynamoDB sees it, and nothing is written.
func TestOversizeRecordIsAClearError(t *testing.T) {
	st := newTestStore(t)
	ctx := context.Background()
	sw := &sweep{SweepID: "sw-fat", UserID: "u", Status: statusRunning, TotalParams: 1, MaxConcurrent: 1}
	if err := st.createSweep(ctx, sw); err != nil {
		t.Fatal(err)
	}
	for i := range 2 * maxConcurrentLimit {
		sw.Alive = append(sw.Alive, worstAlive(i))
	}
	err := st.saveSweep(ctx, sw)
	if !errors.Is(err, errRecordTooBig) || !strings.Contains(err.Error(), "sw-fat") {
		t.Fatalf("saving an oversize record: %v", err)
	}
	if got, _ := st.loadSweep(ctx, "sw-fat"); got.Version != 1 || len(got.Alive) != 0 {
		t.Errorf("the oversize write changed the record: version %d, %d alive", got.Version, len(got.Alive))
	}
}
