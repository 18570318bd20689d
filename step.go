package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/rs/zerolog"
)

// step is one poll, as named phases: refresh what EC2 says of every alive entry, give
// ended instances their outcome, enforce the TTL backstop and idle alarms on the running
// ones, reserve free slots, save (fenced), then launch what was reserved and save again.
func (o *orchestrator) step(ctx context.Context, sw *sweep) error {
	o.init()
	if terminalStatus(sw.Status) {
		// A sweep ends once: a record reloaded after a write that landed but was reported
		// stale (the SDK retried it) may already be terminal, and a late cancel must not
		// turn COMPLETED into CANCELLED.
		return nil
	}
	if sw.CancelRequested {
		return o.cancelSweep(ctx, sw)
	}
	if sw.Status == statusInitializing {
		sw.Status = statusRunning
	}
	now := o.clock.Now()
	seen := o.refresh(ctx, sw, now)
	o.outcomes(ctx, sw, seen, now)
	o.backstop(ctx, sw, seen, now)
	if o.drainCause != nil {
		return o.drain(ctx, sw, now)
	}
	o.reserve(sw, now)
	if err := o.commit(ctx, sw); err != nil || sw.Status == statusCompleted {
		return err
	}
	return o.launchReserved(ctx, sw)
}

// drain is a step of a sweep whose parameters can no longer be read (the object is gone
// or refused): nothing more can be launched, but the instances alive are watched to
// their end, and reservations are resolved by their token (adopted, or ruled out after
// EC2's consistency window). Once none is left the sweep is FAILED with the reason:
// never RUNNING with nobody able to drive it.
func (o *orchestrator) drain(ctx context.Context, sw *sweep, now time.Time) error {
	inc := &cancelIncomplete{regions: map[string]error{}}
	o.resolveForCancel(ctx, sw, now, inc)
	cause := fmt.Errorf("loading the sweep's parameters: %w", o.drainCause)
	gone := map[string]bool{}
	for i := range sw.Alive {
		e := &sw.Alive[i]
		if e.InstanceID == "" && (o.unsent[e.ClientToken] || o.launchRuledOut(e, now)) &&
			o.endWithoutInstance(ctx, sw, e, outcomeFailed, "not launched: "+cause.Error(), now) {
			gone[e.ClientToken] = true
		}
	}
	dropByToken(sw, gone)
	if len(sw.Alive) == 0 {
		return o.failSweep(ctx, sw, cause)
	}
	return o.commit(ctx, sw)
}

// commit saves the step's changes (fenced). A sweep with nothing left to launch and
// nothing alive is COMPLETED first, and then gives up its lease.
func (o *orchestrator) commit(ctx context.Context, sw *sweep) error {
	o.finishIfDone(sw, o.clock.Now())
	if err := o.save(ctx, sw); err != nil {
		return err
	}
	if sw.Status == statusCompleted {
		return o.release(ctx, sw)
	}
	return nil
}

// sightings is what one refresh learned from EC2, by client token: an entry whose region
// answered DescribeInstances is present, with its instance or nil when EC2 did not show
// it. An entry whose region did not answer is absent: nothing is decided about it.
type sightings map[string]*ec2types.Instance

