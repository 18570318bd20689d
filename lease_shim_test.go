package main

// Stand-ins for the lease functions of state.go, with the signatures the state branch
// implements; this file goes away when that lands.

import (
	"context"
	"errors"
	"fmt"
	"time"
)

const defaultLeaseTTL = 60 * time.Second

type leaseWaitError struct{ Until time.Time }

func (e *leaseWaitError) Error() string {
	return fmt.Sprintf("the sweep's lease holder stopped renewing; its lease expires at %s", e.Until.Format(time.RFC3339))
}

func acquireLease(ctx context.Context, st sweepStore, id, owner string, now time.Time, leaseTTL, pollInterval time.Duration) (*sweep, error) {
	for range 5 {
		sw, err := st.loadSweep(ctx, id)
		if err != nil {
			return nil, err
		}
		if sw.LeaseOwner != "" && sw.LeaseOwner != owner && sw.LeaseExpiresAt.After(now) {
			if now.Sub(sw.LeaseRenewedAt) <= 2*pollInterval {
				return nil, errLeaseHeld
			}
			return nil, &leaseWaitError{Until: sw.LeaseExpiresAt}
		}
		renewLease(sw, owner, now, leaseTTL)
		err = st.saveSweep(ctx, sw)
		if errors.Is(err, errStaleVersion) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return sw, nil
	}
	return nil, errLeaseHeld
}

func renewLease(s *sweep, owner string, now time.Time, leaseTTL time.Duration) {
	s.LeaseOwner = owner
	s.LeaseRenewedAt = now
	s.LeaseExpiresAt = now.Add(leaseTTL)
}

func releaseLease(ctx context.Context, st sweepStore, s *sweep, owner string) error {
	for range 5 {
		if s.LeaseOwner != owner {
			return nil
		}
		s.LeaseOwner, s.LeaseExpiresAt, s.LeaseRenewedAt = "", time.Time{}, time.Time{}
		err := st.saveSweep(ctx, s)
		if !errors.Is(err, errStaleVersion) {
			return err
		}
		fresh, lerr := st.loadSweep(ctx, s.SweepID)
		if lerr != nil {
			return lerr
		}
		*s = *fresh
	}
	return errStaleVersion
}
