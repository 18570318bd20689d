package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/aws/smithy-go"
)

// The disturbances the property test puts on EC2 and on the engine's invocations, each
// one a documented behaviour of AWS that the emulators do not model, and the actors of
// one run: Lambda invocations (some delivered twice with one request id), the CLI, and
// a user who cancels, each with its own clock.

// refusalCodes are EC2's refusals for capacity and quotas: client errors that clear with
// time (EC2 API reference, "Error codes"). A launch refused with one waits; it never
// fails the item.
var refusalCodes = []string{"InsufficientInstanceCapacity", "VcpuLimitExceeded", "InstanceLimitExceeded",
	"MaxSpotInstanceCountExceeded", "InsufficientFreeAddressesInSubnet", "UnfulfillableCapacity", "SpotMaxPriceTooLow"}

// deniedRegion is the region a scenario may deny every EC2 call in, as an organisation
// policy or a region that is not enabled does (UnauthorizedOperation).
const deniedRegion = "ap-south-1"

// refusalSpell: from From to Until after the sweep began (the true clock), RunInstances
// in Region ("" every region) answers Code.
type refusalSpell struct {
	From, Until time.Duration
	Code        string
	Region      string
	Type        string // "" every instance type
}

// spells are a scenario's disturbances as the fake EC2 acts them out.
type spells struct {
	sc  *scenario
	t0  time.Time  // when the sweep began, on the true clock
	rng *rand.Rand // lags and error kinds of lost answers
}

// fired counts what each disturbance did in a run: the proof that it happened.
type fired struct {
	Refusals          int // RunInstances answered with a capacity or quota refusal
	WaitReasons       int // saves of an alive entry waiting on such a refusal, reason named
	RefusedAtCancel   int // entries waiting on such a refusal when a cancel was asked
	DeniedCalls       int // EC2 calls the denied region refused
	CancelNamedDenied int // cancel attempts that returned *cancelIncomplete naming the denied region
	Ambiguous         int // RunInstances that launched and answered with a 5xx or a timeout
	AmbiguousAtCancel int // of those, invisible and unknown to the record when the cancel was asked, then terminated
	DuplicateIDs      int // invocations started beside another with the same request id
	Offsets           int // actors whose clock is off
	Fallbacks         int // instances launched as an item's later candidate (capacity fallback)
}

func (f *fired) add(g fired) {
	f.Refusals += g.Refusals
	f.WaitReasons += g.WaitReasons
	f.RefusedAtCancel += g.RefusedAtCancel
	f.DeniedCalls += g.DeniedCalls
	f.CancelNamedDenied += g.CancelNamedDenied
	f.Ambiguous += g.Ambiguous
	f.AmbiguousAtCancel += g.AmbiguousAtCancel
	f.DuplicateIDs += g.DuplicateIDs
	f.Offsets += g.Offsets
	f.Fallbacks += g.Fallbacks
}

// drawTroubles adds the disturbances of EC2 and Lambda to a scenario, each with some
// probability, from the scenario's own generator.
func (sc *scenario) drawTroubles(r *rand.Rand) {
	if r.IntN(4) == 0 {
		sc.drawDenial(r)
	}
	if r.IntN(3) == 0 {
		sc.drawRefusals(r)
	}
	if r.IntN(4) == 0 {
		sc.drawAmbiguity(r)
	}
	sc.dupIDs = r.IntN(3) == 0
	sc.offsets = r.IntN(3) == 0
	if r.IntN(3) == 0 {
		sc.drawFallbackSpells(r)
	}
}

// fallbackTypes are the instance types a fallback item lists, in order of preference.
var fallbackTypes = []string{"t3.micro", "t3.small", "t3a.micro"}

// drawFallbackSpells: items with a capacity fallback, and often a long spell in which
// the first type is refused everywhere, so that items run on a later candidate.
func (sc *scenario) drawFallbackSpells(r *rand.Rand) {
	sc.fallback = true
	if r.IntN(3) != 0 {
		from := time.Duration(r.IntN(300)) * time.Second
		sc.refusals = append(sc.refusals, refusalSpell{From: from, Until: from + time.Duration(60+r.IntN(900))*time.Second,
			Code: refusalCodes[r.IntN(len(refusalCodes))], Type: fallbackTypes[0]})
	}
}