// refresh asks EC2 about every alive entry: reservations are resolved by client token,
// and recorded instances described by id. An AWS error never counts as "ended": the
// entry is left out of the answer and looked at again next step.
func (o *orchestrator) refresh(ctx context.Context, sw *sweep, now time.Time) sightings {
	o.adoptLaunched(sw)
	byRegion := map[string][]int{}
	for i, e := range sw.Alive {
		byRegion[e.Region] = append(byRegion[e.Region], i)
	}
	seen := sightings{}
	foreign := map[string]*ec2types.Instance{}
	for _, region := range sortedKeys(byRegion) {
		idxs := byRegion[region]
		log := o.log.With().Str("sweep_id", sw.SweepID).Str("region", region).Logger()
		api, err := o.ec2For(ctx, region)
		if err != nil {
			log.Warn().Err(err).Msg("no EC2 client for the region; retrying next step")
			continue
		}
		var ids []string
		for _, i := range idxs {
			e := &sw.Alive[i]
			o.resolveReservation(ctx, api, sw, e, now, log)
			if e.InstanceID != "" {
				ids = append(ids, e.InstanceID)
			}
		}
		if len(ids) == 0 {
			continue
		}
		found, err := describeByIDs(ctx, api, ids)
		if err != nil {
			log.Warn().Err(err).Msg("describing instances; they stay alive until the next step")
			continue
		}
		for _, i := range idxs {
			e := sw.Alive[i]
			if e.InstanceID == "" {
				continue
			}
			inst, ok := found[e.InstanceID]
			if ok && len(inst.Tags) == 0 {
				continue // its tags could not be read: nothing is decided or done this step
			}
			if ok && !ownedBy(&inst, sw.SweepID) {
				foreign[e.ClientToken] = &inst
				continue // never acted on: not in the sightings
			}
			seen[e.ClientToken] = nil
			if ok {
				seen[e.ClientToken] = &inst
			}
		}
	}
	o.disown(ctx, sw, foreign, now)
	return seen
}

// disown ends the entries whose instance is not this sweep's (its tags say otherwise:
// a hand-written record, a report naming another instance): the item ends unknown,
// and the instance is left as it is. An entry whose end could not be written stays,
// still never acted on, and is looked at again next step.
func (o *orchestrator) disown(ctx context.Context, sw *sweep, foreign map[string]*ec2types.Instance, now time.Time) {
	gone := map[string]bool{}
	for i := range sw.Alive {
		e := &sw.Alive[i]
		if foreign[e.ClientToken] == nil {
			continue
		}
		why := fmt.Sprintf("instance %s does not carry this sweep's tags (%s=true, %s=%s): spawn leaves it alone",
			e.InstanceID, tagManaged, tagSweepID, sw.SweepID)
		id := e.InstanceID
		e.InstanceID = "" // the item's record must not name an instance that is not its own
		if o.endWithoutInstance(ctx, sw, e, outcomeUnknown, why, now) {
			gone[e.ClientToken] = true
			continue
		}
		e.InstanceID = id
	}
	dropByToken(sw, gone)
}

// resolveReservation looks a reservation up by its client token, once its backoff has
// passed and unless it is known not to exist yet: a launch whose answer was lost is
// found here, and one that never happened is marked free to launch.
func (o *orchestrator) resolveReservation(ctx context.Context, api ec2API, sw *sweep, e *aliveInstance, now time.Time, log zerolog.Logger) {
	if e.InstanceID != "" || e.NotBefore.After(now) || o.mayLaunch[e.ClientToken] {
		return
	}
	if e.Refused {
		o.settleRefused(ctx, api, sw, e, now, log)
		return
	}
	inst, err := findByToken(ctx, api, e.ClientToken)
	if err != nil {
		log.Warn().Err(err).Int("index", e.Index).Msg("looking up a reserved launch; retrying next step")
		return
	}
	if inst == nil {
		o.mayLaunch[e.ClientToken] = true
		return
	}
	// The launch is dated on this machine's clock when it is first seen, never by EC2's
	// LaunchTime: the TTL backstop and "lost" compare it with this clock (later than the
	// real launch, so never early).
	o.adopt(sw, e, aws.ToString(inst.InstanceId), now)
}

// outcomes finishes every entry whose instance ended, with the report it left (its
// exit-code tag, else its exit record in S3), and frees its slot. An instance EC2 does
// not show has ended if EC2 had shown it (EC2 forgets terminated instances) or its
// record is there. An ended instance with no report frees its slot at once and keeps its
// entry until decideUnreported says. An entry whose outcome could not be read or
// written stays and is looked at next step.
func (o *orchestrator) outcomes(ctx context.Context, sw *sweep, seen sightings, now time.Time) {
	finished := map[string]bool{}
	for i := range sw.Alive {
		e := &sw.Alive[i]
		inst, described := seen[e.ClientToken]
		if !described {
			continue
		}
		if inst != nil {
			e.Seen, e.Unseen = true, nil
			if !endedState(inst.State.Name) {
				continue
			}
			o.terminateStopped(ctx, e, inst)
		}
		rep, err := o.reportOf(ctx, sw, e, inst)
		if err != nil {
			o.log.Warn().Err(err).Str("sweep_id", sw.SweepID).Int("index", e.Index).Msg("reading an exit report; retrying next step")
			continue
		}
		if rep == nil && !o.decideUnreported(sw, e, inst, now) {
			continue
		}
		if o.finish(ctx, sw, e, inst, rep, now) {
			finished[e.ClientToken] = true
		}
	}
	dropByToken(sw, finished)
}

