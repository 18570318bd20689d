package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatch"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"
	"github.com/rs/zerolog"
)

// The deterministic simulation the engine's tests run in: a scheduler that runs one
// actor at a time and moves time only when all sleep, and a fake EC2 (and CloudWatch)
// that acts out each launch's planned fate on the simulated clock.

// sim schedules actors (orchestrator invocations, a cancel, ...) one at a time, switching
// at every fake call, in an order drawn from a seeded generator: a run is reproducible
// from its seed. Simulated time advances only when every actor sleeps.
type sim struct {
	now    time.Time
	rng    *rand.Rand
	actors []*actor
	yield  chan struct{}
	fail   func(format string, args ...any)
	// haltAt ends a run that cannot end by itself (a region refused for good): once
	// every actor sleeps past it, every call of every actor fails as a crash would.
	haltAt time.Time
	halted bool
}

// Actor roles: the invariants ask who made a call.
const (
	roleInvocation = "invocation" // a Lambda event
	roleCLI        = "cli"        // launch --no-detach, or resume
	roleCancel     = "cancel"     // spawn cancel
)

type actor struct {
	name   string
	role   string
	owner  string        // the lease owner of the orchestrator it runs now
	offset time.Duration // its clock minus the sim's true time
	// sawCancel: it has read or written a record asking for a cancel.
	sawCancel bool
	run       chan struct{}
	wakeAt    time.Time
	done      bool
	crashAt   int // the fake call at which this actor dies (0: never)
	ops       int
	crashed   bool
	onCrash   func()
}

type actorKey struct{}

var errCrashed = errors.New("simulated crash")

func newSim(seed uint64, fail func(string, ...any)) *sim {
	return &sim{
		now:   time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		rng:   rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		yield: make(chan struct{}),
		fail:  fail,
	}
}

// start adds an actor that begins at now+after.
func (s *sim) start(name string, after time.Duration, f func(ctx context.Context, a *actor)) *actor {
	a := &actor{name: name, run: make(chan struct{}), wakeAt: s.now.Add(after)}
	s.actors = append(s.actors, a)
	ctx := context.WithValue(context.Background(), actorKey{}, a)
	go func() {
		<-a.run
		f(ctx, a)
		a.done = true
		s.yield <- struct{}{}
	}()
	return a
}

func actorOf(ctx context.Context) *actor {
	a, _ := ctx.Value(actorKey{}).(*actor)
	return a
}

// point is a scheduling point at the start of every fake call; a crashed actor's calls
// all fail from its crash on.
func (s *sim) point(ctx context.Context) error {
	a := actorOf(ctx)
	if a == nil {
		return nil
	}
	if a.crashed || s.halted {
		return errCrashed
	}
	a.ops++
	if a.crashAt > 0 && a.ops >= a.crashAt {
		a.crashed = true
		if a.onCrash != nil {
			a.onCrash()
		}
		return errCrashed
	}
	s.park(a, s.now)
	return nil
}

func (s *sim) park(a *actor, wakeAt time.Time) {
	a.wakeAt = wakeAt
	s.yield <- struct{}{}
	<-a.run
}

func (s *sim) Now() time.Time { return s.now }

func (s *sim) Sleep(ctx context.Context, d time.Duration) error {
	a := actorOf(ctx)
	if a == nil {
		s.now = s.now.Add(d)
		return nil
	}
	if a.crashed || s.halted {
		return errCrashed
	}
	s.park(a, s.now.Add(max(d, 0)))
	return nil
}

// actorClock is the clock one actor keeps: the sim's true time plus its own offset, as
// a laptop's or a runner's clock may be off. Sleeping takes the same time on every clock.
type actorClock struct {
	s      *sim
	offset time.Duration
}

func (c actorClock) Now() time.Time { return c.s.now.Add(c.offset) }

func (c actorClock) Sleep(ctx context.Context, d time.Duration) error { return c.s.Sleep(ctx, d) }

