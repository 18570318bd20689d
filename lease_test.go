package main

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestSteadyStepWritesOnlyTheLeaseItem: a step that changes nothing in the record renews
// the lease in its own item (one small write, the record's version unchanged), and a
// cancel requested between two such steps is still seen at the next one.
func TestSteadyStepWritesOnlyTheLeaseItem(t *testing.T) {
	x := newSimSweep(t, figureItems(t, 20), 5, 0)
	x.step(t) // launches 5
	x.step(t) // adopts what it launched
	version := x.sw.Version
	x.store.reset()
	for range 3 {
		x.step(t)
	}
	if x.store.writes != 3 || x.store.wrus != 3 {
		t.Errorf("3 steady steps: %d writes, %d write units; want 3 and 3 (the lease item only)", x.store.writes, x.store.wrus)
	}
	stored, err := x.store.loadSweep(context.Background(), x.sw.SweepID)
	if err != nil {
		t.Fatal(err)
	}
	if stored.Version != version {
		t.Errorf("the record was rewritten: version %d → %d", version, stored.Version)
	}
	if !stored.LastStepAt.Equal(x.sw.LastStepAt) || !stored.LeaseRenewedAt.Equal(x.sw.LeaseRenewedAt) || stored.LeaseOwner != x.o.owner {
		t.Errorf("lease as loaded: owner %q renewed %v last step %v; want %q, %v, %v",
			stored.LeaseOwner, stored.LeaseRenewedAt, stored.LastStepAt, x.o.owner, x.sw.LeaseRenewedAt, x.sw.LastStepAt)
	}

	if _, err := x.store.requestCancel(context.Background(), x.sw.SweepID); err != nil {
		t.Fatal(err)
	}
	err = x.o.step(context.Background(), x.sw)
	if !errors.Is(err, errStaleVersion) {
		t.Fatalf("the steady step after a cancel request: %v, want errStaleVersion (reload and see the cancel)", err)
	}
	fresh, err := x.o.reload(context.Background(), x.sw.SweepID)
	if err != nil || !fresh.CancelRequested {
		t.Fatalf("reload: %+v, %v", fresh, err)
	}
}

// TestLeaseItemRefusesAnOlderEpoch, on the emulator: once a newer holder took the lease
// (a later epoch), the older holder's renewal is refused with errLeaseLost, and the
// record shows the newer holder's renewal only.
func TestLeaseItemRefusesAnOlderEpoch(t *testing.T) {
	st := newTestStore(t)
	ctx := context.Background()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	id := uniqueName("sw-epoch")
	if err := st.createSweep(ctx, &sweep{SweepID: id, UserID: "u", Status: statusRunning, PollInterval: "10s", TotalParams: 1}); err != nil {
		t.Fatal(err)
	}
	old, err := acquireLease(ctx, st, id, "old", now, time.Minute, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The old holder stops renewing; a newcomer watched the lease lapse and takes it.
	newer, err := acquireLease(ctx, st, id, "new", now.Add(2*time.Minute), time.Minute,
		&leaseMark{Owner: "old", RenewedAt: old.LeaseRenewedAt})
	if err != nil {
		t.Fatalf("takeover: %v", err)
	}
	if newer.LeaseEpoch <= old.LeaseEpoch {
		t.Fatalf("epochs: old %d, new %d", old.LeaseEpoch, newer.LeaseEpoch)
	}
	renewLease(old, "old", now.Add(3*time.Minute), time.Minute)
	if err := st.beatLease(ctx, beatOf(old)); !errors.Is(err, errLeaseLost) {
		t.Fatalf("the old holder's renewal: %v, want errLeaseLost", err)
	}
	if err := st.saveSweep(ctx, old); !errors.Is(err, errStaleVersion) {
		t.Fatalf("the old holder's record write: %v, want errStaleVersion", err)
	}
	got, err := st.loadSweep(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if got.LeaseOwner != "new" || !got.LeaseRenewedAt.Equal(newer.LeaseRenewedAt) {
		t.Errorf("loaded lease: %q renewed %v; want new, %v", got.LeaseOwner, got.LeaseRenewedAt, newer.LeaseRenewedAt)
	}
	// A lease item left by a holder that released it is no one's renewal.
	if err := releaseLease(ctx, st, got, "new"); err != nil {
		t.Fatal(err)
	}
	if got, err = st.loadSweep(ctx, id); err != nil || got.LeaseOwner != "" || !got.LeaseExpiresAt.IsZero() {
		t.Errorf("after release: %+v, %v", got, err)
	}
}