// terminateStopped terminates an instance that stopped instead of terminating: a
// stopped instance still costs its volumes.
func (o *orchestrator) terminateStopped(ctx context.Context, e *aliveInstance, inst *ec2types.Instance) {
	if s := inst.State.Name; s != ec2types.InstanceStateNameStopped && s != ec2types.InstanceStateNameStopping {
		return
	}
	if api, err := o.ec2For(ctx, e.Region); err == nil {
		_ = terminate(ctx, api, []string{e.InstanceID})
	}
}

// reportOf is what an ended instance reported: its exit-code tag, else its exit record;
// nil when neither is there (yet).
func (o *orchestrator) reportOf(ctx context.Context, sw *sweep, e *aliveInstance, inst *ec2types.Instance) (*exitReport, error) {
	if inst != nil {
		if code, ok := exitCodeOf(inst.Tags); ok {
			return &exitReport{ExitCode: &code}, nil
		}
	}
	if o.exitReports == nil {
		return nil, nil
	}
	rep, err := o.exitReports(ctx, sw, e)
	if err != nil || rep == nil || rep.ExitCode == nil {
		return nil, err
	}
	return rep, nil
}

// decideUnreported says whether an ended instance with no report gets its outcome now:
// one EC2 showed and no longer shows, or a spot interruption, at once; one EC2 never
// showed, after lostAfter; during a cancel, never (the cancel's own terminate: recorded
// cancelled); any other once its report had reportWait to appear (tags show seconds late).
func (o *orchestrator) decideUnreported(sw *sweep, e *aliveInstance, inst *ec2types.Instance, now time.Time) bool {
	switch {
	case inst == nil && e.Seen:
		return true
	case inst == nil:
		// Never shown: not visible yet (DescribeInstances is eventually consistent), or it
		// ended and aged out before anyone looked.
		return o.waited(&e.Unseen, now) >= o.lostAfter()
	case sw.CancelRequested:
		return false
	case spotInterrupted(inst):
		return true
	}
	return o.waited(&e.Ended, now) >= o.reportWait
}

// backstop acts on the instances still running: one past its TTL (plus grace) is
// terminated by the orchestrator, in case its own shutdown never came, and each gets its
// idle-timeout alarm if it has none yet.
func (o *orchestrator) backstop(ctx context.Context, sw *sweep, seen sightings, now time.Time) {
	for i := range sw.Alive {
		e := &sw.Alive[i]
		inst := seen[e.ClientToken]
		if inst == nil || endedState(inst.State.Name) {
			continue
		}
		if d := o.deadlineOf(sw, e, now); !d.IsZero() && now.After(d.Add(ttlGrace)) {
			log := o.log.With().Str("sweep_id", sw.SweepID).Int("index", e.Index).Str("instance_id", e.InstanceID).Logger()
			log.Info().Msg("past its TTL: terminating")
			api, err := o.ec2For(ctx, e.Region)
			if err == nil {
				err = terminate(ctx, api, []string{e.InstanceID})
			}
			if err != nil {
				log.Warn().Err(err).Msg("terminating an expired instance; retrying next step")
			}
		}
		o.ensureAlarm(ctx, sw, e)
	}
}

// adoptLaunched fills reservations whose RunInstances answered earlier in this invocation.
func (o *orchestrator) adoptLaunched(sw *sweep) {
	for i := range sw.Alive {
		e := &sw.Alive[i]
		if e.InstanceID != "" {
			continue
		}
		if l, ok := o.launched[e.ClientToken]; ok {
			o.setLaunched(sw, e, l.id, l.at)
		}
	}
}

