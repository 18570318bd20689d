package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// cancelSweep is the cancel, with the lease held: give ended instances their outcome,
// find every reservation that may have launched, terminate every instance of the sweep
// it can reach (recorded, found by token, or found by its tags), region by region, then
// count what is left as cancelled and set CANCELLED. It never calls RunInstances. When a
// region refused or a launch is not yet ruled out, it saves what it learned and returns
// *cancelIncomplete, naming them: the sweep stays cancel-requested, and the next attempt
// (or `spawn cancel` again) finishes the job.
func (o *orchestrator) cancelSweep(ctx context.Context, sw *sweep) error {
	if terminalStatus(sw.Status) {
		// It ended between the cancel's request and its lease: it stays as it ended.
		return o.releaseFinal(ctx, sw)
	}
	now := o.clock.Now()
	o.outcomes(ctx, sw, o.refresh(ctx, sw, now), now)
	incomplete := &cancelIncomplete{sweepID: sw.SweepID, regions: map[string]error{}}
	o.resolveForCancel(ctx, sw, now, incomplete)
	o.terminateSweep(ctx, sw, o.earlierLaunches(ctx, sw, incomplete), incomplete)
	sw.CancelUnreached, sw.CancelUnresolved = nil, incomplete.unresolved
	for region, err := range incomplete.regions {
		if sw.CancelUnreached == nil {
			sw.CancelUnreached = map[string]string{}
		}
		sw.CancelUnreached[region] = err.Error()
	}
	if !incomplete.empty() {
		if err := o.save(ctx, sw); err != nil {
			return err
		}
		return incomplete
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

// cancelIncomplete: the cancel terminated what it could reach, but a region refused
// its calls or a launch is not yet ruled out.
type cancelIncomplete struct {
	sweepID    string
	regions    map[string]error // region → the call it refused
	unresolved int              // reservations that may have launched and are not found yet
}

func (e *cancelIncomplete) empty() bool { return len(e.regions) == 0 && e.unresolved == 0 }

func (e *cancelIncomplete) Error() string {
	var parts []string
	for _, r := range sortedKeys(e.regions) {
		parts = append(parts, fmt.Sprintf("could not reach %s (%v)", r, e.regions[r]))
	}
	if e.unresolved > 0 {
		parts = append(parts, fmt.Sprintf("%d launches not yet found or ruled out (EC2 shows new instances seconds late)", e.unresolved))
	}
	return fmt.Sprintf("cancelling sweep %s: %s: run 'spawn cancel --sweep-id %s' again", e.sweepID, strings.Join(parts, "; "), e.sweepID)
}

// resolveForCancel looks every reservation without an instance up by its client token,
// backoff or not: one that RunInstances may have created is found here once EC2 shows
// it. A reservation this invocation never sent is dropped at once; one not found counts
// as launched-and-invisible until the consistency window has passed on this machine's
// clock since the cancel first missed it.
func (o *orchestrator) resolveForCancel(ctx context.Context, sw *sweep, now time.Time, inc *cancelIncomplete) {
	reported := sightings{}
	for i := range sw.Alive {
		e := &sw.Alive[i]
		if e.InstanceID != "" || o.unsent[e.ClientToken] {
			continue
		}
		api, err := o.ec2For(ctx, e.Region)
		var inst *ec2types.Instance
		if err == nil {
			inst, err = findByToken(ctx, api, e.ClientToken)
		}
		switch {
		case err != nil:
			inc.regions[e.Region] = err
		case inst != nil:
			o.adopt(sw, e, aws.ToString(inst.InstanceId), now)
		case o.reportedByExitRecord(ctx, sw, e, now):
			reported[e.ClientToken] = nil // ran and ended: EC2 forgot it, its record names it
		case o.launchRuledOut(e, now):
		default:
			inc.unresolved++
		}
	}
	if len(reported) > 0 {
		o.outcomes(ctx, sw, reported, now) // their outcome is in their exit record
	}
}

// reportedByExitRecord adopts a reservation EC2 does not show whose attempt left an
// exit record: its instance ran and ended, and EC2 forgot it (some time after it ends)
// before any engine learned its id.
func (o *orchestrator) reportedByExitRecord(ctx context.Context, sw *sweep, e *aliveInstance, now time.Time) bool {
	if o.exitReporter == nil {
		return false
	}
	id, err := o.exitReporter(ctx, sw, e)
	if err != nil || id == "" {
		return false
	}
	o.adopt(sw, e, id, now)
	e.Seen = true // shown once, forgotten since
	return true
}

// launchRuledOut reports whether a reservation not found by its token cannot have
// launched: cancels have missed it for EC2's consistency window on one clock (the mark
// is saved in the entry, so a chain of short invocations continues one wait). Times
// other engines recorded (when it was reserved, when its backoff ends) are never used:
// they may come from a clock half an hour off, and a RunInstances may have been sent
// after them.
func (o *orchestrator) launchRuledOut(e *aliveInstance, now time.Time) bool {
	return o.waited(&e.Unsettled, now) >= o.consistencyWindow
}

// terminateSweep terminates, region by region, every instance the record knows, those
// found by an earlier candidate's token (extra, by region) and every instance tagged
// with the sweep's id, in the sweep's region, the alive entries' regions and every
// region an item launched so far may have launched in. A region that refuses is noted
// in inc and the others go on.
func (o *orchestrator) terminateSweep(ctx context.Context, sw *sweep, extra map[string][]string, inc *cancelIncomplete) {
	regions := map[string][]string{sw.Region: nil}
	for _, e := range sw.Alive {
		regions[e.Region] = append(regions[e.Region], e.InstanceID)
	}
	for region, ids := range extra {
		regions[region] = append(regions[region], ids...)
	}
	for _, it := range o.items {
		if it.Index >= sw.NextToLaunch {
			continue
		}
		for _, region := range candidateRegions(sw, it) {
			if _, ok := regions[region]; !ok {
				regions[region] = nil
			}
		}
	}
	for _, region := range sortedKeys(regions) {
		pending, err := o.terminateRegion(ctx, sw, region, regions[region])
		if err != nil {
			inc.regions[region] = err
		}
		inc.unresolved += pending
	}
}

// terminateRegion terminates the recorded ids and the tagged instances of one region.
// A recorded instance EC2 does not know is gone if EC2 had shown it (it forgot it after
// it ended); one it never showed may not be visible yet: it counts as pending.
func (o *orchestrator) terminateRegion(ctx context.Context, sw *sweep, region string, recorded []string) (pending int, err error) {
	api, err := o.ec2For(ctx, region)
	if err != nil {
		return 0, err
	}
	ids := map[string]bool{}
	for _, id := range recorded {
		if id != "" {
			ids[id] = true
		}
	}
	// A recorded id is terminated only if it is this sweep's (ownedBy) or EC2 does not
	// show it yet (then the call only tells it is not found).
	if len(ids) > 0 {
		found, err := describeByIDs(ctx, api, sortedKeys(ids))
		if err != nil {
			return 0, fmt.Errorf("describing the sweep's instances: %w", err)
		}
		for id, inst := range found {
			if !ownedBy(&inst, sw.SweepID) {
				delete(ids, id)
				o.log.Warn().Str("sweep_id", sw.SweepID).Str("instance_id", id).Msg("recorded instance is not this sweep's (its tags): not terminated")
			}
		}
	}
	// A refused tag search still lets the recorded instances be terminated; the region
	// is then reported as not reached.
	tagged, searchErr := findSweepInstances(ctx, api, sw.SweepID)
	for _, id := range tagged {
		ids[id] = true
	}
	if list := sortedKeys(ids); len(list) > 0 {
		notFound, err := terminateEach(ctx, api, list)
		if err != nil {
			return 0, fmt.Errorf("terminating the sweep's instances: %w", err)
		}
		gone := map[string]bool{}
		for _, id := range notFound {
			gone[id] = true
			if !seenInstance(sw, id) {
				pending++
			}
		}
		var done []string
		for _, id := range list {
			if !gone[id] {
				done = append(done, id)
			}
		}
		o.noteTerminated(done)
	}
	if searchErr != nil {
		return pending, fmt.Errorf("finding the sweep's instances: %w", searchErr)
	}
	return pending, nil
}

// seenInstance: EC2 has shown the alive entry's instance id.
func seenInstance(sw *sweep, id string) bool {
	for _, e := range sw.Alive {
		if e.InstanceID == id {
			return e.Seen
		}
	}
	return false
}

// noteTerminated remembers what this cancel terminated, for the CLI's report.
func (o *orchestrator) noteTerminated(ids []string) {
	for _, id := range ids {
		if !o.killed[id] {
			o.killed[id] = true
			o.terminated = append(o.terminated, id)
		}
	}
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
			if inc := unreachedOf(sw); inc != nil {
				return nil, false, inc // the holder cancels, and cannot reach a region
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

// unreachedOf is the holder's last incomplete cancel as the record tells it, or nil.
func unreachedOf(sw *sweep) *cancelIncomplete {
	if len(sw.CancelUnreached) == 0 || terminalStatus(sw.Status) {
		return nil
	}
	inc := &cancelIncomplete{sweepID: sw.SweepID, regions: map[string]error{}, unresolved: sw.CancelUnresolved}
	for region, msg := range sw.CancelUnreached {
		inc.regions[region] = errors.New(msg)
	}
	return inc
}

// waitHolder gives a live holder the time to see the cancel and end the sweep itself
// (it reads cancel_requested at its next step), bounded by a lease's life. It returns
// the freshest record it read.
func (o *orchestrator) waitHolder(ctx context.Context, sw *sweep) (*sweep, error) {
	poll := pollIntervalOf(sw)
	limit := o.clock.Now().Add(leaseFor(sw, o.leaseTTL) + 2*poll)
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

// cancelHeld runs the cancel with the lease held, retrying failed attempts: a launch
// not yet ruled out is looked for again until EC2's consistency window has passed; a
// region that keeps refusing ends the attempt after cancelRegionAttempts, naming it. It
// reports false with no error when another holder took the lease meanwhile.
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
		var inc *cancelIncomplete
		if errors.As(err, &inc) && len(inc.regions) > 0 && m >= cancelRegionAttempts {
			_ = o.releaseFinal(ctx, sw)
			return false, inc
		}
		o.log.Warn().Err(err).Str("sweep_id", id).Msg("cancelling; retrying")
		if perr := o.pauseAfterFailure(ctx, m); perr != nil {
			_ = o.releaseFinal(ctx, sw)
			if inc != nil {
				return false, inc
			}
			return false, fmt.Errorf("cancelling sweep %s (%w): run 'spawn cancel' again", id, err)
		}
	}
}

// cancelRegionAttempts bounds how often `spawn cancel` retries a region that refuses
// its calls (an opt-in region not enabled, an organisation policy): after these it
// exits 1 naming the region, having terminated everything elsewhere.
const cancelRegionAttempts = 4
