package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// cancelSweep is the cancel, with the lease held: give ended instances their outcome,
// terminate every other instance of the sweep (recorded, reserved, or found by its
// tags), count what is left as cancelled, and set CANCELLED.
func (o *orchestrator) cancelSweep(ctx context.Context, sw *sweep) error {
	if terminalStatus(sw.Status) {
		// It ended between the cancel's request and its lease: it stays as it ended.
		return o.releaseFinal(ctx, sw)
	}
	now := o.clock.Now()
	o.outcomes(ctx, sw, o.refresh(ctx, sw, now), now)
	if err := o.resolveForCancel(ctx, sw, now); err != nil {
		return err
	}
	if err := o.terminateSweep(ctx, sw); err != nil {
		return err
	}
	if err := o.recordCancelled(ctx, sw, now); err != nil {
		return err
	}
	c := &sw.Counts
	c.Cancelled += max(sw.TotalParams-c.done(), 0)
	sw.Alive = nil
	sw.RetryQueue = nil
	sw.Status = statusCancelled
	sw.CompletedAt = now.UTC().Format(time.RFC3339)
	if err := o.save(ctx, sw); err != nil {
		return err
	}
	o.log.Info().Str("sweep_id", sw.SweepID).Int("terminated", len(o.terminated)).Msg("sweep cancelled")
	return o.release(ctx, sw)
}

// resolveForCancel: a reservation not found by its token may still have launched
// (DescribeInstances is eventually consistent): RunInstances with the same token answers
// with that instance if it exists, so it can be terminated. Without the items the tag
// search must do.
func (o *orchestrator) resolveForCancel(ctx context.Context, sw *sweep, now time.Time) error {
	for i := range sw.Alive {
		e := &sw.Alive[i]
		if e.InstanceID != "" || !o.mayLaunch[e.ClientToken] || o.launchInput == nil || len(o.items) == 0 {
			continue
		}
		api, err := o.ec2For(ctx, e.Region)
		if err != nil {
			continue
		}
		it, _ := o.itemOf(e.Index)
		out, err := api.RunInstances(ctx, o.launchInput(sw, it, e.Attempt))
		delete(o.mayLaunch, e.ClientToken)
		if err != nil && retryableLaunchError(err) {
			// It may have launched: the cancel is not done until it is found.
			return fmt.Errorf("resolving the reserved launch of item %d: %w", e.Index, err)
		}
		if err == nil && out != nil && len(out.Instances) > 0 {
			o.launched[e.ClientToken] = launchedInstance{id: aws.ToString(out.Instances[0].InstanceId), at: now}
			o.setLaunched(sw, e, aws.ToString(out.Instances[0].InstanceId), now)
		}
	}
	return nil
}

// terminateSweep terminates, region by region, every instance the record knows and
// every instance tagged with the sweep's id: the sweep's region, the alive entries'
// regions and the items' regions.
func (o *orchestrator) terminateSweep(ctx context.Context, sw *sweep) error {
	regions := map[string][]string{sw.Region: nil}
	for _, e := range sw.Alive {
		regions[e.Region] = append(regions[e.Region], e.InstanceID)
	}
	for _, it := range o.items {
		if _, ok := regions[regionOf(sw, it)]; !ok {
			regions[regionOf(sw, it)] = nil
		}
	}
	for _, region := range sortedKeys(regions) {
		api, err := o.ec2For(ctx, region)
		if err != nil {
			return fmt.Errorf("cancelling in %s: %w", region, err)
		}
		ids := map[string]bool{}
		for _, id := range regions[region] {
			if id != "" {
				ids[id] = true
			}
		}
		tagged, err := findSweepInstances(ctx, api, sw.SweepID)
		if err != nil {
			return fmt.Errorf("finding the sweep's instances in %s: %w", region, err)
		}
		for _, id := range tagged {
			ids[id] = true
		}
		list := sortedKeys(ids)
		if len(list) == 0 {
			continue
		}
		if err := terminate(ctx, api, list); err != nil {
			return fmt.Errorf("terminating the sweep's instances in %s: %w", region, err)
		}
		for _, id := range list {
			if !o.killed[id] {
				o.killed[id] = true
				o.terminated = append(o.terminated, id)
			}
		}
	}
	return nil
}