// drawFallback gives item it a fallback: two or three types, sometimes two regions (the
// scenario's), sometimes spot "prefer".
func (sc *scenario) drawFallback(r *rand.Rand, it *item) *fallback {
	fb := &fallback{InstanceTypes: fallbackTypes[:2+r.IntN(2)]}
	if len(sc.regions) > 1 && r.IntN(2) == 0 {
		first := sc.regions[r.IntN(len(sc.regions))]
		fb.Regions = []string{first}
		for _, reg := range sc.regions {
			if reg != first && len(fb.Regions) < 2 {
				fb.Regions = append(fb.Regions, reg)
			}
		}
		it.Region = first
	}
	if r.IntN(3) == 0 {
		fb.SpotPrefer, it.Spot = true, true
	}
	return fb
}

// planCandidates plans the launches of every later candidate of one (index, attempt):
// its own token, the same workload as the first (the item's outcome does not depend on
// where it ran), and its own refusals, throttles and lost answers.
func planCandidates(r *rand.Rand, fates map[string]*fate, token string, it item, first *fate) {
	if it.Fallback == nil {
		return
	}
	if r.IntN(3) == 0 && !slices.Contains(first.errs, "timeout-launched") {
		first.errs = append([]string{"refuse:" + refusalCodes[r.IntN(len(refusalCodes))]}, first.errs...)
	}
	for k := 1; k < len(candidatesOf(it)); k++ {
		fa := &fate{visible: first.visible, runFor: first.runFor, end: first.end}
		for range r.IntN(3) {
			kinds := []string{"capacity", "throttle", "timeout", "timeout-launched", "refuse:" + refusalCodes[r.IntN(len(refusalCodes))]}
			fa.errs = append(fa.errs, kinds[r.IntN(len(kinds))])
			if slices.Contains(fa.errs, "timeout-launched") {
				break
			}
		}
		fates[fmt.Sprintf("%s/c%d", token, k)] = fa
	}
}

// drawDenial: some items in a region whose every call is refused for a spell (for the
// whole rest of the run in a quarter of them), with a cancel during the spell.
func (sc *scenario) drawDenial(r *rand.Rand) {
	sc.denied = deniedRegion
	sc.regions = append(sc.regions, deniedRegion)
	sc.deniedFrom = time.Duration(r.IntN(240)) * time.Second
	sc.deniedUntil = -1
	span := 300 * time.Second
	if r.IntN(4) != 0 {
		span = time.Duration(30+r.IntN(600)) * time.Second
		sc.deniedUntil = sc.deniedFrom + span
	}
	if sc.deniedUntil < 0 || r.IntN(4) != 0 {
		sc.cancelAt = sc.deniedFrom + time.Duration(r.Int64N(int64(span)))
	}
}

// drawRefusals: one to three spells of a capacity or quota refusal, in one region or
// all, and often one across the cancel.
func (sc *scenario) drawRefusals(r *rand.Rand) {
	spell := func(from, length time.Duration) refusalSpell {
		sp := refusalSpell{From: max(from, 0), Until: max(from, 0) + length, Code: refusalCodes[r.IntN(len(refusalCodes))]}
		if r.IntN(3) == 0 {
			sp.Region = sc.regions[r.IntN(len(sc.regions))]
		}
		return sp
	}
	for range 1 + r.IntN(3) {
		sc.refusals = append(sc.refusals, spell(time.Duration(r.IntN(600))*time.Second, time.Duration(10+r.IntN(590))*time.Second))
	}
	if sc.cancelAt < 0 && r.IntN(3) == 0 {
		sc.cancelAt = time.Duration(r.IntN(600)) * time.Second
	}
	if sc.cancelAt >= 0 && r.IntN(2) == 0 {
		from := sc.cancelAt - time.Duration(r.IntN(120))*time.Second
		sc.refusals = append(sc.refusals, spell(from, sc.cancelAt-max(from, 0)+time.Duration(1+r.IntN(180))*time.Second))
	}
}

// drawAmbiguity: around a cancel, every launch answers with a 5xx or a timeout although
// it launched, and EC2 shows the instance seconds late.
func (sc *scenario) drawAmbiguity(r *rand.Rand) {
	if sc.cancelAt < 0 {
		sc.cancelAt = time.Duration(20+r.IntN(300)) * time.Second
	}
	sc.ambiguousFrom = max(sc.cancelAt-time.Duration(5+r.IntN(60))*time.Second, 0)
	sc.ambiguousUntil = sc.cancelAt + time.Duration(1+r.IntN(20))*time.Second
}

