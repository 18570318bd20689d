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
	"sync"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	lambdasvc "github.com/aws/aws-sdk-go-v2/service/lambda"
	lambdatypes "github.com/aws/aws-sdk-go-v2/service/lambda/types"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"
	"github.com/rs/zerolog"
)

// defaultFunction is the orchestrator function's name unless --function says otherwise.
const defaultFunction = "spawn-sweep-orchestrator"

// defaultPollInterval is a sweep's poll interval unless --poll-interval says otherwise.
const defaultPollInterval = 10 * time.Second

// ec2ConsistencyWindow is how long an instance may stay invisible to DescribeInstances
// after RunInstances (the EC2 API reference, "Eventual consistency": seconds); a cancel
// looks for a possibly launched reservation this long before concluding it never
// launched. SPAWN_EC2_CONSISTENCY_WINDOW (a Go duration) shortens it for tests.
const ec2ConsistencyWindow = 60 * time.Second

// Engine constants. Each is a "why" of docs/design.md, not a tuning knob.
const (
	// maxAttempts bounds relaunches after spot interruptions (docs/design.md promise 5).
	maxAttempts = 3
	// ttlGrace is how long past its TTL an instance may live before the orchestrator
	// terminates it itself (the instance arms its own shutdown; this is the backstop).
	ttlGrace = 5 * time.Minute
	// ttlSlack: an instance's self-shutdown is armed with `shutdown +minutes`, which
	// rounds to the minute, so an end within this much of the TTL counts as expired.
	ttlSlack = time.Minute
	// lostAfterWindows: a launched instance EC2 has not shown for this many consistency
	// windows (15 minutes) ended before anyone saw it, and aged out of EC2's memory.
	lostAfterWindows = 15
	// launch backoff for capacity and throttling errors.
	backoffBase = 2 * time.Second
	backoffMax  = 2 * time.Minute
	// idleThreshold is the CPU percentage below which an instance counts as idle.
	idleThreshold = 5.0
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

// orchestrator runs one sweep's rolling queue for one invocation (a Lambda event, or
// the CLI with --no-detach). It holds no package state: tests build several at once.
type orchestrator struct {
	store       sweepStore
	ec2For      func(ctx context.Context, region string) (ec2API, error)
	alarmsFor   func(ctx context.Context, region string) (alarmAPI, error)        // nil: no idle alarms
	invokeAsync func(ctx context.Context, sweepID string, watch *leaseNote) error // nil: no re-invocation (CLI)
	loadItems   func(ctx context.Context, sw *sweep) ([]item, error)
	launchInput func(sw *sweep, it item, attempt int) *ec2.RunInstancesInput
	price       func(ctx context.Context, region, instanceType string, spot bool) (usdPerHour float64, source string)
	clock       clock
	owner       string
	leaseTTL    time.Duration
	jitter      func() float64 // in [0, 1)
	log         zerolog.Logger

	// watched is what the invocation that handed on to this one had watched of the
	// sweep's lease (nil: nothing).
	watched *leaseNote

	// Per invocation.
	items    []item
	deadline time.Time // zero: no deadline
	margin   time.Duration
	// launched remembers what RunInstances answered in this invocation (client token →
	// instance id), so a record reloaded after a lost write still learns its ids.
	launched map[string]launchedInstance
	// unsent holds the tokens this invocation reserved and never passed to RunInstances:
	// only those are known not to have launched.
	unsent map[string]bool
	// unseenSince is when a cancel first looked a possibly launched reservation up by its
	// token and tags and did not find it (this machine's clock).
	unseenSince map[string]time.Time
	// consistencyWindow is how long a launch may stay invisible to DescribeInstances.
	consistencyWindow time.Duration
	// reportWait is how long an ended instance's report may take to appear.
	reportWait time.Duration
	// exitReports reads an instance's exit record (nil: none are read).
	exitReports func(ctx context.Context, sw *sweep, e *aliveInstance) (*exitReport, error)
	// clockName names the clock this engine measures waits on (sinceMark.Clock).
	clockName string
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
	if o.unsent == nil {
		o.unsent = map[string]bool{}
	}
	if o.unseenSince == nil {
		o.unseenSince = map[string]time.Time{}
	}
	if o.consistencyWindow == 0 {
		o.consistencyWindow = ec2ConsistencyWindow
	}
	if o.reportWait == 0 {
		o.reportWait = exitReportWait
	}
	if o.clockName == "" {
		o.clockName = o.owner
	}
}

// waited is how long the condition mark stands for has lasted, on this engine's clock:
// a mark missing, or set on another clock, is set now (and 0 returned).
func (o *orchestrator) waited(mark **sinceMark, now time.Time) time.Duration {
	if *mark == nil || (*mark).Clock != o.clockName {
		*mark = &sinceMark{At: now, Clock: o.clockName}
		return 0
	}
	return now.Sub((*mark).At)
}

// lostAfter is how long a launched instance may stay invisible before it counts as
// ended unseen: many consistency windows (EC2 shows a new instance within seconds).
func (o *orchestrator) lostAfter() time.Duration { return lostAfterWindows * o.consistencyWindow }

// envDuration is the Go duration in the environment variable name (a setting tests
// shorten), or def when it is unset or not a positive duration.
func envDuration(name string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(os.Getenv(name)); err == nil && d > 0 {
		return d
	}
	return def
}

// newOwnerID names a lease holder; unique per invocation.
func newOwnerID(kind string) string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s-%s-%d-%s", kind, host, os.Getpid(), randomHex(6))
}

