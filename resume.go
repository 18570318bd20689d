package main

import (
	"context"
	"errors"
	"fmt"
)

// errNothingToResume: the sweep is COMPLETED or CANCELLED.
var errNothingToResume = errors.New("there is nothing to resume")

// prepareResume refuses a finished sweep and, with retryFailed, queues the failed items
// again (attempt+1, counts fixed) in one fenced write: as many as the record holds
// (retryRoom); those left stay failed (sw.Counts.Failed) for the next resume.
func prepareResume(ctx context.Context, st sweepStore, id string, retryFailed bool) (*sweep, int, error) {
	for range 10 {
		sw, err := st.loadSweep(ctx, id)
		if err != nil {
			return nil, 0, err
		}
		if sw.Status == statusCompleted || sw.Status == statusCancelled {
			return nil, 0, fmt.Errorf("sweep %s is %s, %w: start a new one with 'spawn launch'", id, sw.Status, errNothingToResume)
		}
		if !retryFailed && sw.Status != statusFailed {
			return sw, 0, nil
		}
		queued := 0
		if retryFailed {
			recs, err := st.listInstances(ctx, id)
			if err != nil {
				return nil, 0, err
			}
			busy := map[int]bool{}
			for _, e := range sw.Alive {
				busy[e.Index] = true
			}
			for _, q := range sw.RetryQueue {
				busy[q.Index] = true
			}
			// The record holds only so many retries (bounds.go): the rest stay failed, for
			// the next `resume --retry-failed`.
			room := retryRoom(sw.MaxConcurrent) - len(sw.RetryQueue)
			for _, rec := range recs {
				if rec.Outcome != outcomeFailed || busy[rec.Index] || queued >= room {
					continue
				}
				sw.RetryQueue = append(sw.RetryQueue, retryItem{Index: rec.Index, Attempt: rec.Attempt + 1})
				sw.Counts.Failed = max(sw.Counts.Failed-1, 0)
				queued++
			}
		}
		if sw.Status == statusFailed {
			sw.Status, sw.ErrorMessage, sw.CompletedAt = statusRunning, "", ""
		}
		fixCounts(sw)
		if idx, ok := st.(runningIndex); ok {
			// Indexed again before it runs again (a FAILED sweep left the index).
			if err := idx.markRunning(ctx, id); err != nil {
				return nil, 0, err
			}
		}
		err = st.saveSweep(ctx, sw)
		if errors.Is(err, errStaleVersion) {
			continue
		}
		if err != nil {
			return nil, 0, err
		}
		return sw, queued, nil
	}
	return nil, 0, fmt.Errorf("sweep %s kept changing while it was being resumed: try again", id)
}