// runAll runs until every actor is done; false when the step budget ran out.
func (s *sim) runAll(maxSwitches int) bool {
	for n := 0; n < maxSwitches; n++ {
		var runnable []*actor
		var next time.Time
		live := 0
		for _, a := range s.actors {
			if a.done {
				continue
			}
			live++
			if !a.wakeAt.After(s.now) {
				runnable = append(runnable, a)
			} else if next.IsZero() || a.wakeAt.Before(next) {
				next = a.wakeAt
			}
		}
		if live == 0 {
			return true
		}
		if len(runnable) == 0 {
			if !s.haltAt.IsZero() && next.After(s.haltAt) && !s.halted {
				// Wake everyone: each call now fails, and every actor winds down.
				s.halted = true
				for _, a := range s.actors {
					a.wakeAt = s.now
				}
				continue
			}
			s.now = next
			continue
		}
		a := runnable[s.rng.IntN(len(runnable))]
		a.run <- struct{}{}
		<-s.yield
	}
	return false
}

// fate is what happens to one (index, attempt): the errors its RunInstances calls get,
// then how the instance it makes ends.
type fate struct {
	errs    []string // per call: capacity, throttle, timeout-launched, timeout, bad, refuse:<code>
	visible time.Duration
	runFor  time.Duration
	end     string // exit0, exit1, noreport, hang, hang-hard, spot
}

type fakeInstance struct {
	id, token, region, sweepID string
	index, attempt             int
	launchedAt, visibleAt      time.Time
	endAt                      time.Time // zero: runs until terminated
	end                        string
	terminatedAt               time.Time
	ambiguous                  bool // its RunInstances launched it and answered with an error
}

// fakeEC2 acts out each launch's planned fate (by client token) on the sim's clock and
// checks the invariants after every call.
type fakeEC2 struct {
	sim            *sim
	idempotent     bool // AWS honours ClientToken; moto does not
	ignoreFilters  bool // kumo ignores filters
	maxConcurrent  int
	ttl            time.Duration
	fates          map[string]*fate // by token
	calls          map[string]int
	insts          []*fakeInstance
	byToken        map[string][]*fakeInstance
	launchesByKey  map[string]int // (index, attempt) → instances made
	runCalls       int
	cancelReturned bool
	faults         float64
	rng            *rand.Rand
	fail           func(format string, args ...any)
	nextID         int
	byID           map[string]*fakeInstance
	noChecks       bool // benchmarks: the invariants are the property test's job

	// The property test's disturbances and what they did (sim_scenarios_test.go).
	spells *spells
	seen   *fired
	// record is the store's sweep record as it is now, read with no scheduling point
	// (nil: the invariants on the record are not checked).
	record func() *sweep
	// cancelTried: a cancel attempt returned, done or naming what it could not reach;
	// from then on nothing is launched.
	cancelTried bool
	// askedAt: when the first cancel was asked (true time); idless then holds the
	// reservations whose instance the record did not know at that moment.
	askedAt     time.Time
	idless      map[string]bool
	deniedIndex map[int]bool // indexes whose RunInstances a denied region refused
	launchers   map[string]*actor
	refused     map[string]map[string]bool // client token → the refusal codes its launches got
}

// newBenchEC2 is an EC2 for benchmarks: it honours client tokens, finds instances by id
// at once, and checks no invariants (the property test's job).
func newBenchEC2(s *sim, maxConcurrent int, fail func(string, ...any)) *fakeEC2 {
	return &fakeEC2{sim: s, idempotent: true, maxConcurrent: maxConcurrent, fates: map[string]*fate{},
		calls: map[string]int{}, byToken: map[string][]*fakeInstance{}, byID: map[string]*fakeInstance{},
		launchesByKey: map[string]int{}, noChecks: true, fail: fail}
}

// client is the fake's EC2 client for a region (an orchestrator's ec2For).
func (f *fakeEC2) client(_ context.Context, region string) (ec2API, error) {
	return fakeRegionEC2{f: f, region: region}, nil
}

func (f *fakeEC2) alive(inst *fakeInstance) bool {
	now := f.sim.now
	if !inst.terminatedAt.IsZero() {
		return false
	}
	return inst.endAt.IsZero() || now.Before(inst.endAt)
}

func (f *fakeEC2) liveCount() int {
	live := 0
	for _, inst := range f.insts {
		if f.alive(inst) {
			live++
		}
	}
	return live
}