// haltAfter is when a run that cannot end by itself is stopped (0: it ends by itself):
// a region denied for good keeps a cancel from ever finishing.
func (sc scenario) haltAfter() time.Duration {
	if sc.denied != "" && sc.deniedUntil < 0 {
		return max(sc.cancelAt, sc.deniedFrom) + 30*time.Minute
	}
	return 0
}

func (f *fakeEC2) since() time.Duration { return f.sim.now.Sub(f.spells.t0) }

// denied is UnauthorizedOperation for every call in the denied region during its spell.
func (f *fakeEC2) denied(region string) error {
	if f.spells == nil {
		return nil
	}
	sc, t := f.spells.sc, f.since()
	if sc.denied == "" || region != sc.denied || t < sc.deniedFrom || (sc.deniedUntil >= 0 && t >= sc.deniedUntil) {
		return nil
	}
	f.seen.DeniedCalls++
	return &smithy.GenericAPIError{Code: "UnauthorizedOperation", Message: "You are not authorized to perform this operation."}
}

// deniedLaunch is the denied region's answer to a RunInstances: the retry of a launch
// whose answer was lost is refused too, as an organisation policy would refuse it (the
// engine must then find the first call's instance by its token, not fail the item and
// free its slot while that instance runs).
func (f *fakeEC2) deniedLaunch(region, token string) error {
	err := f.denied(region)
	if err != nil {
		idx, _ := tokenKey(token)
		f.deniedIndex[idx] = true
	}
	return err
}

// deniedHolds: the denied region refuses calls now and holds a live instance.
func (f *fakeEC2) deniedHolds() bool {
	sc, t := f.spells.sc, f.since()
	if sc.denied == "" || t < sc.deniedFrom || (sc.deniedUntil >= 0 && t >= sc.deniedUntil) {
		return false
	}
	for _, inst := range f.insts {
		if inst.region == sc.denied && f.alive(inst) {
			return true
		}
	}
	return false
}

// refusal is the capacity or quota refusal of a spell that covers now, if any.
func (f *fakeEC2) refusal(region, instanceType, token string) error {
	if f.spells == nil {
		return nil
	}
	t := f.since()
	for _, sp := range f.spells.sc.refusals {
		if t >= sp.From && t < sp.Until && (sp.Region == "" || sp.Region == region) && (sp.Type == "" || sp.Type == instanceType) {
			f.seen.Refusals++
			f.noteRefusal(token, sp.Code)
			return &smithy.GenericAPIError{Code: sp.Code, Message: "simulated refusal: " + sp.Code}
		}
	}
	return nil
}

func (f *fakeEC2) noteRefusal(token, code string) {
	if f.refused == nil {
		f.refused = map[string]map[string]bool{}
	}
	if f.refused[token] == nil {
		f.refused[token] = map[string]bool{}
	}
	f.refused[token][code] = true
}

// ambiguousNow: a launch now loses its answer although it launched.
func (f *fakeEC2) ambiguousNow() bool {
	if f.spells == nil {
		return false
	}
	t := f.since()
	return t >= f.spells.sc.ambiguousFrom && t < f.spells.sc.ambiguousUntil
}

// lostAnswer is what the caller of a launch that happened hears: a 5xx or a timeout.
func (f *fakeEC2) lostAnswer() error {
	switch f.spells.rng.IntN(3) {
	case 0:
		return fmt.Errorf("simulated timeout: %w", context.DeadlineExceeded)
	case 1:
		return &serverError{status: 503, code: "ServiceUnavailable"}
	}
	return &serverError{status: 500, code: "InternalServerError"}
}

// ambiguousLaunch: the instance runs, the caller hears an error, and DescribeInstances
// shows the instance only seconds later (EC2 API reference, "Eventual consistency"), by
// id or by filter. Without idempotent tokens (moto) it is visible at once, or the engine
// would rightly launch it again.
func (f *fakeEC2) ambiguousLaunch(inst *fakeInstance) error {
	inst.ambiguous = true
	f.seen.Ambiguous++
	if f.idempotent {
		if at := f.sim.now.Add(time.Duration(5+f.spells.rng.IntN(40)) * time.Second); at.After(inst.visibleAt) {
			inst.visibleAt = at
		}
	}
	return f.lostAnswer()
}

// serverError is an EC2 answer with an HTTP 5xx status, as the SDK reports one.
type serverError struct {
	status int
	code   string
}