// adopt records id as the reservation's instance, in the record and in this
// invocation's memory (so a record reloaded after a lost write learns it again).
func (o *orchestrator) adopt(sw *sweep, e *aliveInstance, id string, now time.Time) {
	o.launched[e.ClientToken] = launchedInstance{id: id, at: now}
	o.setLaunched(sw, e, id, now)
}

// setLaunched records the instance of a reservation. Whoever learns of it (the launch
// itself, a lookup by token after a lost save, a cancel) counts it, once.
func (o *orchestrator) setLaunched(sw *sweep, e *aliveInstance, id string, at time.Time) {
	if e.InstanceID == "" {
		sw.Launched++
	}
	e.InstanceID = id
	e.LaunchedAt = at
	e.NotBefore = time.Time{}
	e.WaitReason = ""
	e.Unsettled, e.Propagating = nil, nil // waits on its launch, over
	if ttl := o.ttlOf(sw, e.Index); ttl > 0 {
		e.Deadline, e.DeadlineClock = at.Add(ttl), o.clockName
	}
}

// deadlineOf is when the instance's TTL ends on this engine's clock. A deadline another
// clock set is moved to a full TTL from now: later than the real one (the instance's
// own shutdown ends it on time), never earlier, whatever the two clocks say.
func (o *orchestrator) deadlineOf(sw *sweep, e *aliveInstance, now time.Time) time.Time {
	if e.Deadline.IsZero() || e.DeadlineClock == o.clockName {
		return e.Deadline
	}
	ttl := o.ttlOf(sw, e.Index)
	if ttl <= 0 {
		return time.Time{} // the TTL is not known here: no backstop rather than an early one
	}
	e.Deadline, e.DeadlineClock = now.Add(ttl), o.clockName
	return e.Deadline
}

func (o *orchestrator) itemOf(idx int) (item, bool) {
	if idx < 0 || idx >= len(o.items) {
		return item{}, false
	}
	return o.items[idx], true
}

func (o *orchestrator) ttlOf(sw *sweep, idx int) time.Duration {
	if it, ok := o.itemOf(idx); ok && it.TTL > 0 {
		return it.TTL
	}
	return durationOr(sw.TTL, 0)
}

func (o *orchestrator) idleTimeoutOf(sw *sweep, idx int) time.Duration {
	if it, ok := o.itemOf(idx); ok && it.IdleTimeout > 0 {
		return it.IdleTimeout
	}
	return durationOr(sw.IdleTimeout, 0)
}

func regionOf(sw *sweep, it item) string {
	if it.Region != "" {
		return it.Region
	}
	return sw.Region
}

// finish gives an ended instance its outcome (or queues a spot relaunch) from its
// report, writes its instance item, and updates counts and cost. It reports false when
// the item write failed: the entry then stays alive and is finished next step.
func (o *orchestrator) finish(ctx context.Context, sw *sweep, e *aliveInstance, inst *ec2types.Instance, rep *exitReport, now time.Time) bool {
	rec := o.record(sw, e)
	rec.TerminatedAt = now
	rec.State = string(ec2types.InstanceStateNameTerminated)
	if inst != nil {
		rec.State = string(inst.State.Name)
	}
	requeue := false
	switch {
	case rep != nil:
		code := *rep.ExitCode
		rec.ExitCode = &code
		rec.Outcome = outcomeSucceeded
		if code != 0 {
			rec.Outcome = outcomeFailed
			rec.ErrorMessage = fmt.Sprintf("the command exited with code %d", code)
		}
	case inst == nil:
		rec.Outcome = outcomeUnknown
		rec.ErrorMessage = "the instance ended without a report and EC2 no longer shows it"
	case spotInterrupted(inst):
		if e.Attempt < maxAttempts {
			requeue = true
			rec.ErrorMessage = fmt.Sprintf("spot interruption: relaunching as attempt %d", e.Attempt+1)
		} else {
			rec.Outcome = outcomeUnknown
			rec.ErrorMessage = fmt.Sprintf("spot interruption on each of %d attempts", maxAttempts)
		}
	default:
		ran, ranKnown := ranFor(inst)
		if o.reachedTTL(sw, e, ran, ranKnown, now) {
			rec.Outcome = outcomeExpired
			break
		}
		rec.Outcome = outcomeUnknown
		rec.ErrorMessage = "the instance ended without reporting an exit code"
		if r := inst.StateReason; r != nil && aws.ToString(r.Message) != "" {
			rec.ErrorMessage += ": " + aws.ToString(r.Message)
		}
	}
	rec.CostUSD = o.costOf(e, inst, rep, now)
	if !requeue && !o.readResult(ctx, sw, e, rec, now) {
		return false
	}
	if err := o.store.putInstance(ctx, rec); err != nil {
		o.log.Warn().Err(err).Str("sweep_id", sw.SweepID).Int("index", e.Index).Msg("recording an outcome; retrying next step")
		return false
	}
	o.deleteAlarm(ctx, sw, e)
	sw.EstimatedCostUSD += rec.CostUSD
	if requeue {
		sw.RetryQueue = append(sw.RetryQueue, retryItem{Index: e.Index, Attempt: e.Attempt + 1})
	} else {
		addOutcome(&sw.Counts, rec.Outcome)
	}
	o.log.Info().Str("sweep_id", sw.SweepID).Int("index", e.Index).Int("attempt", e.Attempt).
		Str("instance_id", e.InstanceID).Str("outcome", rec.Outcome).Msg("instance ended")
	return true
}