func (f *fakeEC2) checkInvariants(op string) {
	if f.noChecks {
		return
	}
	live := f.liveCount()
	if live > f.maxConcurrent {
		f.fail("after %s: %d instances alive, max_concurrent %d", op, live, f.maxConcurrent)
	}
	if f.cancelReturned && live > 0 {
		f.fail("after %s: %d instances alive after cancel returned", op, live)
	}
	for key, n := range f.launchesByKey {
		if n > 1 {
			f.fail("after %s: (index, attempt) %s launched into %d instances", op, key, n)
		}
	}
	if f.record != nil {
		if rec := f.record(); rec != nil && rec.Status == statusCancelled && live > 0 {
			f.fail("after %s: the record says CANCELLED and %d instances are alive", op, live)
		}
	}
}

// checkLauncher: only the lease holder launches, never a cancel, and nothing after a
// cancel attempt returned.
func (f *fakeEC2) checkLauncher(ctx context.Context) {
	a := actorOf(ctx)
	if f.noChecks || a == nil {
		return
	}
	if a.role == roleCancel {
		f.fail("RunInstances called by a cancel (%s, owner %s)", a.name, a.owner)
	}
	if f.cancelTried {
		f.fail("RunInstances by %s after a cancel attempt returned", a.owner)
	}
	if a.sawCancel {
		f.fail("RunInstances by %s after it read the record asking for a cancel", a.owner)
	}
	if f.record != nil {
		if rec := f.record(); rec != nil && rec.LeaseOwner != a.owner {
			f.fail("RunInstances by %s while the record's lease is %q's", a.owner, rec.LeaseOwner)
		}
	}
	// An owner names one invocation: two actors launching as one owner both act as the
	// holder (a duplicate event taken for the holder itself).
	if prev, ok := f.launchers[a.owner]; ok && prev != a {
		f.fail("%s and %s both launch as lease owner %s", prev.name, a.name, a.owner)
	}
	if f.launchers == nil {
		f.launchers = map[string]*actor{}
	}
	f.launchers[a.owner] = a
}

func (f *fakeEC2) transient() error {
	if f.rng != nil && f.faults > 0 && f.rng.Float64() < f.faults {
		return &smithy.GenericAPIError{Code: "RequestLimitExceeded", Message: "simulated throttle"}
	}
	return nil
}

type fakeRegionEC2 struct {
	f      *fakeEC2
	region string
}

// tokenKey is the (index, attempt) of a test token: sweep-index-attempt, and /c<k> for
// a fallback candidate's.
func tokenKey(token string) (index, attempt int) {
	token, _, _ = strings.Cut(token, "/")
	parts := strings.Split(token, "-")
	index, _ = strconv.Atoi(parts[len(parts)-2])
	attempt, _ = strconv.Atoi(parts[len(parts)-1])
	return
}