// randomHex is n random bytes in hex.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
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
	if stop, err := o.prepareItems(ctx, sw); stop {
		return err
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

// prepareItems loads the sweep's items once per invocation, retrying transient failures.
// It reports stop when run must return err: the sweep failed for good (its parameters
// are gone or do not match the record), or loading kept failing.
func (o *orchestrator) prepareItems(ctx context.Context, sw *sweep) (stop bool, err error) {
	log := o.log.With().Str("sweep_id", sw.SweepID).Logger()
	// A cancel needs the items too: a reservation that may have launched is resolved by
	// repeating its RunInstances with the same token.
	for n := 1; o.items == nil; n++ {
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
			return true, o.failSweep(ctx, sw, fmt.Errorf("loading the sweep's parameters: %w", err))
		}
		log.Warn().Err(err).Msg("loading the sweep's parameters; retrying")
		if o.pauseAfterFailure(ctx, n) != nil {
			_ = o.releaseFinal(ctx, sw)
			return true, fmt.Errorf("loading the parameters of sweep %s: %w", sw.SweepID, err)
		}
	}
	if !sw.CancelRequested && len(o.items) != sw.TotalParams {
		return true, o.failSweep(ctx, sw, fmt.Errorf("the params file has %d items but the sweep expects %d", len(o.items), sw.TotalParams))
	}
	return false, nil
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

// acquire takes the sweep's lease. A lease held by another is watched on this
// machine's own clock: renewed within two poll intervals means a live holder, and this
// invocation leaves (a duplicate is gone within seconds); not renewed means the holder
// stopped, and the lease is taken once it has lapsed, by the holder's recorded expiry
// or by its length counted from when this invocation first saw it, whichever comes
// first. A lease that outlives this invocation's deadline is handed on.
func (o *orchestrator) acquire(ctx context.Context, id string) (*sweep, error) {
	failures := 0
	var watch *leaseWatch
	for {
		cur, err := o.store.loadSweep(ctx, id)
		var sw *sweep
		if err == nil {
			if terminalStatus(cur.Status) && cur.LeaseOwner == "" {
				o.log.Info().Str("sweep_id", id).Str("status", cur.Status).Msg("sweep already finished")
				return nil, nil
			}
			sw, err = acquireLease(ctx, o.store, id, o.owner, o.clock.Now(), o.leaseTTL, watch.lapsedMark())
		}
		var held *leaseHeldError
		switch {
		case err == nil:
			return sw, nil
		case errors.As(err, &held):
			if watch != nil && watch.mark != held.mark {
				// Renewed (or handed on) while watched: a live holder drives the sweep.
				return nil, err
			}
			if watch == nil {
				watch = &leaseWatch{mark: held.mark, since: o.clock.Now(), length: held.length, expiresAt: held.expiresAt}
				if n := o.watched; n != nil && n.Owner == held.mark.Owner && n.RenewedAt.Equal(held.mark.RenewedAt) {
					// The invocation that handed on had watched this same renewal: go on from there.
					watch.since = watch.since.Add(-time.Duration(n.WatchedSeconds * float64(time.Second)))
				}
			}
			wait := watch.wait(o.clock.Now(), pollIntervalOf(cur))
			if wait <= 0 {
				continue // lapsed: the next acquireLease takes it over
			}
			if !o.fits(wait) && o.invokeAsync != nil {
				// Watch as long as this invocation can first: handing on at once would chain
				// invocations for nothing while the lease lasts.
				if spare := o.deadline.Sub(o.clock.Now()) - o.margin; spare > 0 {
					if err := o.clock.Sleep(ctx, min(spare, wait)); err != nil {
						return nil, err
					}
					continue
				}
				o.log.Info().Str("sweep_id", id).Str("holder", held.mark.Owner).Msg("watching the sweep's lease outlives this invocation: handing on")
				return nil, o.invokeAsync(ctx, id, watch.note(o.clock.Now()))
			}
			if err := o.clock.Sleep(ctx, wait); err != nil {
				return nil, err
			}
		case errors.Is(err, errSweepNotFound), ctx.Err() != nil:
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

// leaseWatch is one lease renewal as this invocation has watched it, on its own clock.
type leaseWatch struct {
	mark      leaseMark
	since     time.Time     // this machine's clock, when the mark was first seen
	length    time.Duration // the holder's lease length
	expiresAt time.Time     // the holder's clock
	lapsed    bool
}

// wait is how long to sleep before looking again; zero once the holder is judged stopped
// (unrenewed for two poll intervals) and its lease lapsed.
func (w *leaseWatch) wait(now time.Time, poll time.Duration) time.Duration {
	watched := now.Sub(w.since)
	if watched < 2*poll {
		return min(2*poll-watched, poll)
	}
	// The holder stopped. Its lease lapses by its recorded expiry (exact when the clocks
	// agree, as Lambda's do) and at the latest its length after this watch began.
	lapse := w.since.Add(w.length)
	if w.expiresAt.Before(lapse) {
		lapse = w.expiresAt
	}
	if !now.Before(lapse) {
		w.lapsed = true
		return 0
	}
	return min(lapse.Sub(now)+time.Millisecond, poll)
}

// leaseNote is a leaseWatch handed on to the next invocation: the renewal watched, and for
// how long (a duration, so it means the same on the next invocation's clock).
type leaseNote struct {
	Owner          string    `json:"owner"`
	RenewedAt      time.Time `json:"renewed_at"`
	WatchedSeconds float64   `json:"watched_seconds"`
}

func (w *leaseWatch) note(now time.Time) *leaseNote {
	return &leaseNote{Owner: w.mark.Owner, RenewedAt: w.mark.RenewedAt, WatchedSeconds: now.Sub(w.since).Seconds()}
}

// lapsedMark is the renewal acquireLease may take over: only one watched until it lapsed.
func (w *leaseWatch) lapsedMark() *leaseMark {
	if w == nil || !w.lapsed {
		return nil
	}
	return &w.mark
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
	c.Running = slotsUsed(sw)
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
		if err = o.invokeAsync(ctx, sw.SweepID, nil); err == nil {
			o.log.Info().Str("sweep_id", sw.SweepID).Msg("sweep handed on to a new invocation")
			return nil
		}
		if o.clock.Sleep(ctx, time.Duration(i+1)*200*time.Millisecond) != nil {
			break
		}
	}
	return fmt.Errorf("re-invoking the orchestrator for sweep %s (%w): run 'spawn resume --sweep-id %s'", sw.SweepID, err, sw.SweepID)
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

// orchestratorEvent is the function's input (docs/design.md, the function's event).
type orchestratorEvent struct {
	SweepID       string     `json:"sweep_id"`
	ForceDownload bool       `json:"force_download"`
	HealthCheck   bool       `json:"health_check,omitempty"`
	LeaseWatch    *leaseNote `json:"lease_watch,omitempty"` // set by an invocation that handed on while watching
}

// healthAnswer is the function's answer to {"health_check": true}.
type healthAnswer struct {
	OK      bool       `json:"ok"`
	Version versionDoc `json:"version"`
	Account string     `json:"account,omitempty"`
	ARN     string     `json:"arn,omitempty"`
}

// lambdaInvoker is the part of the Lambda client that re-invokes the orchestrator.
type lambdaInvoker interface {
	Invoke(ctx context.Context, in *lambdasvc.InvokeInput, optFns ...func(*lambdasvc.Options)) (*lambdasvc.InvokeOutput, error)
}

// invokeEvent starts the orchestrator function asynchronously for a sweep.
func invokeEvent(ctx context.Context, lc lambdaInvoker, function string, ev orchestratorEvent) error {
	payload, _ := json.Marshal(ev)
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
	s3       s3Reports
	clients  *awsClients
	lambda   lambdaInvoker
	function string
	pricer   *pricer // one per process: its cache outlives an invocation in a warm Lambda
	log      zerolog.Logger
}

func newEngineDeps(cfg aws.Config, account, callerARN, table, instancesTable, bucket, function string, log zerolog.Logger) *engineDeps {
	s3c := newS3Client(cfg)
	return &engineDeps{
		cfg:      cfg,
		account:  account,
		store:    newDynamoStore(dynamodb.NewFromConfig(cfg), table, instancesTable),
		params:   newParamsStore(s3c, bucket, ""),
		s3:       s3c,
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
	o.consistencyWindow = envDuration("SPAWN_EC2_CONSISTENCY_WINDOW", ec2ConsistencyWindow)
	o.reportWait = envDuration("SPAWN_EXIT_REPORT_WAIT", exitReportWait)
	o.exitReports = func(ctx context.Context, sw *sweep, e *aliveInstance) (*exitReport, error) {
		bucket := sw.S3Bucket
		if bucket == "" {
			bucket = d.params.bucket
		}
		return readExitReport(ctx, d.s3, bucket, sw.SweepID, e.Index, e.InstanceID)
	}
	if detached {
		// Every Lambda invocation's clock is kept in step by AWS: one clock for waits.
		o.clockName = "lambda"
		o.invokeAsync = func(ctx context.Context, id string, watch *leaseNote) error {
			return invokeEvent(ctx, d.lambda, d.function, orchestratorEvent{SweepID: id, LeaseWatch: watch})
		}
	}
	return o
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
	mu   sync.Mutex
	deps *engineDeps // nil until a setup succeeds: a failed one is tried again next event
	arn  string
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// setup builds the function's clients once per Lambda instance. Its own account decides
// which sweeps are cross-account, so a failed GetCallerIdentity is an error, retried with
// the next event, never an empty account kept for the instance's life.
func (h *lambdaHandler) setup(ctx context.Context) (*engineDeps, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.deps != nil {
		return h.deps, nil
	}
	cfg, err := loadAWSConfig(ctx, "", "", "", h.log)
	if err != nil {
		return nil, err
	}
	id, err := sts.NewFromConfig(cfg).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil {
		return nil, fmt.Errorf("asking STS who the function is (its own account tells cross-account sweeps apart): %w", err)
	}
	account, arn := aws.ToString(id.Account), aws.ToString(id.Arn)
	bucket := envOr("SPAWN_BUCKET", defaultBucketName(account, cfg.Region))
	h.deps = newEngineDeps(cfg, account, arn, envOr("SPAWN_TABLE", defaultTable), envOr("SPAWN_INSTANCES_TABLE", defaultInstancesTable),
		bucket, envOr("AWS_LAMBDA_FUNCTION_NAME", defaultFunction), h.log)
	h.arn = arn
	return h.deps, nil
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
	deps, err := h.setup(ctx)
	if ev.HealthCheck {
		ans := healthAnswer{OK: err == nil, Version: versionInfo()}
		if deps != nil {
			ans.Account, ans.ARN = deps.account, h.arn
		}
		return ans, nil
	}
	if err != nil {
		return nil, err
	}
	// Lambda's retries and duplicate deliveries of one event reuse its request id: the
	// owner adds a random part, so a duplicate is never mistaken for the holder itself.
	owner := newOwnerID("lambda")
	if lc, ok := lambdacontext.FromContext(ctx); ok && lc.AwsRequestID != "" {
		owner = "lambda-" + lc.AwsRequestID + "-" + randomHex(4)
	}
	deadline, _ := ctx.Deadline()
	h.log.Info().Str("sweep_id", ev.SweepID).Str("owner", owner).Time("deadline", deadline).Msg("invocation started")
	o := deps.newOrchestrator(owner, ev.ForceDownload, true)
	o.watched = ev.LeaseWatch
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
