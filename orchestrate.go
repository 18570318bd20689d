package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	mathrand "math/rand/v2"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials/stscreds"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatch"
	cwtypes "github.com/aws/aws-sdk-go-v2/service/cloudwatch/types"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	lambdasvc "github.com/aws/aws-sdk-go-v2/service/lambda"
	lambdatypes "github.com/aws/aws-sdk-go-v2/service/lambda/types"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"
	"github.com/peterbourgon/ff/v3/ffcli"
	"github.com/rs/zerolog"
)

// Engine constants. Each is a "why" the SPEC asks for, not a tuning knob.
const (
	// maxAttempts bounds relaunches after spot interruptions (SPEC promise 5).
	maxAttempts = 3
	// ttlGrace is how long past its TTL an instance may live before the orchestrator
	// terminates it itself (the instance arms its own shutdown; this is the backstop).
	ttlGrace = 5 * time.Minute
	// ttlSlack: an instance's self-shutdown is armed with `shutdown +minutes`, which
	// rounds to the minute, so an end within this much of the TTL counts as expired.
	ttlSlack = time.Minute
	// lostAfter: a running instance is always visible to DescribeInstances; one unseen
	// this long after launch has ended and aged out (terminated instances vanish).
	lostAfter = 15 * time.Minute
	// launch backoff for capacity and throttling errors.
	backoffBase = 2 * time.Second
	backoffMax  = 2 * time.Minute
	// idleThreshold is the CPU percentage below which an instance counts as idle.
	idleThreshold = 5.0
	exitCodeTag   = "spawn:exit-code"
)

// clock is the engine's time: real in production, simulated in the tests.
type clock interface {
	Now() time.Time
	Sleep(ctx context.Context, d time.Duration) error
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// ec2API is the part of EC2 the engine uses, per region (and per account).
type ec2API interface {
	RunInstances(ctx context.Context, in *ec2.RunInstancesInput, optFns ...func(*ec2.Options)) (*ec2.RunInstancesOutput, error)
	DescribeInstances(ctx context.Context, in *ec2.DescribeInstancesInput, optFns ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error)
	TerminateInstances(ctx context.Context, in *ec2.TerminateInstancesInput, optFns ...func(*ec2.Options)) (*ec2.TerminateInstancesOutput, error)
}

// alarmAPI creates and deletes the idle-timeout alarms.
type alarmAPI interface {
	PutMetricAlarm(ctx context.Context, in *cloudwatch.PutMetricAlarmInput, optFns ...func(*cloudwatch.Options)) (*cloudwatch.PutMetricAlarmOutput, error)
	DeleteAlarms(ctx context.Context, in *cloudwatch.DeleteAlarmsInput, optFns ...func(*cloudwatch.Options)) (*cloudwatch.DeleteAlarmsOutput, error)
}

// orchestrator runs one sweep's rolling queue for one invocation (a Lambda event, or
// the CLI with --no-detach). It holds no package state: tests build several at once.
type orchestrator struct {
	store       sweepStore
	ec2For      func(ctx context.Context, region string) (ec2API, error)
	alarmsFor   func(ctx context.Context, region string) (alarmAPI, error) // nil: no idle alarms
	invokeAsync func(ctx context.Context, sweepID string) error            // nil: no re-invocation (CLI)
	loadItems   func(ctx context.Context, sw *sweep) ([]item, error)
	launchInput func(sw *sweep, it item, attempt int) *ec2.RunInstancesInput
	price       func(ctx context.Context, region, instanceType string, spot bool) (usdPerHour float64, source string)
	clock       clock
	owner       string
	leaseTTL    time.Duration
	jitter      func() float64 // in [0, 1)
	log         zerolog.Logger

	// Per invocation.
	items    []item
	deadline time.Time // zero: no deadline
	margin   time.Duration
	// launched remembers what RunInstances answered in this invocation (client token →
	// instance id), so a record reloaded after a lost write still learns its ids.
	launched map[string]launchedInstance
	// mayLaunch holds the tokens of reservations known not to exist yet: fresh ones,
	// and older ones that a DescribeInstances by client token just did not find.
	mayLaunch    map[string]bool
	sweepAccount string            // the account of the sweep being run (its EC2 may be elsewhere)
	amis         map[string]string // default AMIs the items were resolved with (sweep.AMIs)
	// terminated lists the instances a cancel terminated (for the CLI's report); killed
	// is the same as a set, so that a retried cancel does not mistake them for instances
	// that ended by themselves.
	terminated []string
	killed     map[string]bool
}

type launchedInstance struct {
	id string
	at time.Time
}

// errLeaseLost: another holder took the sweep's lease; this invocation must stop
// with no further side effects.
var errLeaseLost = errors.New("the sweep's lease was taken over by another orchestrator")

func (o *orchestrator) init() {
	if o.clock == nil {
		o.clock = realClock{}
	}
	if o.leaseTTL == 0 {
		o.leaseTTL = defaultLeaseTTL
	}
	if o.jitter == nil {
		o.jitter = mathrand.Float64
	}
	if o.price == nil {
		o.price = func(context.Context, string, string, bool) (float64, string) { return 0, "" }
	}
	if o.owner == "" {
		o.owner = newOwnerID("orchestrator")
	}
	if o.launched == nil {
		o.launched = map[string]launchedInstance{}
	}
	if o.mayLaunch == nil {
		o.mayLaunch = map[string]bool{}
	}
	if o.killed == nil {
		o.killed = map[string]bool{}
	}
}

// newOwnerID names a lease holder; unique per invocation.
func newOwnerID(kind string) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	host, _ := os.Hostname()
	return fmt.Sprintf("%s-%s-%d-%s", kind, host, os.Getpid(), hex.EncodeToString(b))
}

func durationOr(s string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return d
	}
	return def
}

func pollIntervalOf(sw *sweep) time.Duration {
	d := durationOr(sw.PollInterval, defaultPollInterval)
	if d <= 0 {
		d = defaultPollInterval
	}
	return d
}

// safetyMargin scales with the invocation's budget: 10 % of it within [2 s, 60 s], so a
// short function still makes progress and a 15-minute one keeps a minute in hand.
func safetyMargin(start, deadline time.Time) time.Duration {
	if deadline.IsZero() {
		return 0
	}
	m := deadline.Sub(start) / 10
	return min(max(m, 2*time.Second), 60*time.Second)
}

// timeLeft reports whether d more fits in this invocation before its safety margin.
func (o *orchestrator) fits(d time.Duration) bool {
	if o.deadline.IsZero() {
		return true
	}
	return !o.clock.Now().Add(d + o.margin).After(o.deadline)
}