func (r fakeRegionEC2) RunInstances(ctx context.Context, in *ec2.RunInstancesInput, _ ...func(*ec2.Options)) (*ec2.RunInstancesOutput, error) {
	f := r.f
	if err := f.sim.point(ctx); err != nil {
		return nil, err
	}
	defer f.checkInvariants("RunInstances")
	f.runCalls++
	if f.cancelReturned {
		f.fail("RunInstances after cancel returned")
	}
	f.checkLauncher(ctx)
	token := aws.ToString(in.ClientToken)
	if err := f.deniedLaunch(r.region, token); err != nil {
		return nil, err
	}
	if f.idempotent && len(f.byToken[token]) > 0 {
		if f.ambiguousNow() {
			return nil, f.lostAnswer() // the retry's answer is lost too
		}
		return &ec2.RunInstancesOutput{Instances: []ec2types.Instance{f.describe(f.byToken[token][0])}}, nil
	}
	if err := f.refusal(r.region, string(in.InstanceType), token); err != nil {
		return nil, err
	}
	fa := f.fates[token]
	if fa == nil {
		f.fail("RunInstances with unplanned token %q", token)
		return nil, errors.New("unplanned")
	}
	call := f.calls[token]
	f.calls[token]++
	kind := ""
	if call < len(fa.errs) {
		kind = fa.errs[call]
	}
	switch kind {
	case "capacity":
		f.noteRefusal(token, "InsufficientInstanceCapacity")
		return nil, &smithy.GenericAPIError{Code: "InsufficientInstanceCapacity", Message: "no capacity"}
	case "throttle":
		return nil, &smithy.GenericAPIError{Code: "RequestLimitExceeded", Message: "slow down"}
	case "timeout":
		return nil, fmt.Errorf("simulated timeout: %w", context.DeadlineExceeded)
	case "bad":
		return nil, &smithy.GenericAPIError{Code: "InvalidParameterValue", Message: "bad instance type"}
	}
	if code, ok := strings.CutPrefix(kind, "refuse:"); ok {
		f.noteRefusal(token, code)
		return nil, &smithy.GenericAPIError{Code: code, Message: "simulated refusal: " + code}
	}
	idx, att := tokenKey(token)
	f.nextID++
	inst := &fakeInstance{
		id: fmt.Sprintf("i-%06d", f.nextID), token: token, region: r.region, sweepID: aws.ToString(in.TagSpecifications[0].Tags[0].Value),
		index: idx, attempt: att, launchedAt: f.sim.now, visibleAt: f.sim.now.Add(fa.visible), end: fa.end,
	}
	switch fa.end {
	case "hang-hard":
	case "hang":
		inst.endAt = f.sim.now.Add(f.ttl)
	default:
		inst.endAt = f.sim.now.Add(fa.runFor)
	}
	f.insts = append(f.insts, inst)
	f.byToken[token] = append(f.byToken[token], inst)
	if f.byID != nil {
		f.byID[inst.id] = inst
	}
	f.launchesByKey[fmt.Sprintf("%d/%d", idx, att)]++
	if strings.Contains(token, "/c") && f.seen != nil {
		f.seen.Fallbacks++
	}
	if kind == "timeout-launched" {
		inst.ambiguous = true
		return nil, fmt.Errorf("simulated timeout after the launch: %w", context.DeadlineExceeded)
	}
	if f.ambiguousNow() {
		return nil, f.ambiguousLaunch(inst)
	}
	return &ec2.RunInstancesOutput{Instances: []ec2types.Instance{f.describe(inst)}}, nil
}

func (f *fakeEC2) describe(inst *fakeInstance) ec2types.Instance {
	state := ec2types.InstanceStateNameRunning
	out := ec2types.Instance{
		InstanceId:  aws.String(inst.id),
		ClientToken: aws.String(inst.token),
		LaunchTime:  aws.Time(inst.launchedAt),
		Tags: []ec2types.Tag{
			{Key: aws.String("spawn:sweep-id"), Value: aws.String(inst.sweepID)},
			{Key: aws.String("spawn:managed"), Value: aws.String("true")},
		},
	}
	if !f.alive(inst) {
		state = ec2types.InstanceStateNameTerminated
		at := inst.terminatedAt
		if at.IsZero() || (!inst.endAt.IsZero() && inst.endAt.Before(at)) {
			at = inst.endAt
		}
		out.StateTransitionReason = aws.String("User initiated (" + at.UTC().Format("2006-01-02 15:04:05") + " GMT)")
		if inst.terminatedAt.IsZero() || !inst.endAt.After(inst.terminatedAt) {
			switch inst.end {
			case "exit0":
				out.Tags = append(out.Tags, ec2types.Tag{Key: aws.String(tagExitCode), Value: aws.String("0")})
			case "exit1":
				out.Tags = append(out.Tags, ec2types.Tag{Key: aws.String(tagExitCode), Value: aws.String("1")})
			case "spot":
				out.StateReason = &ec2types.StateReason{Code: aws.String("Server.SpotInstanceTermination"), Message: aws.String("spot interruption")}
			}
		}
	}
	out.State = &ec2types.InstanceState{Name: state}
	return out
}