// readResult puts the metrics the instance wrote into rec. A read that fails keeps the
// item waiting (false: retry next step) until the instance has been ended for
// reportWait; after that the outcome is recorded without metrics, saying why.
func (o *orchestrator) readResult(ctx context.Context, sw *sweep, e *aliveInstance, rec *instanceRecord, now time.Time) bool {
	if o.results == nil {
		return true
	}
	res, err := o.results(ctx, sw, e)
	if err != nil {
		if o.waited(&e.Ended, now) < o.reportWait {
			o.log.Warn().Err(err).Str("sweep_id", sw.SweepID).Int("index", e.Index).Msg("reading a result; retrying next step")
			return false
		}
		rec.ResultError = ellipsizeBytes("the result could not be read: "+err.Error(), maxResultProblem)
		return true
	}
	if res != nil {
		rec.Metrics, rec.ResultError = res.Metrics, res.Problem
	}
	return true
}

// costOf is what an ended instance cost: by EC2's own launch and end times when it shows
// them, else by the uptime its exit record reported, else from when this engine first
// knew of it until now (an upper bound).
func (o *orchestrator) costOf(e *aliveInstance, inst *ec2types.Instance, rep *exitReport, now time.Time) float64 {
	if inst != nil {
		if ran, ok := ranFor(inst); ok {
			return ran.Hours() * e.PriceHourly
		}
	}
	if rep != nil && rep.RanSeconds > 0 {
		return rep.RanSeconds / 3600 * e.PriceHourly
	}
	return runCost(e.LaunchedAt, now, e.PriceHourly)
}

func addOutcome(c *counts, outcome string) {
	switch outcome {
	case outcomeSucceeded:
		c.Succeeded++
	case outcomeFailed:
		c.Failed++
	case outcomeExpired:
		c.Expired++
	case outcomeCancelled:
		c.Cancelled++
	default:
		c.Unknown++
	}
}

func (o *orchestrator) record(sw *sweep, e *aliveInstance) *instanceRecord {
	return &instanceRecord{
		SweepID:      sw.SweepID,
		Index:        e.Index,
		InstanceID:   e.InstanceID,
		Region:       e.Region,
		InstanceType: e.InstanceType,
		Spot:         e.Spot,
		Attempt:      e.Attempt,
		LaunchedAt:   e.LaunchedAt,
		PriceHourly:  e.PriceHourly,
		PriceSource:  e.PriceSource,
	}
}

func exitCodeOf(tags []ec2types.Tag) (int, bool) {
	for _, t := range tags {
		if aws.ToString(t.Key) == tagExitCode {
			n, err := strconv.Atoi(strings.TrimSpace(aws.ToString(t.Value)))
			return n, err == nil
		}
	}
	return 0, false
}

func spotInterrupted(inst *ec2types.Instance) bool {
	r := inst.StateReason
	return r != nil && aws.ToString(r.Code) == "Server.SpotInstanceTermination"
}