// run drives one sweep until it is terminal, this invocation's time is up (the lease is
// handed on and the function re-invoked), or ctx ends. The lease is released before it
// returns for any reason, unless another holder took it.
func (o *orchestrator) run(ctx context.Context, sweepID string, deadline time.Time) error {
	o.init()
	o.deadline = deadline
	o.margin = safetyMargin(o.clock.Now(), deadline)
	sw, err := o.acquire(ctx, sweepID)
	if errors.Is(err, errLeaseHeld) {
		o.log.Info().Str("sweep_id", sweepID).Msg("another orchestrator holds the lease; exiting")
		return err
	}
	if err != nil || sw == nil {
		return err
	}
	log := o.log.With().Str("sweep_id", sweepID).Logger()
	o.sweepAccount = sw.AWSAccountID
	if terminalStatus(sw.Status) {
		return o.releaseFinal(ctx, sw)
	}
	// A cancel needs the items too: a reservation that may have launched is resolved by
	// repeating its RunInstances with the same token.
	if o.items == nil {
		for n := 1; ; n++ {
			items, err := o.loadItems(ctx, sw)
			if err == nil {
				o.items = items
				o.amis = maps.Clone(sw.AMIs)
				break
			}
			if permanentParamsError(err) {
				if sw.CancelRequested {
					log.Warn().Err(err).Msg("cancelling without the sweep's parameters")
					break
				}
				return o.failSweep(ctx, sw, fmt.Errorf("loading the sweep's parameters: %w", err))
			}
			log.Warn().Err(err).Msg("loading the sweep's parameters; retrying")
			if o.pauseAfterFailure(ctx, n) != nil {
				_ = o.releaseFinal(ctx, sw)
				return fmt.Errorf("loading the parameters of sweep %s: %w", sweepID, err)
			}
		}
	}
	if !sw.CancelRequested && len(o.items) != sw.TotalParams {
		return o.failSweep(ctx, sw, fmt.Errorf("the params file has %d items but the sweep expects %d", len(o.items), sw.TotalParams))
	}
	poll := pollIntervalOf(sw)
	var stepEst time.Duration
	stale := 0
	for {
		if ctx.Err() != nil {
			return o.pause(ctx, sw)
		}
		t0 := o.clock.Now()
		stepCtx, cancelStep := o.stepContext(ctx)
		err := o.step(stepCtx, sw)
		cancelStep()
		stepEst = max(stepEst, o.clock.Now().Sub(t0))
		if err != nil {
			if ctx.Err() != nil {
				return o.pause(ctx, sw)
			}
			// What is in memory may not have been written: decide again from the record.
			var fresh *sweep
			lerr := o.retry(ctx, func() (e error) { fresh, e = o.reload(ctx, sweepID); return e })
			if errors.Is(lerr, errLeaseLost) {
				log.Warn().Msg("lease taken over by another orchestrator; stopping")
				return nil
			}
			if lerr != nil {
				if ctx.Err() != nil {
					return o.pause(ctx, sw)
				}
				return fmt.Errorf("reading sweep %s after a failed step: %w", sweepID, lerr)
			}
			sw = fresh
			if errors.Is(err, errStaleVersion) {
				// Someone else wrote (a cancel, most often): decide again at once.
				if stale++; stale < 3 {
					continue
				}
			} else {
				log.Warn().Err(err).Msg("step failed; retrying at the next poll")
			}
		} else {
			stale = 0
		}
		if terminalStatus(sw.Status) {
			log.Info().Str("status", sw.Status).Msg("sweep finished")
			return o.releaseFinal(ctx, sw)
		}
		if !o.fits(poll + stepEst) {
			return o.handOff(ctx, sw)
		}
		if err := o.clock.Sleep(ctx, poll); err != nil {
			return o.pause(ctx, sw)
		}
	}
}

// stepContext bounds one step by the invocation's deadline less half the safety margin:
// AWS calls that keep failing slowly (each attempt up to SPAWN_AWS_TIMEOUT, retried) must
// not use up the time the loop needs to save, release the lease and hand on.
func (o *orchestrator) stepContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if o.deadline.IsZero() {
		return context.WithCancel(ctx)
	}
	// A duration from the engine's clock, not a wall-clock deadline: the clock is the
	// engine's time (tests drive it).
	return context.WithTimeout(ctx, max(o.deadline.Sub(o.clock.Now())-o.margin/2, time.Millisecond))
}

// acquire takes the lease, waiting out a holder that stopped renewing (bounded by the
// invocation's deadline: past it the wait continues in a fresh invocation). A transient
// error is retried, not returned.
func (o *orchestrator) acquire(ctx context.Context, id string) (*sweep, error) {
	failures := 0
	for {
		cur, err := o.store.loadSweep(ctx, id)
		var sw *sweep
		if err == nil {
			if terminalStatus(cur.Status) && cur.LeaseOwner == "" {
				o.log.Info().Str("sweep_id", id).Str("status", cur.Status).Msg("sweep already finished")
				return nil, nil
			}
			sw, err = acquireLease(ctx, o.store, id, o.owner, o.clock.Now(), o.leaseTTL, pollIntervalOf(cur))
		}
		var wait *leaseWaitError
		switch {
		case err == nil:
			return sw, nil
		case errors.As(err, &wait):
			d := wait.Until.Sub(o.clock.Now()) + time.Millisecond
			if !o.fits(d) && o.invokeAsync != nil {
				// Wait as long as this invocation can first: handing on at once would chain
				// invocations for nothing until the lease expires.
				if spare := o.deadline.Sub(o.clock.Now()) - o.margin; spare > 0 {
					if err := o.clock.Sleep(ctx, spare); err != nil {
						return nil, err
					}
					continue
				}
				o.log.Info().Str("sweep_id", id).Time("until", wait.Until).Msg("the previous holder stopped renewing and its lease outlives this invocation: handing on")
				return nil, o.invokeAsync(ctx, id)
			}
			o.log.Info().Str("sweep_id", id).Time("until", wait.Until).Msg("waiting for a stale lease to expire")
			if err := o.clock.Sleep(ctx, max(d, time.Millisecond)); err != nil {
				return nil, err
			}
		case errors.Is(err, errLeaseHeld), errors.Is(err, errSweepNotFound), ctx.Err() != nil:
			return nil, err
		default:
			failures++
			if err := o.pauseAfterFailure(ctx, failures); err != nil {
				return nil, fmt.Errorf("taking the lease of sweep %s: %w", id, err)
			}
			o.log.Warn().Err(err).Str("sweep_id", id).Msg("taking the lease; retrying")
		}
	}
}

// pauseAfterFailure sleeps before the n-th retry of a failed call (jittered, growing),
// or returns an error when that would not fit in this invocation.
func (o *orchestrator) pauseAfterFailure(ctx context.Context, n int) error {
	d := min(time.Second<<min(n-1, 5), 30*time.Second)
	d = d/2 + time.Duration(o.jitter()*float64(d/2))
	if !o.fits(d) || n > 50 {
		return errors.New("gave up after repeated failures")
	}
	return o.clock.Sleep(ctx, d)
}

// retry runs f until it succeeds, retrying transient failures while the invocation has time.
func (o *orchestrator) retry(ctx context.Context, f func() error) error {
	for n := 1; ; n++ {
		err := f()
		if err == nil || ctx.Err() != nil || errors.Is(err, errStaleVersion) || errors.Is(err, errSweepNotFound) ||
			errors.Is(err, errLeaseHeld) || errors.Is(err, errLeaseLost) {
			return err
		}
		if perr := o.pauseAfterFailure(ctx, n); perr != nil {
			return err
		}
	}
}

// reload reads the record again after a failed step; errLeaseLost when another holder has it.
func (o *orchestrator) reload(ctx context.Context, id string) (*sweep, error) {
	sw, err := o.store.loadSweep(ctx, id)
	if err != nil {
		return nil, err
	}
	if sw.LeaseOwner != o.owner {
		return nil, errLeaseLost
	}
	return sw, nil
}

// save is a fenced write with the lease renewed and the counts brought up to date.
func (o *orchestrator) save(ctx context.Context, sw *sweep) error {
	now := o.clock.Now()
	for k, v := range o.amis {
		if _, ok := sw.AMIs[k]; !ok {
			if sw.AMIs == nil {
				sw.AMIs = map[string]string{}
			}
			sw.AMIs[k] = v // the items in memory were resolved with these
		}
	}
	if sw.LeaseOwner == o.owner {
		renewLease(sw, o.owner, now, o.leaseTTL)
	}
	fixCounts(sw)
	return o.store.saveSweep(ctx, sw)
}

// fixCounts derives running and pending from the record, so they can never drift.
func fixCounts(sw *sweep) {
	c := &sw.Counts
	c.Running = len(sw.Alive)
	done := c.Succeeded + c.Failed + c.Expired + c.Cancelled + c.Unknown
	c.Pending = max(sw.TotalParams-done-c.Running, 0)
	sw.Failed = c.Failed
}

// release hands the lease back, retrying transient failures. A failed write leaves the
// lease fields as they were, so the retry writes them again (or, if the write did land,
// finds the record changed and the lease already free).
func (o *orchestrator) release(ctx context.Context, sw *sweep) error {
	return o.retry(ctx, func() error {
		owner, exp, ren := sw.LeaseOwner, sw.LeaseExpiresAt, sw.LeaseRenewedAt
		err := releaseLease(ctx, o.store, sw, o.owner)
		if err != nil && !errors.Is(err, errStaleVersion) && sw.LeaseOwner == "" && owner == o.owner {
			sw.LeaseOwner, sw.LeaseExpiresAt, sw.LeaseRenewedAt = owner, exp, ren
		}
		return err
	})
}

// releaseFinal hands back the lease of a sweep that needs nothing more.
func (o *orchestrator) releaseFinal(ctx context.Context, sw *sweep) error {
	if sw.LeaseOwner != o.owner {
		return nil
	}
	return o.release(ctx, sw)
}