func (e *serverError) Error() string {
	return fmt.Sprintf("api error %s: simulated (HTTP %d)", e.code, e.status)
}
func (e *serverError) ErrorCode() string             { return e.code }
func (e *serverError) ErrorMessage() string          { return "simulated server error" }
func (e *serverError) ErrorFault() smithy.ErrorFault { return smithy.FaultServer }
func (e *serverError) HTTPStatusCode() int           { return e.status }

// unknownIDs is DescribeInstances' answer when asked by id for an instance it does not
// show yet: InvalidInstanceID.NotFound for the whole call.
func (f *fakeEC2) unknownIDs(region string, ids []string) error {
	for _, id := range ids {
		known := false
		for _, inst := range f.insts {
			if inst.id == id && inst.region == region && !f.sim.now.Before(inst.visibleAt) {
				known = true
			}
		}
		if !known {
			return &smithy.GenericAPIError{Code: "InvalidInstanceID.NotFound", Message: fmt.Sprintf("The instance ID '%s' does not exist", id)}
		}
	}
	return nil
}

// checkTerminate: before a cancel, no instance is terminated before its TTL by EC2's
// own clock; after one, count the launches whose answer was lost that it found.
func (f *fakeEC2) checkTerminate(inst *fakeInstance) {
	if f.noChecks || !f.alive(inst) {
		return
	}
	var rec *sweep
	if f.record != nil {
		rec = f.record()
	}
	cancel := rec != nil && rec.CancelRequested
	if ran := f.sim.now.Sub(inst.launchedAt); f.ttl > 0 && !cancel && ran < f.ttl {
		f.fail("instance %s (index %d) terminated %s after its launch, before its TTL %s", inst.id, inst.index, ran, f.ttl)
	}
	if cancel && inst.ambiguous && f.idless[inst.token] && !inst.launchedAt.After(f.askedAt) && inst.visibleAt.After(f.askedAt) {
		f.seen.AmbiguousAtCancel++
	}
}

// onSave watches every write of the record: the moment a cancel is asked, and that a
// record saved CANCELLED leaves nothing alive.
func (f *fakeEC2) onSave(old, next *sweep) {
	if !old.CancelRequested && next.CancelRequested && f.askedAt.IsZero() {
		f.askedAt = f.sim.now
		for _, e := range next.Alive {
			if e.InstanceID == "" {
				f.idless[e.ClientToken] = true
				if refusalReason(e.WaitReason) {
					f.seen.RefusedAtCancel++
				}
			}
		}
	}
	for _, e := range next.Alive {
		if e.InstanceID == "" && refusalReason(e.WaitReason) {
			f.seen.WaitReasons++
			if code := reasonCode(e.WaitReason); !f.refused[e.ClientToken][code] {
				f.fail("index %d waits on %q, a refusal its launches never got", e.Index, e.WaitReason)
			}
		}
	}
	if next.Status == statusCancelled && old.Status != statusCancelled {
		if live := f.liveCount(); live > 0 {
			f.fail("the record is saved CANCELLED while %d instances are alive", live)
		}
	}
}

// reasonCode is the error code a wait reason names: "vCPU quota (VcpuLimitExceeded)".
func reasonCode(reason string) string {
	i, j := strings.LastIndex(reason, "("), strings.LastIndex(reason, ")")
	if i < 0 || j < i {
		return ""
	}
	return reason[i+1 : j]
}

// refusalReason: a wait reason that names a capacity or quota refusal.
func refusalReason(reason string) bool {
	for _, c := range refusalCodes {
		if strings.Contains(reason, "("+c+")") {
			return true
		}
	}
	return false
}

// propRun is one scenario being acted out: the sim, the fakes, and the actors it starts.
type propRun struct {
	sc      scenario
	s       *sim
	r       *rand.Rand // the plan's generator, then retries' delays
	jr      *rand.Rand // the engines' jitter
	ids     *rand.Rand // request ids, owners, duplicates, clock offsets
	store   *fakeStore
	fe      *fakeEC2
	alarms  *fakeAlarms
	items   []item
	sweepID string
	res     *simResult
	fail    func(string, ...any)
	owners  int // CLI owners named so far: each orchestrator has its own
	// lambdaOffset is Lambda's clock minus EC2's (with offsets): one for every invocation.
	lambdaOffset time.Duration
}