// ranFor is how long an ended instance ran, from EC2's own LaunchTime and the time in
// its StateTransitionReason: both on EC2's clock, so the difference holds whatever this
// machine's clock says.
func ranFor(inst *ec2types.Instance) (time.Duration, bool) {
	launched := aws.ToTime(inst.LaunchTime)
	ended, ok := transitionTime(aws.ToString(inst.StateTransitionReason))
	if !ok || launched.IsZero() || ended.Before(launched) {
		return 0, false
	}
	return ended.Sub(launched), true
}

// reachedTTL decides "expired" for an instance that ended with no report: it ran for
// its TTL (less the minute its own shutdown rounds to). With EC2's times that is
// measured on EC2's clock alone; without them, on this machine's clock from when the
// launch was first seen.
func (o *orchestrator) reachedTTL(sw *sweep, e *aliveInstance, ran time.Duration, ranKnown bool, now time.Time) bool {
	ttl := o.ttlOf(sw, e.Index)
	if ttl <= 0 {
		return false
	}
	if ranKnown {
		return ran >= ttl-ttlSlack
	}
	d := o.deadlineOf(sw, e, now)
	return !d.IsZero() && !now.Before(d.Add(-ttlSlack))
}

// transitionTime reads EC2's "User initiated (2024-01-02 03:04:05 GMT)".
func transitionTime(reason string) (time.Time, bool) {
	i, j := strings.LastIndex(reason, "("), strings.LastIndex(reason, ")")
	if i < 0 || j < i {
		return time.Time{}, false
	}
	t, err := time.Parse("2006-01-02 15:04:05 MST", reason[i+1:j])
	return t, err == nil
}

// reserve fills free slots: retries first, then the next items in file order. A slot is
// reserved (with its ClientToken) and saved before RunInstances is called.
func (o *orchestrator) reserve(sw *sweep, now time.Time) {
	for slotsUsed(sw) < sw.MaxConcurrent {
		var idx, attempt int
		switch {
		case len(sw.RetryQueue) > 0:
			idx, attempt = sw.RetryQueue[0].Index, sw.RetryQueue[0].Attempt
			sw.RetryQueue = sw.RetryQueue[1:]
		case sw.NextToLaunch < sw.TotalParams:
			idx, attempt = sw.NextToLaunch, 1
			sw.NextToLaunch++
		default:
			return
		}
		it, _ := o.itemOf(idx)
		first, token := o.candidateInput(sw, it, attempt, 0)
		sw.Alive = append(sw.Alive, aliveInstance{
			Index:        idx,
			Attempt:      attempt,
			Region:       regionOf(sw, first),
			InstanceType: first.InstanceType,
			ClientToken:  token,
			Spot:         first.Spot,
			ReservedAt:   now,
		})
		o.mayLaunch[token] = true
		o.unsent[token] = true
	}
}

func (o *orchestrator) finishIfDone(sw *sweep, now time.Time) bool {
	if sw.NextToLaunch < sw.TotalParams || len(sw.RetryQueue) > 0 || len(sw.Alive) > 0 {
		return false
	}
	sw.Status = statusCompleted
	sw.CompletedAt = now.UTC().Format(time.RFC3339)
	return true
}

// launchReserved calls RunInstances for each reservation known not to exist yet, with
// launch_delay between launches, then saves the ids (fenced).
func (o *orchestrator) launchReserved(ctx context.Context, sw *sweep) error {
	delay := durationOr(sw.LaunchDelay, 0)
	var tokens []string
	for _, e := range sw.Alive {
		if e.InstanceID == "" && o.mayLaunch[e.ClientToken] && !e.NotBefore.After(o.clock.Now()) {
			tokens = append(tokens, e.ClientToken)
		}
	}
	failed := map[string]bool{}
	dirty := false
	for n, token := range tokens {
		if n > 0 && delay > 0 {
			if !o.fits(delay) {
				break
			}
			if err := o.clock.Sleep(ctx, delay); err != nil {
				return err
			}
		}
		if !o.fits(0) {
			break
		}
		// A long run of launches must not outlive the lease it was reserved under.
		if o.clock.Now().After(sw.LeaseRenewedAt.Add(leaseFor(sw, o.leaseTTL) / 3)) {
			dropByToken(sw, failed)
			if err := o.save(ctx, sw); err != nil {
				return err
			}
			dirty = false
		}
		e := entryByToken(sw, token)
		if e == nil {
			continue
		}
		dirty = true
		if o.launchOne(ctx, sw, e) {
			failed[token] = true
		}
	}
	dropByToken(sw, failed)
	if !dirty {
		return nil
	}
	return o.commit(ctx, sw)
}

