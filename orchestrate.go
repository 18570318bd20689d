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
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/ec2"
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
	// consistencyWindow is how long a launch may stay invisible to DescribeInstances.
	consistencyWindow time.Duration
	// reportWait is how long an ended instance's report may take to appear.
	reportWait time.Duration
	// exitReports reads an instance's exit record (nil: none are read); exitReporter
	// names the instance that left the one record of e's attempt ("" when none did).
	exitReports  func(ctx context.Context, sw *sweep, e *aliveInstance) (*exitReport, error)
	exitReporter func(ctx context.Context, sw *sweep, e *aliveInstance) (string, error)
	// results reads the result an instance wrote (nil: none are read).
	results func(ctx context.Context, sw *sweep, e *aliveInstance) (*itemResult, error)
	// clockName names the clock this engine measures waits on (sinceMark.Clock).
	clockName string
	// runner: this engine runs the sweep's loop (not a cancel).
	runner bool
	// blockedCancels counts cancel steps in a row a region refused.
	blockedCancels int
	// drainCause: the sweep's parameters cannot be read; no launch, only watching (drain).
	drainCause error
	// mayLaunch holds the tokens of reservations known not to exist yet: fresh ones,
	// and older ones that a DescribeInstances by client token just did not find.
	mayLaunch map[string]bool
	// saved is each sweep's record as this orchestrator last wrote it (recordImage): a
	// step that leaves it so only renews the lease item.
	saved        map[string]string
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
	if o.saved == nil {
		o.saved = map[string]string{}
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
	if o.consistencyWindow == 0 {
		o.consistencyWindow = ec2ConsistencyWindow
	}
	if o.reportWait == 0 {
		o.reportWait = exitReportWait
	}
	if o.clockName == "" {
		// This host's clock, named briefly: every alive entry may carry the name.
		o.clockName = "host-" + randomHex(4)
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

// lambdaClock names the clock every Lambda invocation keeps time on (sinceMark.Clock).
const lambdaClock = "lambda"

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
	// This engine drives the sweep (a cancel only ends it): its saves say whether it runs
	// detached, in the function, or in a --no-detach process.
	o.runner = true
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
			next, verdict, ret := o.afterFailedStep(ctx, sw, err, &stale, log)
			if verdict == stepStop {
				return ret
			}
			if sw = next; verdict == stepAgain {
				continue
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

// stepVerdict is what run does after a failed step.
type stepVerdict int

const (
	stepOn    stepVerdict = iota // go on as after any step
	stepAgain                    // step again at once
	stepStop                     // return
)

// afterFailedStep decides from the record what a failed step leaves (what is in memory
// may not have been written): the record to go on with, and whether to step again at
// once or stop (with what run returns).
func (o *orchestrator) afterFailedStep(ctx context.Context, sw *sweep, err error, stale *int, log zerolog.Logger) (*sweep, stepVerdict, error) {
	if ctx.Err() != nil {
		return sw, stepStop, o.pause(ctx, sw)
	}
	var fresh *sweep
	lerr := o.retry(ctx, func() (e error) { fresh, e = o.reload(ctx, sw.SweepID); return e })
	switch {
	case errors.Is(lerr, errLeaseLost):
		log.Warn().Msg("lease taken over by another orchestrator; stopping")
		return sw, stepStop, nil
	case lerr != nil && ctx.Err() != nil:
		return sw, stepStop, o.pause(ctx, sw)
	case lerr != nil:
		return sw, stepStop, fmt.Errorf("reading sweep %s after a failed step: %w", sw.SweepID, lerr)
	}
	switch {
	case errors.Is(err, errStaleVersion):
		// Someone else wrote (a cancel, most often): decide again at once.
		if *stale++; *stale < 3 {
			return fresh, stepAgain, nil
		}
	case errors.Is(err, errRecordTooBig):
		log.Error().Err(err).Msg("the record cannot be saved; stopping")
		_ = o.releaseFinal(ctx, fresh)
		return fresh, stepStop, err
	case o.cancelBlocked(err):
		// Not for ever: the watchdog (or `spawn cancel`) tries again.
		log.Warn().Err(err).Msg("cancel blocked by a region that refuses calls; stopping")
		_ = o.releaseFinal(ctx, fresh)
		return fresh, stepStop, err
	default:
		log.Warn().Err(err).Msg("step failed; retrying at the next poll")
	}
	return fresh, stepOn, nil
}

// cancelBlocked counts the cancel steps in a row that a region refused; true after
// cancelRegionAttempts of them.
func (o *orchestrator) cancelBlocked(err error) bool {
	var inc *cancelIncomplete
	if !errors.As(err, &inc) || len(inc.regions) == 0 {
		o.blockedCancels = 0
		return false
	}
	o.blockedCancels++
	return o.blockedCancels >= cancelRegionAttempts
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
			if len(sw.Alive) > 0 {
				log.Error().Err(err).Msg("the sweep's parameters are gone: watching the instances alive to their end, then FAILED")
				o.drainCause = err
				return false, nil
			}
			return true, o.failSweep(ctx, sw, fmt.Errorf("loading the sweep's parameters: %w", err))
		}
		log.Warn().Err(err).Msg("loading the sweep's parameters; retrying")
		if o.pauseAfterFailure(ctx, n) != nil {
			_ = o.releaseFinal(ctx, sw)
			return true, fmt.Errorf("loading the parameters of sweep %s: %w", sw.SweepID, err)
		}
	}
	if !sw.CancelRequested && o.drainCause == nil && len(o.items) != sw.TotalParams {
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
			sw, err = acquireLeaseFrom(ctx, o.store, id, cur, o.owner, o.clock.Now(), o.leaseTTL, watch.lapsedMark())
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
				watch = &leaseWatch{mark: held.mark, since: o.clock.Now(), length: held.length, expiresAt: held.expiresAt,
					sameClock: o.clockName == lambdaClock && strings.HasPrefix(held.mark.Owner, "lambda-")}
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
	// sameClock: the holder keeps time on this engine's clock (both are Lambda
	// invocations), so its recorded expiry means the same here.
	sameClock bool
	lapsed    bool
}

// wait is how long to sleep before looking again; zero once the holder is judged stopped
// (unrenewed for two poll intervals) and its lease lapsed.
func (w *leaseWatch) wait(now time.Time, poll time.Duration) time.Duration {
	watched := now.Sub(w.since)
	if watched < 2*poll {
		return min(2*poll-watched, poll)
	}
	// The holder stopped. Its lease lapses at the latest its length after this watch
	// began; by its recorded expiry when that is on this clock (Lambda's), never by a
	// time another machine's clock wrote.
	lapse := w.since.Add(w.length)
	if w.sameClock && w.expiresAt.Before(lapse) {
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
	holder := sw.LeaseOwner == o.owner
	if holder {
		renewLease(sw, o.owner, now, leaseFor(sw, o.leaseTTL))
		sw.LastStepAt = now
		if o.runner {
			sw.Detached = o.invokeAsync != nil
		}
	}
	fixCounts(sw)
	if o.saved == nil {
		o.saved = map[string]string{}
	}
	if holder && o.saved[sw.SweepID] == recordImage(sw) {
		return o.heartbeat(ctx, sw)
	}
	if err := o.store.saveSweep(ctx, sw); err != nil {
		return err
	}
	if !holder {
		return nil
	}
	o.saved[sw.SweepID] = recordImage(sw)
	return o.store.beatLease(ctx, beatOf(sw))
}

// heartbeat is the save of a step that changed nothing in the record: the lease item
// is renewed (one write unit), and the record read back tells whether anyone else wrote
// it meanwhile (a cancel, a resume): errStaleVersion then, as a fenced write would have.
func (o *orchestrator) heartbeat(ctx context.Context, sw *sweep) error {
	if err := o.store.beatLease(ctx, beatOf(sw)); err != nil {
		return err
	}
	cur, err := o.store.loadSweep(ctx, sw.SweepID)
	if err != nil {
		return err
	}
	if cur.Version != sw.Version {
		return fmt.Errorf("sweep %s was written since version %d: %w", sw.SweepID, sw.Version, errStaleVersion)
	}
	return nil
}

// recordImage is the record as stored (with its version), to tell a step that changed
// nothing; the lease's times are not part of it (they live in the lease item).
func recordImage(sw *sweep) string {
	c := *sw
	c.LeaseExpiresAt, c.LeaseRenewedAt, c.LastStepAt = time.Time{}, time.Time{}, time.Time{}
	b, err := json.Marshal(&c)
	if err != nil {
		return "" // never equal to a saved image: the record is written
	}
	return string(b)
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
		held := *sw
		err := releaseLease(ctx, o.store, sw, o.owner)
		if err != nil && !errors.Is(err, errStaleVersion) && sw.LeaseOwner == "" && held.LeaseOwner == o.owner {
			sw.LeaseOwner, sw.LeaseEpoch = held.LeaseOwner, held.LeaseEpoch
			sw.LeaseExpiresAt, sw.LeaseRenewedAt = held.LeaseExpiresAt, held.LeaseRenewedAt
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
		clearLease(sw)
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