// startActor starts an actor in role after a while, on its clock: every Lambda
// invocation on Lambda's one clock (AWS keeps them in step), each CLI command on its
// host's own. With offsets, each of those clocks is off from EC2's by up to 30 minutes.
func (p *propRun) startActor(name, role string, after time.Duration, f func(ctx context.Context, a *actor)) *actor {
	a := p.s.start(name, after, f)
	a.role = role
	switch {
	case !p.sc.offsets:
	case role == roleInvocation:
		a.offset = p.lambdaOffset
	default:
		a.offset = p.drawOffset()
	}
	if a.offset != 0 {
		p.fe.seen.Offsets++
	}
	return a
}

func (p *propRun) drawOffset() time.Duration {
	return time.Duration(p.ids.Int64N(int64(time.Hour)+1)) - 30*time.Minute
}

// cliOwner names the lease owner of a CLI command's engine, unique in the run.
func (p *propRun) cliOwner(kind string) string {
	p.owners++
	return fmt.Sprintf("%s-%d", kind, p.owners)
}

// watchedStore is the fake store as the actors use it: it notes each actor that has read
// or written a record asking for a cancel (from then on it must launch nothing).
type watchedStore struct{ *fakeStore }

func noteCancel(ctx context.Context, sw *sweep) {
	if a := actorOf(ctx); a != nil && sw != nil && sw.CancelRequested {
		a.sawCancel = true
	}
}

func (w watchedStore) loadSweep(ctx context.Context, id string) (*sweep, error) {
	sw, err := w.fakeStore.loadSweep(ctx, id)
	if err == nil {
		noteCancel(ctx, sw)
	}
	return sw, err
}

func (w watchedStore) saveSweep(ctx context.Context, sw *sweep) error {
	err := w.fakeStore.saveSweep(ctx, sw)
	if err == nil {
		noteCancel(ctx, sw)
	}
	return err
}

func (w watchedStore) requestCancel(ctx context.Context, id string) (*sweep, error) {
	sw, err := w.fakeStore.requestCancel(ctx, id)
	if err == nil {
		noteCancel(ctx, sw)
	}
	return sw, err
}

// newOrch is the engine one actor runs, on the actor's clock, named owner.
func (p *propRun) newOrch(a *actor, owner string, invoke func(ctx context.Context, id string, watch *leaseNote) error) *orchestrator {
	o := newTestOrchestrator(watchedStore{p.store}, p.fe.client, actorClock{s: p.s, offset: a.offset})
	o.alarmsFor = func(context.Context, string) (alarmAPI, error) { return p.alarms, nil }
	o.invokeAsync = invoke
	o.loadItems = itemsOf(p.items)
	o.owner = owner
	o.clockName = owner // a host's own clock
	if a.role == roleInvocation {
		o.clockName = "lambda" // as the function names it
	}
	o.jitter = p.jr.Float64
	o.log = testLog(p.s, fmt.Sprintf("%s@%+.0fs", owner, a.offset.Seconds()), p.res.spawn)
	a.owner = owner
	return o
}

func (p *propRun) hex(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(p.ids.IntN(256))
	}
	return hex.EncodeToString(b)
}

// startEvent delivers one Lambda event: a new request id unless it is Lambda's retry
// of a failed one (same id); in some scenarios a duplicate with the same id arrives at
// the same moment.
func (p *propRun) startEvent(after time.Duration, crashAt int, watch *leaseNote, reqID string) {
	if p.s.halted {
		return
	}
	if reqID == "" {
		reqID = p.hex(16)
	}
	p.startInvocation(after, crashAt, watch, reqID)
	if p.sc.dupIDs && p.ids.IntN(3) == 0 {
		p.fe.seen.DuplicateIDs++
		p.startInvocation(after, 0, watch, reqID)
	}
}

// startInvocation is one invocation of the function, owned as the Lambda handler names
// its owner: the request id and a random part, unique per invocation.
func (p *propRun) startInvocation(after time.Duration, crashAt int, watch *leaseNote, reqID string) {
	p.res.spawn++
	if p.res.spawn > 2000 {
		p.fail("more than 2000 invocations")
		return
	}
	a := p.startActor("invocation", roleInvocation, after, func(ctx context.Context, a *actor) {
		o := p.newOrch(a, "lambda-"+reqID+"-"+p.hex(4), p.invoke)
		o.watched = watch
		var deadline time.Time
		if p.sc.budget > 0 {
			deadline = o.clock.Now().Add(p.sc.budget)
		}
		if err := o.run(ctx, p.sweepID, deadline); err != nil && !errors.Is(err, errCrashed) && !errors.Is(err, errLeaseHeld) {
			// Lambda retries a failed event, with its request id.
			p.startEvent(time.Minute, 0, nil, reqID)
		}
	})
	a.crashAt = crashAt
	a.onCrash = func() {
		// The runtime dies with it; Lambda retries the event a minute or more later.
		p.startEvent(time.Minute+time.Duration(p.r.IntN(120))*time.Second, 0, nil, reqID)
	}
}