// pause saves what this invocation knows and releases the lease after ctx ended (Ctrl-C
// in the CLI); it uses a fresh, short context since ctx is already done.
func (o *orchestrator) pause(ctx context.Context, sw *sweep) error {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
	defer cancel()
	o.adoptLaunched(sw)
	if sw.LeaseOwner == o.owner {
		sw.LeaseOwner, sw.LeaseExpiresAt, sw.LeaseRenewedAt = "", time.Time{}, time.Time{}
		if err := o.save(cctx, sw); err != nil {
			if fresh, lerr := o.reload(cctx, sw.SweepID); lerr == nil {
				o.adoptLaunched(fresh)
				_ = o.release(cctx, fresh)
			}
		}
	}
	return ctx.Err()
}

// handOff saves, releases the lease and re-invokes the function: the next invocation
// takes over with a full time budget. A terminal sweep is never re-invoked.
func (o *orchestrator) handOff(ctx context.Context, sw *sweep) error {
	if err := o.release(ctx, sw); err != nil {
		return fmt.Errorf("handing on the lease of sweep %s: %w", sw.SweepID, err)
	}
	if terminalStatus(sw.Status) || o.invokeAsync == nil {
		return nil
	}
	var err error
	for i := range 3 {
		if err = o.invokeAsync(ctx, sw.SweepID); err == nil {
			o.log.Info().Str("sweep_id", sw.SweepID).Msg("sweep handed on to a new invocation")
			return nil
		}
		if o.clock.Sleep(ctx, time.Duration(i+1)*200*time.Millisecond) != nil {
			break
		}
	}
	return fmt.Errorf("re-invoking the orchestrator for sweep %s: %w (run 'spawn resume --sweep-id %s')", sw.SweepID, err, sw.SweepID)
}

// permanentParamsError tells a params file that is gone or unusable (the sweep fails)
// from a passing S3 fault (retried).
func permanentParamsError(err error) bool {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "NoSuchKey", "NoSuchBucket", "NotFound", "AccessDenied", "AccessDeniedException", "ParameterNotFound":
			return true
		}
		return false
	}
	var ne net.Error
	return !errors.As(err, &ne) && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled)
}

// failSweep marks a sweep that cannot run at all (its parameters are gone or corrupt).
func (o *orchestrator) failSweep(ctx context.Context, sw *sweep, cause error) error {
	o.log.Error().Str("sweep_id", sw.SweepID).Err(cause).Msg("sweep failed")
	if len(sw.Alive) > 0 {
		// Instances are running: leave the record to a retry (or a cancel) rather
		// than orphan them.
		_ = o.release(ctx, sw)
		return cause
	}
	sw.Status = statusFailed
	sw.ErrorMessage = cause.Error()
	sw.CompletedAt = o.clock.Now().UTC().Format(time.RFC3339)
	if err := o.save(ctx, sw); err != nil {
		_ = o.release(ctx, sw)
		return err
	}
	return o.release(ctx, sw)
}

// step is one poll: observe every alive instance, give ended ones their outcome, reserve
// free slots, save (fenced), then launch what was reserved and save again.
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
	o.observe(ctx, sw, now)
	o.reserve(sw, now)
	if o.finishIfDone(sw, now) {
		if err := o.save(ctx, sw); err != nil {
			return err
		}
		return o.release(ctx, sw)
	}
	if err := o.save(ctx, sw); err != nil {
		return err
	}
	return o.launchReserved(ctx, sw)
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