// recordCancelled writes outcome cancelled for every alive entry and queued retry.
func (o *orchestrator) recordCancelled(ctx context.Context, sw *sweep, now time.Time) error {
	for i := range sw.Alive {
		e := &sw.Alive[i]
		rec := o.record(sw, e)
		rec.Outcome = outcomeCancelled
		rec.State = string(ec2types.InstanceStateNameShuttingDown)
		if e.InstanceID == "" {
			rec.State = "not-launched"
		}
		rec.TerminatedAt = now
		rec.CostUSD = runCost(e.LaunchedAt, now, e.PriceHourly)
		if err := o.store.putInstance(ctx, rec); err != nil {
			return fmt.Errorf("recording a cancelled instance: %w", err)
		}
		sw.EstimatedCostUSD += rec.CostUSD
		o.deleteAlarm(ctx, sw, e)
	}
	for _, r := range sw.RetryQueue {
		rec := &instanceRecord{SweepID: sw.SweepID, Index: r.Index, Attempt: r.Attempt, State: "not-launched", Outcome: outcomeCancelled, TerminatedAt: now}
		if err := o.store.putInstance(ctx, rec); err != nil {
			return fmt.Errorf("recording a cancelled retry: %w", err)
		}
	}
	return nil
}

// cancelRun is `spawn cancel`: request the cancel (it always wins: it bumps the version),
// give a live holder the time to acknowledge, else take the lease and cancel here. It
// reports whether the sweep had already ended.
func (o *orchestrator) cancelRun(ctx context.Context, id string) (sw *sweep, already bool, err error) {
	o.init()
	sw, err = o.store.requestCancel(ctx, id)
	if err != nil {
		return nil, false, err
	}
	if terminalStatus(sw.Status) {
		return sw, true, nil
	}
	if sw, err = o.waitHolder(ctx, sw); err != nil || terminalStatus(sw.Status) {
		return sw, false, err
	}
	for n := 1; ; n++ {
		sw, err = o.acquire(ctx, id)
		if sw == nil && err == nil {
			// Finished meanwhile (the holder acknowledged).
			sw, err = o.store.loadSweep(ctx, id)
			return sw, false, err
		}
		if errors.Is(err, errLeaseHeld) && n <= 3 {
			// A new holder took over just now (a retried invocation): it sees the cancel at
			// its first step. Wait for it as for the first one.
			if sw, err = o.store.loadSweep(ctx, id); err != nil {
				return nil, false, err
			}
			if sw, err = o.waitHolder(ctx, sw); err != nil || terminalStatus(sw.Status) {
				return sw, false, err
			}
			continue
		}
		if errors.Is(err, errLeaseHeld) {
			return nil, false, fmt.Errorf("the orchestrator of sweep %s is still running and has not stopped yet: run 'spawn cancel --sweep-id %s' again", id, id)
		}
		if err != nil {
			return nil, false, err
		}
		o.sweepAccount = sw.AWSAccountID
		if o.items == nil && o.loadItems != nil {
			if items, lerr := o.loadItems(ctx, sw); lerr == nil && len(items) == sw.TotalParams {
				o.items = items
			}
		}
		done, err := o.cancelHeld(ctx, sw)
		if done || err != nil {
			return sw, false, err
		}
		if n > 5 {
			return nil, false, fmt.Errorf("cancelling sweep %s: the lease kept changing hands: run 'spawn cancel' again", id)
		}
	}
}

// waitHolder gives a live holder the time to see the cancel and end the sweep itself
// (it reads cancel_requested at its next step), bounded by a lease's life. It returns
// the freshest record it read.
func (o *orchestrator) waitHolder(ctx context.Context, sw *sweep) (*sweep, error) {
	poll := pollIntervalOf(sw)
	limit := o.clock.Now().Add(o.leaseTTL + 2*poll)
	for {
		now := o.clock.Now()
		if terminalStatus(sw.Status) || sw.LeaseOwner == "" || !sw.LeaseExpiresAt.After(now) || now.After(limit) {
			return sw, nil
		}
		if err := o.clock.Sleep(ctx, min(poll, time.Second)); err != nil {
			return nil, err
		}
		if fresh, err := o.store.loadSweep(ctx, sw.SweepID); err == nil {
			sw = fresh
		}
	}
}

// cancelHeld runs the cancel with the lease held, retrying failed attempts. It reports
// false with no error when another holder took the lease meanwhile (acquire again).
func (o *orchestrator) cancelHeld(ctx context.Context, sw *sweep) (bool, error) {
	id := sw.SweepID
	for m := 1; ; m++ {
		err := o.cancelSweep(ctx, sw)
		if err == nil {
			return true, nil
		}
		fresh, lerr := o.reload(ctx, id)
		if errors.Is(lerr, errLeaseLost) {
			return false, nil
		}
		if lerr == nil {
			*sw = *fresh
		}
		if errors.Is(err, errStaleVersion) {
			continue
		}
		o.log.Warn().Err(err).Str("sweep_id", id).Msg("cancelling; retrying")
		if perr := o.pauseAfterFailure(ctx, m); perr != nil {
			_ = o.releaseFinal(ctx, sw)
			return false, fmt.Errorf("cancelling sweep %s: %w: run 'spawn cancel' again", id, err)
		}
	}
}