func entryByToken(sw *sweep, token string) *aliveInstance {
	for i := range sw.Alive {
		if sw.Alive[i].ClientToken == token {
			return &sw.Alive[i]
		}
	}
	return nil
}

func dropByToken(sw *sweep, drop map[string]bool) {
	if len(drop) == 0 {
		return
	}
	kept := make([]aliveInstance, 0, len(sw.Alive))
	for _, e := range sw.Alive {
		if !drop[e.ClientToken] {
			kept = append(kept, e)
		}
	}
	sw.Alive = kept
	clear(drop)
}

// launchOne calls RunInstances for one reservation. It reports true when the launch was
// refused for bad input and the item got outcome failed (its slot is to be released).
func (o *orchestrator) launchOne(ctx context.Context, sw *sweep, e *aliveInstance) bool {
	log := o.log.With().Str("sweep_id", sw.SweepID).Int("index", e.Index).Int("attempt", e.Attempt).Logger()
	now := o.clock.Now()
	api, err := o.ec2For(ctx, e.Region)
	if err != nil {
		o.backoff(e, now)
		log.Warn().Err(err).Msg("no EC2 client for the region; retrying with backoff")
		return false
	}
	it, _ := o.itemOf(e.Index)
	delete(o.unsent, e.ClientToken)
	out, err := api.RunInstances(ctx, o.launchInput(sw, candidateItem(sw, it, e.Candidate), e.Attempt))
	// Whatever happened, a second call must first look the token up again.
	delete(o.mayLaunch, e.ClientToken)
	if err == nil && (out == nil || len(out.Instances) == 0) {
		err = errors.New("RunInstances returned no instance")
	}
	if err != nil {
		reason := launchWaitReason(err)
		if limit := propagationLimit(err); limit > 0 && o.waited(&e.Propagating, now) >= limit {
			// Waited on one clock since this reservation's first such refusal: it is not
			// propagation (the profile does not exist, the role may not do this). The
			// token was looked up before every call since: its settling has waited as long.
			reason = ""
			if e.Unsettled == nil {
				e.Unsettled = e.Propagating
			}
		}
		if ctx.Err() == nil && o.refusedForFallback(sw, e, err, now, log) {
			return false
		}
		if ctx.Err() != nil || reason != "" {
			o.backoff(e, now)
			e.WaitReason = clip(reason, maxWaitReason)
			log.Warn().Err(err).Int("tries", e.LaunchTries).Time("not_before", e.NotBefore).Msg("launch refused for now; retrying with the same client token")
			return false
		}
		if apiErrorCode(err) == "IdempotentInstanceTerminated" {
			return o.launchedBefore(ctx, api, sw, e, now)
		}
		// An earlier call with this token may have launched (its answer was lost, or the
		// SDK's own retry of this call met the refusal after a first attempt landed): the
		// refusal is final only once the token is known to have no instance.
		inst, settled := o.settleRefusal(ctx, api, e, err, now)
		if inst != nil {
			o.recordLaunch(ctx, sw, e, aws.ToString(inst.InstanceId), now, log)
			return false
		}
		if !settled {
			return false
		}
		return o.endWithoutInstance(ctx, sw, e, outcomeFailed, "launch refused: "+err.Error()+refusalHint(err), now)
	}
	o.recordLaunch(ctx, sw, e, aws.ToString(out.Instances[0].InstanceId), now, log)
	return false
}