// invoke is an invocation's asynchronous re-invocation of the function.
func (p *propRun) invoke(ctx context.Context, _ string, watch *leaseNote) error {
	if err := p.s.point(ctx); err != nil {
		return err
	}
	if p.sc.budget == 0 {
		p.fail("a run without a deadline re-invoked itself")
	}
	p.startEvent(50*time.Millisecond, 0, watch, "")
	return nil
}

// startNoDetach is the CLI's --no-detach: no deadline and nobody to hand on to; a crash
// is followed by the user's `resume`.
func (p *propRun) startNoDetach() {
	p.res.spawn++
	a := p.startActor("no-detach", roleCLI, 0, func(ctx context.Context, a *actor) {
		_ = p.newOrch(a, p.cliOwner("cli"), nil).run(ctx, p.sweepID, time.Time{})
	})
	a.crashAt = p.sc.crashAt
	a.onCrash = func() {
		p.res.spawn++
		p.startActor("resume-after-crash", roleCLI, time.Duration(p.r.IntN(120))*time.Second, func(ctx context.Context, a *actor) {
			// A user told "another orchestrator holds the lease" tries again later.
			for range 10 {
				o := p.newOrch(a, p.cliOwner("resume"), nil)
				if err := o.run(ctx, p.sweepID, time.Time{}); !errors.Is(err, errLeaseHeld) {
					return
				}
				if p.s.Sleep(ctx, time.Minute) != nil {
					return
				}
			}
		})
	}
}

// startResume is a `resume --no-detach` racing whoever runs the sweep.
func (p *propRun) startResume() {
	p.res.spawn++
	p.startActor("resume", roleCLI, p.sc.resumeAt, func(ctx context.Context, a *actor) {
		_ = p.newOrch(a, p.cliOwner("resume"), nil).run(ctx, p.sweepID, time.Time{})
	})
}

// startCancel is a user who runs `spawn cancel`, and runs it again while it exits 1.
func (p *propRun) startCancel() {
	p.res.spawn++
	p.startActor("cancel", roleCancel, p.sc.cancelAt, func(ctx context.Context, a *actor) {
		for {
			_, _, err := p.newOrch(a, p.cliOwner("cancel"), nil).cancelRun(ctx, p.sweepID)
			if p.s.halted || errors.Is(err, errCrashed) {
				return
			}
			p.cancelAttempted(err)
			if err == nil {
				break
			}
			if p.s.Sleep(ctx, 10*time.Second) != nil {
				return
			}
		}
		p.fe.cancelReturned = true
		p.fe.checkInvariants("cancel returned")
	})
}

// cancelAttempted checks what one `spawn cancel` left: an attempt that returned done or
// naming what it could not reach has terminated every instance of every region it
// reached (but a launch it says is not yet ruled out, still invisible), and from then
// on nothing is launched.
func (p *propRun) cancelAttempted(err error) {
	p.res.cancelAttempts++
	var inc *cancelIncomplete
	if err != nil && !errors.As(err, &inc) {
		if strings.Contains(err.Error(), "has not stopped yet") && p.fe.deniedHolds() {
			p.fail("cancel returned %q while %s refused every call and held instances of the sweep: want *cancelIncomplete naming it", err, p.sc.denied)
		}
		return // another orchestrator still ran, say: nothing more was promised
	}
	p.fe.cancelTried = true
	if inc == nil {
		return
	}
	if _, ok := inc.regions[p.sc.denied]; ok {
		p.fe.seen.CancelNamedDenied++
	}
	for _, inst := range p.fe.insts {
		if !p.fe.alive(inst) {
			continue
		}
		if _, named := inc.regions[inst.region]; named {
			continue
		}
		// A cancel beside a live holder reports the holder's last attempt, from the
		// record: up to a poll interval old (two, with a hand-on between).
		if inc.unresolved > 0 && p.s.now.Before(inst.visibleAt.Add(2*p.sc.poll)) {
			continue
		}
		p.fail("cancel returned %q, but instance %s (index %d) in %s, a region it reached, is alive", inc.Error(), inst.id, inst.index, inst.region)
	}
}