func (o *orchestrator) setLaunched(sw *sweep, e *aliveInstance, id string, at time.Time) {
	e.InstanceID = id
	e.LaunchedAt = at
	e.NotBefore = time.Time{}
	if ttl := o.ttlOf(sw, e.Index); ttl > 0 {
		e.Deadline = at.Add(ttl)
	}
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

// observe refreshes every alive entry: reservations are resolved by client token, and
// recorded instances by id. An AWS error never counts as "ended": the entry stays alive
// and is looked at again next step.
func (o *orchestrator) observe(ctx context.Context, sw *sweep, now time.Time) {
	o.adoptLaunched(sw)
	byRegion := map[string][]int{}
	for i, e := range sw.Alive {
		byRegion[e.Region] = append(byRegion[e.Region], i)
	}
	finished := map[int]bool{}
	for _, region := range sortedKeys(byRegion) {
		idxs := byRegion[region]
		log := o.log.With().Str("sweep_id", sw.SweepID).Str("region", region).Logger()
		api, err := o.ec2For(ctx, region)
		if err != nil {
			log.Warn().Err(err).Msg("no EC2 client for the region; retrying next step")
			continue
		}
		for _, i := range idxs {
			e := &sw.Alive[i]
			if e.InstanceID != "" || e.NotBefore.After(now) || o.mayLaunch[e.ClientToken] {
				continue
			}
			inst, err := findByToken(ctx, api, e.ClientToken)
			if err != nil {
				log.Warn().Err(err).Int("index", e.Index).Msg("looking up a reserved launch; retrying next step")
				continue
			}
			if inst == nil {
				o.mayLaunch[e.ClientToken] = true
				continue
			}
			at := aws.ToTime(inst.LaunchTime)
			if at.IsZero() {
				at = now
			}
			o.launched[e.ClientToken] = launchedInstance{id: aws.ToString(inst.InstanceId), at: at}
			o.setLaunched(sw, e, aws.ToString(inst.InstanceId), at)
		}
		var ids []string
		for _, i := range idxs {
			if id := sw.Alive[i].InstanceID; id != "" {
				ids = append(ids, id)
			}
		}
		if len(ids) == 0 {
			continue
		}
		seen, err := describeByIDs(ctx, api, ids)
		if err != nil {
			log.Warn().Err(err).Msg("describing instances; they stay alive until the next step")
			continue
		}
		for _, i := range idxs {
			e := &sw.Alive[i]
			if e.InstanceID == "" {
				continue
			}
			inst, ok := seen[e.InstanceID]
			if !ok {
				// Not visible yet (DescribeInstances is eventually consistent), or long gone.
				if now.Sub(e.LaunchedAt) > lostAfter {
					if o.finish(ctx, sw, e, nil, now) {
						finished[i] = true
					}
				}
				continue
			}
			switch inst.State.Name {
			case ec2types.InstanceStateNameShuttingDown, ec2types.InstanceStateNameTerminated,
				ec2types.InstanceStateNameStopping, ec2types.InstanceStateNameStopped:
				if _, reported := exitCodeOf(inst.Tags); sw.CancelRequested && !reported {
					continue // most likely the cancel's own terminate: recorded as cancelled
				}
				if o.finish(ctx, sw, e, &inst, now) {
					finished[i] = true
				}
			default:
				if !e.Deadline.IsZero() && now.After(e.Deadline.Add(ttlGrace)) {
					log.Info().Int("index", e.Index).Str("instance_id", e.InstanceID).Msg("past its TTL: terminating")
					if err := terminate(ctx, api, []string{e.InstanceID}); err != nil {
						log.Warn().Err(err).Msg("terminating an expired instance; retrying next step")
					}
				}
				o.ensureAlarm(ctx, sw, e)
			}
		}
	}
	if len(finished) > 0 {
		kept := sw.Alive[:0]
		for i, e := range sw.Alive {
			if !finished[i] {
				kept = append(kept, e)
			}
		}
		sw.Alive = kept
	}
}

// finish gives an ended instance its outcome (or queues a spot relaunch), writes its
// instance item, and updates counts and cost. It reports false when the item write
// failed: the entry then stays alive and is finished next step.
func (o *orchestrator) finish(ctx context.Context, sw *sweep, e *aliveInstance, inst *ec2types.Instance, now time.Time) bool {
	rec := o.record(sw, e)
	rec.TerminatedAt = now
	rec.State = string(ec2types.InstanceStateNameTerminated)
	requeue := false
	if inst == nil {
		rec.Outcome = outcomeUnknown
		rec.ErrorMessage = "the instance is no longer visible to EC2"
	} else {
		rec.State = string(inst.State.Name)
		if t, ok := transitionTime(aws.ToString(inst.StateTransitionReason)); ok && t.Before(now) {
			rec.TerminatedAt = t
		}
		code, hasCode := exitCodeOf(inst.Tags)
		switch {
		case hasCode:
			rec.ExitCode = &code
			rec.Outcome = outcomeSucceeded
			if code != 0 {
				rec.Outcome = outcomeFailed
				rec.ErrorMessage = fmt.Sprintf("the command exited with code %d", code)
			}
		case spotInterrupted(inst):
			if e.Attempt < maxAttempts {
				requeue = true
				rec.ErrorMessage = fmt.Sprintf("spot interruption: relaunching as attempt %d", e.Attempt+1)
			} else {
				rec.Outcome = outcomeUnknown
				rec.ErrorMessage = fmt.Sprintf("spot interruption on each of %d attempts", maxAttempts)
			}
		case !e.Deadline.IsZero() && !rec.TerminatedAt.Before(e.Deadline.Add(-ttlSlack)):
			rec.Outcome = outcomeExpired
		default:
			rec.Outcome = outcomeUnknown
			rec.ErrorMessage = "the instance ended without reporting an exit code"
			if r := inst.StateReason; r != nil && aws.ToString(r.Message) != "" {
				rec.ErrorMessage += ": " + aws.ToString(r.Message)
			}
		}
		if inst.State.Name == ec2types.InstanceStateNameStopped || inst.State.Name == ec2types.InstanceStateNameStopping {
			// A stopped instance still costs its volumes: finish it off.
			if api, err := o.ec2For(ctx, e.Region); err == nil {
				_ = terminate(ctx, api, []string{e.InstanceID})
			}
		}
	}
	if !e.LaunchedAt.IsZero() && rec.TerminatedAt.After(e.LaunchedAt) {
		rec.CostUSD = rec.TerminatedAt.Sub(e.LaunchedAt).Hours() * e.PriceHourly
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
		Attempt:      e.Attempt,
		LaunchedAt:   e.LaunchedAt,
		PriceHourly:  e.PriceHourly,
		PriceSource:  e.PriceSource,
	}
}

func exitCodeOf(tags []ec2types.Tag) (int, bool) {
	for _, t := range tags {
		if aws.ToString(t.Key) == exitCodeTag {
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
	for len(sw.Alive) < sw.MaxConcurrent {
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
		in := o.launchInput(sw, it, attempt)
		token := aws.ToString(in.ClientToken)
		sw.Alive = append(sw.Alive, aliveInstance{
			Index:        idx,
			Attempt:      attempt,
			Region:       regionOf(sw, it),
			InstanceType: string(in.InstanceType),
			ClientToken:  token,
			Spot:         in.InstanceMarketOptions != nil,
			ReservedAt:   now,
		})
		o.mayLaunch[token] = true
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
		if o.clock.Now().After(sw.LeaseRenewedAt.Add(o.leaseTTL / 3)) {
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
	if o.finishIfDone(sw, o.clock.Now()) {
		if err := o.save(ctx, sw); err != nil {
			return err
		}
		return o.release(ctx, sw)
	}
	return o.save(ctx, sw)
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
	out, err := api.RunInstances(ctx, o.launchInput(sw, it, e.Attempt))
	// Whatever happened, a second call must first look the token up again.
	delete(o.mayLaunch, e.ClientToken)
	if err == nil && (out == nil || len(out.Instances) == 0) {
		err = errors.New("RunInstances returned no instance")
	}
	if err != nil {
		if ctx.Err() != nil || retryableLaunchError(err) {
			o.backoff(e, now)
			log.Warn().Err(err).Int("tries", e.LaunchTries).Time("not_before", e.NotBefore).Msg("launch refused for now; retrying with the same client token")
			return false
		}
		rec := o.record(sw, e)
		rec.Outcome = outcomeFailed
		rec.State = "not-launched"
		rec.TerminatedAt = now
		rec.ErrorMessage = "launch refused: " + err.Error()
		if perr := o.store.putInstance(ctx, rec); perr != nil {
			o.backoff(e, now)
			log.Warn().Err(perr).Msg("recording a refused launch; retrying next step")
			return false
		}
		addOutcome(&sw.Counts, outcomeFailed)
		log.Warn().Err(err).Msg("launch refused for bad input: item failed")
		return true
	}
	inst := out.Instances[0]
	id := aws.ToString(inst.InstanceId)
	at := aws.ToTime(inst.LaunchTime)
	if at.IsZero() {
		at = now
	}
	o.launched[e.ClientToken] = launchedInstance{id: id, at: at}
	o.setLaunched(sw, e, id, at)
	sw.Launched++
	price, source := o.price(ctx, e.Region, e.InstanceType, e.Spot)
	e.PriceHourly, e.PriceSource = price, source
	rec := o.record(sw, e)
	rec.State = string(ec2types.InstanceStateNamePending)
	if err := o.store.putInstance(ctx, rec); err != nil {
		log.Warn().Err(err).Msg("recording a launch (the outcome will be recorded when it ends)")
	}
	o.ensureAlarm(ctx, sw, e)
	log.Info().Str("instance_id", id).Msg("launched")
	return false
}

func (o *orchestrator) backoff(e *aliveInstance, now time.Time) {
	e.LaunchTries++
	d := backoffBase << min(e.LaunchTries-1, 10)
	d = min(d, backoffMax)
	d = d/2 + time.Duration(o.jitter()*float64(d/2))
	e.NotBefore = now.Add(d)
}

// retryableLaunchError: capacity, throttling, service-side and network errors. The same
// ClientToken is used again, so a call that did launch is never doubled.
func retryableLaunchError(err error) bool {
	var ae smithy.APIError
	if !errors.As(err, &ae) {
		return true // network errors and timeouts
	}
	code := ae.ErrorCode()
	switch {
	case strings.HasPrefix(code, "Insufficient") && strings.HasSuffix(code, "Capacity"),
		strings.HasPrefix(code, "Throttl"),
		code == "RequestLimitExceeded", code == "Unavailable", code == "ServiceUnavailable",
		code == "InternalError", code == "InternalFailure", code == "RequestTimeout",
		code == "RequestExpired", code == "IncorrectState", code == "PendingVerification":
		return true
	}
	var re interface{ HTTPStatusCode() int }
	if errors.As(err, &re) && re.HTTPStatusCode() >= 500 {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne)
}

func alarmName(sweepID string, index int) string {
	return fmt.Sprintf("spawn-%s-%d", sweepID, index)
}

// ensureAlarm creates the idle-timeout alarm of a running instance once; a failure is
// retried next step.
func (o *orchestrator) ensureAlarm(ctx context.Context, sw *sweep, e *aliveInstance) {
	idle := o.idleTimeoutOf(sw, e.Index)
	if o.alarmsFor == nil || idle <= 0 || e.IdleAlarm || e.InstanceID == "" {
		return
	}
	api, err := o.alarmsFor(ctx, e.Region)
	if err != nil {
		return
	}
	period := int32(60)
	periods := int32(max((idle+time.Minute-1)/time.Minute, 1))
	_, err = api.PutMetricAlarm(ctx, &cloudwatch.PutMetricAlarmInput{
		AlarmName:          aws.String(alarmName(sw.SweepID, e.Index)),
		AlarmDescription:   aws.String(fmt.Sprintf("spawn: terminate %s after %s below %.0f%% CPU", e.InstanceID, idle, idleThreshold)),
		Namespace:          aws.String("AWS/EC2"),
		MetricName:         aws.String("CPUUtilization"),
		Dimensions:         []cwtypes.Dimension{{Name: aws.String("InstanceId"), Value: aws.String(e.InstanceID)}},
		Statistic:          cwtypes.StatisticAverage,
		Period:             aws.Int32(period),
		EvaluationPeriods:  aws.Int32(periods),
		Threshold:          aws.Float64(idleThreshold),
		ComparisonOperator: cwtypes.ComparisonOperatorLessThanThreshold,
		AlarmActions:       []string{fmt.Sprintf("arn:aws:automate:%s:ec2:terminate", e.Region)},
	})
	if err != nil {
		o.log.Warn().Err(err).Str("sweep_id", sw.SweepID).Int("index", e.Index).Msg("creating the idle alarm; retrying next step")
		return
	}
	e.IdleAlarm = true
}

func (o *orchestrator) deleteAlarm(ctx context.Context, sw *sweep, e *aliveInstance) {
	if o.alarmsFor == nil || !e.IdleAlarm {
		return
	}
	if api, err := o.alarmsFor(ctx, e.Region); err == nil {
		_, err = api.DeleteAlarms(ctx, &cloudwatch.DeleteAlarmsInput{AlarmNames: []string{alarmName(sw.SweepID, e.Index)}})
		if err != nil {
			o.log.Warn().Err(err).Str("sweep_id", sw.SweepID).Int("index", e.Index).Msg("deleting the idle alarm")
		}
	}
}

// cancelSweep is the cancel, with the lease held: give ended instances their outcome,
// terminate every other instance of the sweep (recorded, reserved, or found by its
// tags), count what is left as cancelled, and set CANCELLED.
func (o *orchestrator) cancelSweep(ctx context.Context, sw *sweep) error {
	if terminalStatus(sw.Status) {
		// It ended between the cancel's request and its lease: it stays as it ended.
		return o.releaseFinal(ctx, sw)
	}
	now := o.clock.Now()
	o.observe(ctx, sw, now)
	// A reservation not found by its token may still have launched (DescribeInstances is
	// eventually consistent): RunInstances with the same token answers with that instance
	// if it exists, so it can be terminated. Without the items the tag search must do.
	for i := range sw.Alive {
		e := &sw.Alive[i]
		if e.InstanceID != "" || !o.mayLaunch[e.ClientToken] || o.launchInput == nil || len(o.items) == 0 {
			continue
		}
		if api, err := o.ec2For(ctx, e.Region); err == nil {
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
	}
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
	for i := range sw.Alive {
		e := &sw.Alive[i]
		rec := o.record(sw, e)
		rec.Outcome = outcomeCancelled
		rec.State = string(ec2types.InstanceStateNameShuttingDown)
		if e.InstanceID == "" {
			rec.State = "not-launched"
		}
		rec.TerminatedAt = now
		if !e.LaunchedAt.IsZero() {
			rec.CostUSD = now.Sub(e.LaunchedAt).Hours() * e.PriceHourly
		}
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
	c := &sw.Counts
	done := c.Succeeded + c.Failed + c.Expired + c.Cancelled + c.Unknown
	c.Cancelled += max(sw.TotalParams-done, 0)
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
	poll := pollIntervalOf(sw)
	// waitHolder gives a live holder the time to see the cancel and end the sweep itself
	// (it reads cancel_requested at its next step), bounded by a lease's life.
	waitHolder := func() error {
		limit := o.clock.Now().Add(o.leaseTTL + 2*poll)
		for {
			now := o.clock.Now()
			if terminalStatus(sw.Status) || sw.LeaseOwner == "" || !sw.LeaseExpiresAt.After(now) || now.After(limit) {
				return nil
			}
			if err := o.clock.Sleep(ctx, min(poll, time.Second)); err != nil {
				return err
			}
			if fresh, err := o.store.loadSweep(ctx, id); err == nil {
				sw = fresh
			}
		}
	}
	if err := waitHolder(); err != nil {
		return nil, false, err
	}
	if terminalStatus(sw.Status) {
		return sw, false, nil
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
			if err := waitHolder(); err != nil {
				return nil, false, err
			}
			if terminalStatus(sw.Status) {
				return sw, false, nil
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
		for m := 1; ; m++ {
			err = o.cancelSweep(ctx, sw)
			if err == nil {
				return sw, false, nil
			}
			fresh, lerr := o.reload(ctx, id)
			if errors.Is(lerr, errLeaseLost) {
				break // someone else holds it now: acquire again
			}
			if lerr == nil {
				sw = fresh
			}
			if errors.Is(err, errStaleVersion) {
				continue
			}
			o.log.Warn().Err(err).Str("sweep_id", id).Msg("cancelling; retrying")
			if perr := o.pauseAfterFailure(ctx, m); perr != nil {
				_ = o.releaseFinal(ctx, sw)
				return nil, false, fmt.Errorf("cancelling sweep %s: %w (run 'spawn cancel' again)", id, err)
			}
		}
		if n > 5 {
			return nil, false, fmt.Errorf("cancelling sweep %s: the lease kept changing hands (run 'spawn cancel' again)", id)
		}
	}
}

func findByToken(ctx context.Context, api ec2API, token string) (*ec2types.Instance, error) {
	insts, err := describeInstances(ctx, api, []ec2types.Filter{{Name: aws.String("client-token"), Values: []string{token}}})
	if err != nil {
		return nil, err
	}
	// Some backends ignore filters: only the token itself decides.
	for i := range insts {
		if aws.ToString(insts[i].ClientToken) == token {
			return &insts[i], nil
		}
	}
	return nil, nil
}

func describeByIDs(ctx context.Context, api ec2API, ids []string) (map[string]ec2types.Instance, error) {
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	// A filter (not InstanceIds) so that an id not yet visible is simply absent rather
	// than failing the whole call with InvalidInstanceID.NotFound.
	out := map[string]ec2types.Instance{}
	for start := 0; start < len(ids); start += 100 {
		chunk := ids[start:min(start+100, len(ids))]
		insts, err := describeInstances(ctx, api, []ec2types.Filter{{Name: aws.String("instance-id"), Values: chunk}})
		if err != nil {
			return nil, err
		}
		for _, inst := range insts {
			if id := aws.ToString(inst.InstanceId); want[id] {
				out[id] = inst
			}
		}
	}
	if err := fillMissingTags(ctx, api, out); err != nil {
		// An ended instance whose report could not be read is left for the next step, as
		// if not yet visible: a failed call must not decide its outcome. A running one
		// needs no tags to stay running.
		for id, inst := range out {
			if len(inst.Tags) == 0 && inst.State != nil && endedState(inst.State.Name) {
				delete(out, id)
			}
		}
	}
	return out, nil
}

// endedState: the instance no longer runs its workload.
func endedState(s ec2types.InstanceStateName) bool {
	switch s {
	case ec2types.InstanceStateNameShuttingDown, ec2types.InstanceStateNameTerminated,
		ec2types.InstanceStateNameStopping, ec2types.InstanceStateNameStopped:
		return true
	}
	return false
}

// tagDescriber is EC2's DescribeTags, which the SDK client has and the engine's fakes
// need not.
type tagDescriber interface {
	DescribeTags(ctx context.Context, in *ec2.DescribeTagsInput, optFns ...func(*ec2.Options)) (*ec2.DescribeTagsOutput, error)
}

// fillMissingTags reads the tags of instances that came back with none. AWS always
// returns an instance's tags (ours are set at launch, so never none); some emulators
// keep tags but leave them out of DescribeInstances, and without this every outcome
// there would be "unknown". One call covers every such instance; an error leaves them
// as they were and is returned.
func fillMissingTags(ctx context.Context, api ec2API, insts map[string]ec2types.Instance) error {
	td, ok := api.(tagDescriber)
	if !ok {
		return nil
	}
	var ids []string
	for id, inst := range insts {
		if len(inst.Tags) == 0 {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	sort.Strings(ids)
	out, err := td.DescribeTags(ctx, &ec2.DescribeTagsInput{Filters: []ec2types.Filter{
		{Name: aws.String("resource-id"), Values: ids},
		{Name: aws.String("resource-type"), Values: []string{"instance"}},
	}})
	if err != nil {
		return err
	}
	for _, t := range out.Tags {
		id := aws.ToString(t.ResourceId)
		inst, ok := insts[id]
		if !ok {
			continue
		}
		inst.Tags = append(inst.Tags, ec2types.Tag{Key: t.Key, Value: t.Value})
		insts[id] = inst
	}
	return nil
}

// findSweepInstances lists the sweep's instances that are not yet shutting down, by tag.
// The returned tags are checked too: an ignored filter must never widen a terminate.
func findSweepInstances(ctx context.Context, api ec2API, sweepID string) ([]string, error) {
	insts, err := describeInstances(ctx, api, []ec2types.Filter{
		{Name: aws.String("tag:spawn:sweep-id"), Values: []string{sweepID}},
		{Name: aws.String("tag:spawn:managed"), Values: []string{"true"}},
		{Name: aws.String("instance-state-name"), Values: []string{"pending", "running", "stopping", "stopped"}},
	})
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, inst := range insts {
		tags := map[string]string{}
		for _, t := range inst.Tags {
			tags[aws.ToString(t.Key)] = aws.ToString(t.Value)
		}
		if tags["spawn:sweep-id"] != sweepID || tags["spawn:managed"] != "true" {
			continue
		}
		switch inst.State.Name {
		case ec2types.InstanceStateNameShuttingDown, ec2types.InstanceStateNameTerminated:
			continue
		}
		ids = append(ids, aws.ToString(inst.InstanceId))
	}
	return ids, nil
}

func describeInstances(ctx context.Context, api ec2API, filters []ec2types.Filter) ([]ec2types.Instance, error) {
	in := &ec2.DescribeInstancesInput{Filters: filters}
	var out []ec2types.Instance
	for range 1000 {
		page, err := api.DescribeInstances(ctx, in)
		if err != nil {
			return nil, err
		}
		for _, r := range page.Reservations {
			out = append(out, r.Instances...)
		}
		if aws.ToString(page.NextToken) == "" || aws.ToString(page.NextToken) == aws.ToString(in.NextToken) {
			break
		}
		in.NextToken = page.NextToken
	}
	return out, nil
}

func terminate(ctx context.Context, api ec2API, ids []string) error {
	for start := 0; start < len(ids); start += 500 {
		_, err := api.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: ids[start:min(start+500, len(ids))]})
		if err != nil {
			return err
		}
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// waitSweep blocks until the sweep reaches a terminal status (launch --wait, status --wait).
func waitSweep(ctx context.Context, st sweepStore, id string, every time.Duration, c clock) (*sweep, error) {
	for {
		sw, err := st.loadSweep(ctx, id)
		if err == nil && terminalStatus(sw.Status) {
			return sw, nil
		}
		if errors.Is(err, errSweepNotFound) {
			return nil, fmt.Errorf("sweep %s: %w", id, err)
		}
		if err := c.Sleep(ctx, every); err != nil {
			return nil, err
		}
	}
}

// orchestratorEvent is the function's input (SPEC.md).
type orchestratorEvent struct {
	SweepID       string `json:"sweep_id"`
	ForceDownload bool   `json:"force_download"`
	HealthCheck   bool   `json:"health_check,omitempty"`
}

// healthAnswer is the function's answer to {"health_check": true}.
type healthAnswer struct {
	OK      bool       `json:"ok"`
	Version versionDoc `json:"version"`
	Account string     `json:"account,omitempty"`
	ARN     string     `json:"arn,omitempty"`
}

// awsClients hands out EC2 and CloudWatch clients per (account, region), cached. A sweep
// in another account is reached through its SpawnSweepCrossAccountRole, with credentials
// the SDK refreshes before they expire.
type awsClients struct {
	base       aws.Config
	ownAccount string
	partition  string

	mu    sync.Mutex
	creds map[string]aws.CredentialsProvider
	ec2   map[string]ec2API
	cw    map[string]alarmAPI
}

func newAWSClients(base aws.Config, ownAccount, partition string) *awsClients {
	return &awsClients{base: base, ownAccount: ownAccount, partition: partition, creds: map[string]aws.CredentialsProvider{},
		ec2: map[string]ec2API{}, cw: map[string]alarmAPI{}}
}

// configFor must be called with c.mu held.
func (c *awsClients) configFor(account, region string) aws.Config {
	cfg := c.base.Copy()
	if region != "" {
		cfg.Region = region
	}
	if account != "" && c.ownAccount != "" && account != c.ownAccount {
		p, ok := c.creds[account]
		if !ok {
			own := c.ownAccount
			p = aws.NewCredentialsCache(stscreds.NewAssumeRoleProvider(sts.NewFromConfig(c.base), crossAccountRoleARN(c.partition, account),
				func(o *stscreds.AssumeRoleOptions) {
					o.ExternalID = aws.String(crossAccountExternalID(own))
					o.RoleSessionName = "spawn-orchestrator"
				}), func(o *aws.CredentialsCacheOptions) { o.ExpiryWindow = 5 * time.Minute })
			c.creds[account] = p
		}
		cfg.Credentials = p
	}
	return cfg
}

func (c *awsClients) ec2For(account, region string) ec2API {
	return cachedClient(c, c.ec2, account, region, func(cfg aws.Config) ec2API { return ec2.NewFromConfig(cfg) })
}

func (c *awsClients) alarmsFor(account, region string) alarmAPI {
	return cachedClient(c, c.cw, account, region, func(cfg aws.Config) alarmAPI { return cloudwatch.NewFromConfig(cfg) })
}

// cachedClient returns the client of (account, region) from cache, making it once.
func cachedClient[T any](c *awsClients, cache map[string]T, account, region string, make func(aws.Config) T) T {
	c.mu.Lock()
	defer c.mu.Unlock()
	key := account + "/" + region
	if cl, ok := cache[key]; ok {
		return cl
	}
	cl := make(c.configFor(account, region))
	cache[key] = cl
	return cl
}

// lambdaInvoker is the part of the Lambda client that re-invokes the orchestrator.
type lambdaInvoker interface {
	Invoke(ctx context.Context, in *lambdasvc.InvokeInput, optFns ...func(*lambdasvc.Options)) (*lambdasvc.InvokeOutput, error)
}

// invokeEvent starts the orchestrator function asynchronously for a sweep.
func invokeEvent(ctx context.Context, lc lambdaInvoker, function, sweepID string) error {
	payload, _ := json.Marshal(orchestratorEvent{SweepID: sweepID})
	_, err := lc.Invoke(ctx, &lambdasvc.InvokeInput{
		FunctionName:   aws.String(function),
		InvocationType: lambdatypes.InvocationTypeEvent,
		Payload:        payload,
	})
	return err
}

// engineDeps is what an orchestrator needs from AWS, for the function and the CLI alike.
type engineDeps struct {
	cfg      aws.Config
	account  string // the caller's own account
	store    sweepStore
	params   *paramsStore
	clients  *awsClients
	lambda   lambdaInvoker
	function string
	pricer   *pricer // one per process: its cache outlives an invocation in a warm Lambda
	log      zerolog.Logger
}

func newEngineDeps(cfg aws.Config, account, callerARN, table, instancesTable, bucket, function string, log zerolog.Logger) *engineDeps {
	return &engineDeps{
		cfg:      cfg,
		account:  account,
		store:    newDynamoStore(dynamodb.NewFromConfig(cfg), table, instancesTable),
		params:   newParamsStore(newS3Client(cfg), bucket, ""),
		clients:  newAWSClients(cfg, account, partitionOf(callerARN)),
		lambda:   lambdasvc.NewFromConfig(cfg),
		function: function,
		pricer:   newPricer(cfg),
		log:      log,
	}
}

// newOrchestrator wires an engine to real clients. detached: re-invoke the function at
// the deadline (Lambda); otherwise the caller runs with no deadline (the CLI).
func (d *engineDeps) newOrchestrator(owner string, forceDownload, detached bool) *orchestrator {
	o := &orchestrator{
		store:       d.store,
		launchInput: runInstancesInput,
		price:       d.pricer.priceFor,
		clock:       realClock{},
		owner:       owner,
		log:         d.log,
	}
	// The sweep's account is known once its record is read; the clients follow it.
	account := func() string { return o.sweepAccount }
	o.ec2For = func(_ context.Context, region string) (ec2API, error) {
		return d.clients.ec2For(account(), region), nil
	}
	o.alarmsFor = func(_ context.Context, region string) (alarmAPI, error) {
		return d.clients.alarmsFor(account(), region), nil
	}
	o.loadItems = func(ctx context.Context, sw *sweep) ([]item, error) {
		raw, err := d.params.downloadParams(ctx, sw.S3ParamsKey, sw.ParamsChecksum, forceDownload)
		if err != nil {
			return nil, err
		}
		items, err := parseParamFile(sw.S3ParamsKey, raw)
		if err != nil {
			return nil, err
		}
		return items, d.resolveAMIs(ctx, sw, items)
	}
	if detached {
		o.invokeAsync = func(ctx context.Context, id string) error { return invokeEvent(ctx, d.lambda, d.function, id) }
	}
	return o
}

// resolveAMIs fills the AMI of items that name none: the latest Amazon Linux 2023 for
// the type's architecture in the item's region, looked up once per region and type.
func (d *engineDeps) resolveAMIs(ctx context.Context, sw *sweep, items []item) error {
	found := map[string]string{}
	for i := range items {
		it := &items[i]
		if it.AMI != "" {
			continue
		}
		region := regionOf(sw, *it)
		key := region + "/" + it.InstanceType
		if ami, ok := found[key]; ok {
			it.AMI = ami
			continue
		}
		if ami, ok := sw.AMIs[key]; ok {
			found[key], it.AMI = ami, ami
			continue
		}
		cfg := d.cfg.Copy()
		cfg.Region = region
		ami, err := resolveAMI(ctx, ssm.NewFromConfig(cfg), it.InstanceType)
		if err != nil {
			return err
		}
		found[key], it.AMI = ami, ami
		if sw.AMIs == nil {
			sw.AMIs = map[string]string{}
		}
		sw.AMIs[key] = ami // saved with the next fenced write
	}
	return nil
}

// runLambda serves orchestrator events on the Lambda runtime API until the runtime stops it.
func runLambda() {
	log := newLogger(os.Stderr, zerolog.InfoLevel, true)
	h := &lambdaHandler{log: log}
	lambda.Start(h.handle)
}

// lambdaHandler is the function: built once per cold start, on the first event.
type lambdaHandler struct {
	log  zerolog.Logger
	once sync.Once
	deps *engineDeps
	arn  string
	err  error
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func (h *lambdaHandler) setup(ctx context.Context) {
	cfg, err := loadAWSConfig(ctx, "", "", "", h.log)
	if err != nil {
		h.err = err
		return
	}
	var account string
	if id, err := sts.NewFromConfig(cfg).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{}); err == nil {
		account, h.arn = aws.ToString(id.Account), aws.ToString(id.Arn)
	} else {
		h.log.Warn().Err(err).Msg("no caller identity from STS: cross-account sweeps are not told apart")
	}
	bucket := envOr("SPAWN_BUCKET", defaultBucketName(account, cfg.Region))
	h.deps = newEngineDeps(cfg, account, h.arn, envOr("SPAWN_TABLE", defaultTable), envOr("SPAWN_INSTANCES_TABLE", defaultInstancesTable),
		bucket, envOr("AWS_LAMBDA_FUNCTION_NAME", defaultFunction), h.log)
}

// errMalformedEvent: the event is neither a sweep to run nor a health check.
var errMalformedEvent = errors.New(`malformed event: expected {"sweep_id": "..."} or {"health_check": true}`)

// decodeEvent reads the function's input: an event is accepted when it is JSON of the
// orchestratorEvent shape that names a sweep or asks for a health check.
func decodeEvent(raw []byte) (orchestratorEvent, error) {
	var ev orchestratorEvent
	if err := json.Unmarshal(raw, &ev); err != nil {
		return orchestratorEvent{}, fmt.Errorf("%w: %w", errMalformedEvent, err)
	}
	if !ev.HealthCheck && ev.SweepID == "" {
		return orchestratorEvent{}, errMalformedEvent
	}
	return ev, nil
}

func (h *lambdaHandler) handle(ctx context.Context, raw json.RawMessage) (any, error) {
	ev, err := decodeEvent(raw)
	if err != nil {
		h.log.Error().Str("event", string(raw)).Msg(`malformed event: expected {"sweep_id": "..."} or {"health_check": true}; not retried`)
		return nil, nil
	}
	h.once.Do(func() { h.setup(ctx) })
	if ev.HealthCheck {
		ans := healthAnswer{OK: h.err == nil, Version: versionInfo(), ARN: h.arn}
		if h.deps != nil {
			ans.Account = h.deps.account
		}
		return ans, nil
	}
	if h.err != nil {
		return nil, h.err
	}
	owner := "lambda-" + newOwnerID("fn")
	if lc, ok := lambdacontext.FromContext(ctx); ok && lc.AwsRequestID != "" {
		owner = "lambda-" + lc.AwsRequestID
	}
	deadline, _ := ctx.Deadline()
	h.log.Info().Str("sweep_id", ev.SweepID).Str("owner", owner).Time("deadline", deadline).Msg("invocation started")
	o := h.deps.newOrchestrator(owner, ev.ForceDownload, true)
	err = o.run(ctx, ev.SweepID, deadline)
	switch {
	case err == nil:
		return nil, nil
	case errors.Is(err, errLeaseHeld):
		return nil, nil // a duplicate beside a live holder
	case errors.Is(err, errSweepNotFound):
		h.log.Error().Str("sweep_id", ev.SweepID).Err(err).Msg("unknown sweep; not retried")
		return nil, nil
	}
	// Lambda retries the event; the retry takes over once the lease is free or expired.
	h.log.Error().Str("sweep_id", ev.SweepID).Err(err).Msg("invocation ended with an error")
	return nil, err
}

// ---- the CLI side: launch (startSweep), resume, cancel ----

// cliEngine opens the deployment and wires the engine for a CLI command.
func (r *rootConfig) cliEngine(ctx context.Context) (*deployment, *engineDeps, error) {
	d, err := r.openDeployment(ctx)
	if err != nil {
		return nil, nil, err
	}
	return d, newEngineDeps(d.cfg, d.accountID, d.userID, d.table, d.instancesTable, d.bucket, d.function, r.log), nil
}

func newSweepID(now time.Time) string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return "sw-" + now.UTC().Format("20060102-150405") + "-" + hex.EncodeToString(b)
}

// launchDoc is `launch --output json`.
type launchDoc struct {
	SweepID       string `json:"sweep_id"`
	SweepName     string `json:"sweep_name"`
	Status        string `json:"status"`
	TotalParams   int    `json:"total_params"`
	MaxConcurrent int    `json:"max_concurrent"`
	Detached      bool   `json:"detached"`
	Function      string `json:"function,omitempty"`
	ParamsKey     string `json:"s3_params_key"`
	Counts        counts `json:"counts"`
}

// startSweep uploads the params, creates the record and starts the orchestrator: the
// function (detached) or the same engine in this process.
func startSweep(ctx context.Context, r *rootConfig, req *launchRequest) error {
	d, deps, err := r.cliEngine(ctx)
	if err != nil {
		return err
	}
	now := time.Now()
	id := newSweepID(now)
	name := req.Name
	if name == "" {
		name = id
	}
	key, sum, err := deps.params.uploadParams(ctx, id, req.Raw)
	if err != nil {
		return fmt.Errorf("%w (is spawn deployed? run 'spawn deploy')", err)
	}
	poll := req.PollInterval
	if poll <= 0 {
		poll = defaultPollInterval
	}
	sw := &sweep{
		SweepID:        id,
		SweepName:      name,
		UserID:         d.userID,
		CreatedAt:      formatRecordTime(now),
		S3Bucket:       d.bucket,
		S3ParamsKey:    key,
		ParamsChecksum: sum,
		MaxConcurrent:  max(req.MaxConcurrent, 1),
		LaunchDelay:    req.LaunchDelay.String(),
		PollInterval:   poll.String(),
		TotalParams:    len(req.Items),
		Region:         d.region,
		AWSAccountID:   d.accountID,
		Status:         statusInitializing,
	}
	if req.TTL > 0 {
		sw.TTL = req.TTL.String()
	}
	if req.IdleTimeout > 0 {
		sw.IdleTimeout = req.IdleTimeout.String()
	}
	fixCounts(sw)
	if err := deps.store.createSweep(ctx, sw); err != nil {
		return fmt.Errorf("%w (is spawn deployed? run 'spawn deploy')", err)
	}
	doc := launchDoc{SweepID: id, SweepName: name, Status: sw.Status, TotalParams: sw.TotalParams,
		MaxConcurrent: sw.MaxConcurrent, Detached: req.Detach, ParamsKey: key, Counts: sw.Counts}
	if req.Detach {
		doc.Function = d.function
		if err := startFunction(ctx, deps, id); err != nil {
			return err
		}
		if !req.Wait {
			return r.printLaunched(doc)
		}
		if !r.jsonOutput() {
			if err := r.printLaunched(doc); err != nil {
				return err
			}
		}
		final, err := waitSweep(ctx, deps.store, id, min(poll, 5*time.Second), realClock{})
		if err != nil {
			return err
		}
		return r.reportEnd(final, &doc)
	}
	if !r.jsonOutput() {
		fmt.Fprintf(r.stdout, "sweep %s running here: %d items, at most %d at a time (Ctrl-C pauses it)\n", id, sw.TotalParams, sw.MaxConcurrent)
	}
	return r.runHere(ctx, deps, id, false, req.Wait, &doc)
}

// startFunction invokes the orchestrator function for a sweep; a missing function is
// one clear line.
func startFunction(ctx context.Context, deps *engineDeps, id string) error {
	err := invokeEvent(ctx, deps.lambda, deps.function, id)
	var nf *lambdatypes.ResourceNotFoundException
	if errors.As(err, &nf) {
		return fmt.Errorf("the orchestrator function %s does not exist: run 'spawn deploy', then 'spawn resume --sweep-id %s'", deps.function, id)
	}
	if err != nil {
		return fmt.Errorf("starting the orchestrator function %s: %w (then run 'spawn resume --sweep-id %s')", deps.function, err, id)
	}
	return nil
}

func (r *rootConfig) printLaunched(doc launchDoc) error {
	if r.jsonOutput() {
		return r.printJSON(doc)
	}
	fmt.Fprintf(r.stdout, "sweep %s launched: %d items, at most %d at a time\n", doc.SweepID, doc.TotalParams, doc.MaxConcurrent)
	fmt.Fprintf(r.stdout, "follow it with 'spawn status %s'\n", doc.SweepID)
	return nil
}

// runHere runs the engine in this process with no deadline (--no-detach). Ctrl-C saves,
// releases the lease and says how to resume.
func (r *rootConfig) runHere(ctx context.Context, deps *engineDeps, id string, forceDownload, wait bool, doc *launchDoc) error {
	o := deps.newOrchestrator(newOwnerID("cli"), forceDownload, false)
	err := o.run(ctx, id, time.Time{})
	if ctx.Err() != nil {
		fmt.Fprintf(r.stderr, "sweep %s paused: resume with 'spawn resume --sweep-id %s'\n", id, id)
		return withExitCode(exitRuntime, errSilent)
	}
	if errors.Is(err, errLeaseHeld) {
		return fmt.Errorf("sweep %s is being run by another orchestrator right now: follow it with 'spawn status %s'", id, id)
	}
	if err != nil {
		return err
	}
	final, err := deps.store.loadSweep(ctx, id)
	if err != nil {
		return err
	}
	if !wait && !terminalStatus(final.Status) {
		return nil
	}
	return r.reportEnd(final, doc)
}

// reportEnd prints how a sweep ended; exit 3 when it failed, was cancelled or has
// failed items (SPEC exit codes, for --wait and --no-detach).
func (r *rootConfig) reportEnd(sw *sweep, doc *launchDoc) error {
	if doc != nil {
		doc.Status, doc.Counts = sw.Status, sw.Counts
	}
	if r.jsonOutput() {
		if err := r.printJSON(doc); err != nil {
			return err
		}
	} else {
		c := sw.Counts
		fmt.Fprintf(r.stdout, "sweep %s %s: %d succeeded, %d failed, %d expired, %d cancelled, %d unknown\n",
			sw.SweepID, sw.Status, c.Succeeded, c.Failed, c.Expired, c.Cancelled, c.Unknown)
	}
	return sweepEndError(sw, sw.Counts)
}

// sweepIDArg takes the id from --sweep-id or the one positional argument.
func sweepIDArg(flagValue string, args []string) (string, error) {
	switch {
	case flagValue != "" && len(args) == 0:
		return flagValue, nil
	case flagValue == "" && len(args) == 1:
		return args[0], nil
	case flagValue == "" && len(args) == 0:
		return "", usageErrorf("a sweep id is needed: pass --sweep-id ID (see 'spawn list')")
	}
	return "", usageErrorf("unexpected arguments %q: pass one sweep id with --sweep-id", args)
}

// sweepEngine is what resume and cancel start from: the sweep id (flag or argument),
// checked before any AWS call, and the engine wired to the deployment.
func (r *rootConfig) sweepEngine(ctx context.Context, flagValue string, args []string) (string, *engineDeps, error) {
	id, err := sweepIDArg(flagValue, args)
	if err != nil {
		return "", nil, err
	}
	_, deps, err := r.cliEngine(ctx)
	return id, deps, err
}

func newResumeCmd(r *rootConfig) *ffcli.Command {
	fs := r.newFlagSet("resume")
	id := fs.String("sweep-id", "", "the sweep to continue")
	retryFailed := fs.Bool("retry-failed", false, "queue the sweep's failed items again")
	fs.Bool("detach", true, "run the orchestrator in Lambda (default)")
	noDetach := fs.Bool("no-detach", false, "run the orchestrator in this process until the sweep ends")
	force := fs.Bool("force-download", false, "download the parameters again instead of using the local cache")
	return r.command("resume", "spawn resume --sweep-id ID [--retry-failed] [--detach | --no-detach]",
		"continue a sweep that is not COMPLETED or CANCELLED", fs,
		func(ctx context.Context, args []string) error {
			sweepID, deps, err := r.sweepEngine(ctx, *id, args)
			if err != nil {
				return err
			}
			sw, queued, err := prepareResume(ctx, deps.store, sweepID, *retryFailed)
			if err != nil {
				return err
			}
			if *noDetach {
				if !r.jsonOutput() {
					fmt.Fprintf(r.stdout, "sweep %s resumed here (%d failed items queued again; Ctrl-C pauses it)\n", sweepID, queued)
				}
				doc := &launchDoc{SweepID: sw.SweepID, SweepName: sw.SweepName, TotalParams: sw.TotalParams, MaxConcurrent: sw.MaxConcurrent}
				return r.runHere(ctx, deps, sweepID, *force, true, doc)
			}
			if err := startFunction(ctx, deps, sweepID); err != nil {
				return err
			}
			if r.jsonOutput() {
				return r.printJSON(map[string]any{"sweep_id": sweepID, "status": sw.Status, "requeued": queued, "detached": true})
			}
			fmt.Fprintf(r.stdout, "sweep %s resumed (%d failed items queued again)\nfollow it with 'spawn status %s'\n", sweepID, queued, sweepID)
			return nil
		})
}

// prepareResume refuses a finished sweep and, with retryFailed, queues the failed items
// again (attempt+1, counts fixed) in one fenced write.
func prepareResume(ctx context.Context, st sweepStore, id string, retryFailed bool) (*sweep, int, error) {
	for range 10 {
		sw, err := st.loadSweep(ctx, id)
		if errors.Is(err, errSweepNotFound) {
			return nil, 0, withExitCode(exitUsage, err)
		}
		if err != nil {
			return nil, 0, err
		}
		if sw.Status == statusCompleted || sw.Status == statusCancelled {
			return nil, 0, usageErrorf("sweep %s is %s: there is nothing to resume (start a new one with 'spawn launch')", id, sw.Status)
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
			for _, rec := range recs {
				if rec.Outcome != outcomeFailed || busy[rec.Index] {
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

// cancelDoc is `cancel --output json`.
type cancelDoc struct {
	SweepID    string   `json:"sweep_id"`
	Status     string   `json:"status"`
	Already    bool     `json:"already"`
	Terminated []string `json:"terminated"`
}

func newCancelCmd(r *rootConfig) *ffcli.Command {
	fs := r.newFlagSet("cancel")
	id := fs.String("sweep-id", "", "the sweep to cancel")
	return r.command("cancel", "spawn cancel --sweep-id ID",
		"stop launching, terminate every instance of the sweep, status CANCELLED", fs,
		func(ctx context.Context, args []string) error {
			sweepID, deps, err := r.sweepEngine(ctx, *id, args)
			if err != nil {
				return err
			}
			o := deps.newOrchestrator(newOwnerID("cancel"), false, false)
			sw, already, err := o.cancelRun(ctx, sweepID)
			if errors.Is(err, errSweepNotFound) {
				return withExitCode(exitUsage, err)
			}
			if err != nil {
				return err
			}
			doc := cancelDoc{SweepID: sweepID, Status: sw.Status, Already: already, Terminated: o.terminated}
			if doc.Terminated == nil {
				doc.Terminated = []string{}
			}
			if r.jsonOutput() {
				return r.printJSON(doc)
			}
			switch {
			case already && sw.Status == statusCancelled:
				fmt.Fprintf(r.stdout, "sweep %s is already cancelled\n", sweepID)
			case already:
				fmt.Fprintf(r.stdout, "sweep %s already ended (%s): nothing to cancel\n", sweepID, sw.Status)
			case sw.Status != statusCancelled:
				fmt.Fprintf(r.stdout, "sweep %s ended (%s) before the cancel took effect\n", sweepID, sw.Status)
			case len(o.terminated) > 0:
				fmt.Fprintf(r.stdout, "sweep %s cancelled: terminated %d instances: %s\n", sweepID, len(o.terminated), strings.Join(o.terminated, ", "))
			default:
				fmt.Fprintf(r.stdout, "sweep %s cancelled: its orchestrator stopped and terminated its instances\n", sweepID)
			}
			return nil
		})
}