func (r fakeRegionEC2) DescribeInstances(ctx context.Context, in *ec2.DescribeInstancesInput, _ ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error) {
	f := r.f
	if err := f.sim.point(ctx); err != nil {
		return nil, err
	}
	defer f.checkInvariants("DescribeInstances")
	if err := f.denied(r.region); err != nil {
		return nil, err
	}
	if err := f.transient(); err != nil {
		return nil, err
	}
	if err := f.unknownIDs(r.region, in.InstanceIds); err != nil {
		return nil, err
	}
	var res ec2types.Reservation
	// Cheap pre-filter on ids and tokens (the full match follows).
	want := map[string]bool{}
	for _, fl := range in.Filters {
		if n := aws.ToString(fl.Name); n == "instance-id" || n == "client-token" {
			for _, v := range fl.Values {
				want[v] = true
			}
		}
	}
	candidates := f.insts
	if !f.ignoreFilters && len(want) > 0 && f.byID != nil {
		candidates = nil
		for v := range want {
			if inst, ok := f.byID[v]; ok {
				candidates = append(candidates, inst)
			}
			candidates = append(candidates, f.byToken[v]...)
		}
	}
	for _, inst := range candidates {
		if inst.region != r.region || f.sim.now.Before(inst.visibleAt) {
			continue
		}
		if !f.ignoreFilters && len(want) > 0 && !want[inst.id] && !want[inst.token] {
			continue
		}
		if len(in.InstanceIds) > 0 && !slices.Contains(in.InstanceIds, inst.id) {
			continue
		}
		d := f.describe(inst)
		if !f.ignoreFilters && !matches(d, in.Filters) {
			continue
		}
		res.Instances = append(res.Instances, d)
	}
	return &ec2.DescribeInstancesOutput{Reservations: []ec2types.Reservation{res}}, nil
}

func matches(d ec2types.Instance, filters []ec2types.Filter) bool {
	for _, fl := range filters {
		var got []string
		switch name := aws.ToString(fl.Name); {
		case name == "instance-id":
			got = []string{aws.ToString(d.InstanceId)}
		case name == "client-token":
			got = []string{aws.ToString(d.ClientToken)}
		case name == "instance-state-name":
			got = []string{string(d.State.Name)}
		case strings.HasPrefix(name, "tag:"):
			for _, t := range d.Tags {
				if aws.ToString(t.Key) == strings.TrimPrefix(name, "tag:") {
					got = append(got, aws.ToString(t.Value))
				}
			}
		}
		if !slices.ContainsFunc(got, func(g string) bool { return slices.Contains(fl.Values, g) }) {
			return false
		}
	}
	return true
}

func (r fakeRegionEC2) TerminateInstances(ctx context.Context, in *ec2.TerminateInstancesInput, _ ...func(*ec2.Options)) (*ec2.TerminateInstancesOutput, error) {
	f := r.f
	if err := f.sim.point(ctx); err != nil {
		return nil, err
	}
	defer f.checkInvariants("TerminateInstances")
	if err := f.denied(r.region); err != nil {
		return nil, err
	}
	if err := f.transient(); err != nil {
		return nil, err
	}
	for _, id := range in.InstanceIds {
		for _, inst := range f.insts {
			if inst.id == id && inst.region == r.region && inst.terminatedAt.IsZero() {
				f.checkTerminate(inst)
				inst.terminatedAt = f.sim.now
			}
		}
	}
	return &ec2.TerminateInstancesOutput{}, nil
}

type fakeAlarms struct {
	sim    *sim
	alarms map[string]bool
}

func (a *fakeAlarms) PutMetricAlarm(ctx context.Context, in *cloudwatch.PutMetricAlarmInput, _ ...func(*cloudwatch.Options)) (*cloudwatch.PutMetricAlarmOutput, error) {
	if err := a.sim.point(ctx); err != nil {
		return nil, err
	}
	a.alarms[aws.ToString(in.AlarmName)] = true
	return &cloudwatch.PutMetricAlarmOutput{}, nil
}

func (a *fakeAlarms) DeleteAlarms(ctx context.Context, in *cloudwatch.DeleteAlarmsInput, _ ...func(*cloudwatch.Options)) (*cloudwatch.DeleteAlarmsOutput, error) {
	if err := a.sim.point(ctx); err != nil {
		return nil, err
	}
	for _, n := range in.AlarmNames {
		delete(a.alarms, n)
	}
	return &cloudwatch.DeleteAlarmsOutput{}, nil
}

// testLog shows the engine's log with simulated times when SPAWN_PROPERTY_LOG is set.
func testLog(s *sim, kind string, n int) zerolog.Logger {
	if os.Getenv("SPAWN_PROPERTY_LOG") == "" {
		return zerolog.Nop()
	}
	return zerolog.New(os.Stderr).Hook(zerolog.HookFunc(func(e *zerolog.Event, _ zerolog.Level, _ string) {
		e.Str("t", s.now.Format("15:04:05.000")).Str("who", fmt.Sprintf("%s-%d", kind, n))
	}))
}