// settleRefusal looks a refused reservation's token up: the instance an earlier call
// made, or settled once EC2 has not shown one for its consistency window (on one clock,
// saved in the entry). Until then the reservation keeps its slot and waits.
func (o *orchestrator) settleRefusal(ctx context.Context, api ec2API, e *aliveInstance, refusal error, now time.Time) (*ec2types.Instance, bool) {
	inst, err := findByToken(ctx, api, e.ClientToken)
	if err == nil && inst != nil {
		return inst, true
	}
	if err == nil && o.waited(&e.Unsettled, now) >= o.consistencyWindow {
		return nil, true
	}
	o.backoff(e, now)
	e.WaitReason = clip("checking for an earlier launch before giving up ("+apiErrorCode(refusal)+")", maxWaitReason)
	return nil, false
}

// recordLaunch records the instance RunInstances made (or an earlier call made) for e.
func (o *orchestrator) recordLaunch(ctx context.Context, sw *sweep, e *aliveInstance, id string, now time.Time, log zerolog.Logger) {
	o.adopt(sw, e, id, now) // this machine's clock: see resolveReservation
	price, source := o.price(ctx, e.Region, e.InstanceType, e.Spot)
	e.PriceHourly, e.PriceSource = price, source
	rec := o.record(sw, e)
	rec.State = string(ec2types.InstanceStateNamePending)
	if err := o.store.putInstance(ctx, rec); err != nil {
		log.Warn().Err(err).Msg("recording a launch (the outcome will be recorded when it ends)")
	}
	o.ensureAlarm(ctx, sw, e)
	log.Info().Str("instance_id", id).Msg("launched")
}

// endWithoutInstance gives a reservation an outcome with no instance of its own to
// watch, and reports whether its slot is free (false: the write failed; next step).
func (o *orchestrator) endWithoutInstance(ctx context.Context, sw *sweep, e *aliveInstance, outcome, why string, now time.Time) bool {
	rec := o.record(sw, e)
	rec.Outcome = outcome
	rec.State = "not-launched"
	if e.InstanceID != "" {
		rec.State = string(ec2types.InstanceStateNameTerminated)
	}
	rec.TerminatedAt = now
	rec.ErrorMessage = why
	log := o.log.With().Str("sweep_id", sw.SweepID).Int("index", e.Index).Int("attempt", e.Attempt).Logger()
	if err := o.store.putInstance(ctx, rec); err != nil {
		o.backoff(e, now)
		log.Warn().Err(err).Msg("recording an item's end; retrying next step")
		return false
	}
	addOutcome(&sw.Counts, outcome)
	log.Warn().Str("outcome", outcome).Msg(why)
	return true
}

// launchedBefore handles IdempotentInstanceTerminated: EC2's answer (since 2025) to a
// client token whose instance ran and has terminated, as when a crash or a resume comes
// long after a launch whose answer was lost. The item ran: its instance, while EC2 still
// shows it, is adopted and finished from its report by the next refresh; one EC2 has
// forgotten ends unknown, never "launch refused".
func (o *orchestrator) launchedBefore(ctx context.Context, api ec2API, sw *sweep, e *aliveInstance, now time.Time) bool {
	if inst, err := findByToken(ctx, api, e.ClientToken); err == nil && inst != nil {
		o.adopt(sw, e, aws.ToString(inst.InstanceId), now)
		return false
	} else if err != nil {
		o.backoff(e, now)
		return false
	}
	// EC2 forgot it before anyone learned its id: the exit record of this attempt names
	// it, and the next step reads its report there.
	if o.exitReporter != nil {
		id, err := o.exitReporter(ctx, sw, e)
		if err != nil {
			o.backoff(e, now)
			return false
		}
		if id != "" {
			o.adopt(sw, e, id, now)
			e.Seen = true // shown once, forgotten since
			return false
		}
	}
	if !o.endWithoutInstance(ctx, sw, e, outcomeUnknown,
		"its instance ran and has terminated, and EC2 no longer shows its report", now) {
		return false
	}
	sw.Launched++ // it did launch (EC2 says its instance terminated), under an id nobody learned
	return true
}

func (o *orchestrator) backoff(e *aliveInstance, now time.Time) {
	e.LaunchTries++
	d := backoffBase << min(e.LaunchTries-1, 10)
	d = min(d, backoffMax)
	d = d/2 + time.Duration(o.jitter()*float64(d/2))
	e.NotBefore = now.Add(d)
}
