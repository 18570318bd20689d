package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
)

// fallbackRig is one sweep driven step by step on a simulated clock, against the
// property test's fake EC2 (which checks its invariants after every call).
type fallbackRig struct {
	t     *testing.T
	s     *sim
	store *fakeStore
	fe    *fakeEC2
	sw    *sweep
	items []item
	// prices records what the engine asked to price: "type region spot".
	prices []string
}

func newFallbackRig(t *testing.T, items []item, fates map[string]*fate, idempotent bool) *fallbackRig {
	t.Helper()
	s := newSim(1, func(format string, args ...any) { t.Fatalf(format, args...) })
	r := &fallbackRig{t: t, s: s, store: newFakeStore(), items: items}
	r.fe = &fakeEC2{sim: s, idempotent: idempotent, maxConcurrent: 1, fates: fates, calls: map[string]int{},
		byToken: map[string][]*fakeInstance{}, byID: map[string]*fakeInstance{}, launchesByKey: map[string]int{},
		fail: func(format string, args ...any) { t.Fatalf(format, args...) }, seen: &fired{}, deniedIndex: map[int]bool{}}
	r.sw = &sweep{SweepID: "sw", SweepName: "fb", Status: statusRunning, MaxConcurrent: 1, PollInterval: "5s",
		TotalParams: len(items), Region: "us-east-1", TTL: "1h"}
	if err := r.store.createSweep(context.Background(), r.sw); err != nil {
		t.Fatal(err)
	}
	return r
}

// orch is a new invocation of the engine (nothing in memory), holding the lease.
func (r *fallbackRig) orch() *orchestrator {
	o := newTestOrchestrator(r.store, r.fe.client, r.s)
	o.owner, o.items, o.consistencyWindow = "o", r.items, 30*time.Second
	o.jitter = func() float64 { return 0 }
	o.price = func(_ context.Context, region, instanceType string, spot bool) (float64, string) {
		r.prices = append(r.prices, fmt.Sprintf("%s %s %v", instanceType, region, spot))
		return 0.1, "test"
	}
	o.init()
	sw, err := r.store.loadSweep(context.Background(), "sw")
	if err != nil {
		r.t.Fatal(err)
	}
	renewLease(sw, o.owner, r.s.now, o.leaseTTL)
	r.sw = sw
	return o
}

// steps runs up to n poll steps of o, 5 s apart, until done says so.
func (r *fallbackRig) steps(o *orchestrator, n int, done func() bool) {
	r.t.Helper()
	for range n {
		var inc *cancelIncomplete
		if err := o.step(context.Background(), r.sw); err != nil && !errors.As(err, &inc) {
			r.t.Fatalf("step: %v", err)
		}
		if done() {
			return
		}
		r.s.now = r.s.now.Add(5 * time.Second)
		renewLease(r.sw, o.owner, r.s.now, o.leaseTTL)
	}
	r.t.Fatalf("not done after %d steps: alive %+v", n, r.sw.Alive)
}

func (r *fallbackRig) runs(token string) int { return len(r.fe.byToken[token]) }

func refusedAlways(code string) *fate {
	f := &fate{end: "exit0", runFor: time.Minute}
	for range 50 {
		f.errs = append(f.errs, "refuse:"+code)
	}
	return f
}

// An item whose first type is refused for capacity launches as its second, under the
// second's own token, and only once EC2 has shown no instance under the first's for its
// consistency window; status and the instance item say what it ran as.
func TestFallbackLaunchesNextCandidate(t *testing.T) {
	it := item{Index: 0, InstanceType: "c5.large", Spot: true, Fallback: &fallback{InstanceTypes: []string{"c5.large", "m5.large"}, SpotPrefer: true}}
	fates := map[string]*fate{
		"sw-0-1":    refusedAlways("SpotMaxPriceTooLow"),
		"sw-0-1/c1": refusedAlways("InsufficientInstanceCapacity"),
		"sw-0-1/c2": refusedAlways("MaxSpotInstanceCountExceeded"),
		"sw-0-1/c3": {end: "exit0", runFor: time.Minute},
	}
	r := newFallbackRig(t, []item{it}, fates, true)
	o := r.orch()
	start := r.s.now
	r.steps(o, 5, func() bool { return r.sw.Alive[0].Refused })
	e := r.sw.Alive[0]
	if e.Candidate != 0 || !strings.Contains(e.WaitReason, "(SpotMaxPriceTooLow)") || !strings.Contains(e.WaitReason, "c5.large on-demand next") {
		t.Fatalf("after the refusal: %+v", e)
	}
	r.steps(o, 60, func() bool {
		return len(r.sw.Alive) == 1 && r.sw.Alive[0].Candidate == 3 && r.sw.Alive[0].InstanceID != ""
	})
	if got := r.s.now.Sub(start); got < 3*o.consistencyWindow {
		t.Errorf("launched the fourth candidate %s after the first refusal: each refused token must be settled first", got)
	} else if got > 3*(o.consistencyWindow+10*time.Second) || r.sw.Alive[0].LaunchTries != 0 {
		t.Errorf("launched the fourth candidate %s after the first refusal, %d tries: settling is a wait of one window, not a growing backoff",
			got, r.sw.Alive[0].LaunchTries)
	}
	e = r.sw.Alive[0]
	if e.InstanceType != "m5.large" || e.Spot || e.ClientToken != "sw-0-1/c3" || e.Tried != 3 || e.WaitReason != "" {
		t.Errorf("entry %+v, want m5.large on-demand under its own token", e)
	}
	for k, want := range []int{0, 0, 0, 1} {
		token := "sw-0-1"
		if k > 0 {
			token += fmt.Sprintf("/c%d", k)
		}
		if r.runs(token) != want {
			t.Errorf("%d instances under %s, want %d", r.runs(token), token, want)
		}
	}
	if strings.Join(r.prices, ";") != "m5.large us-east-1 false" {
		t.Errorf("priced %q, want the candidate it ran as", r.prices)
	}
	r.steps(o, 40, func() bool { return r.sw.Status == statusCompleted })
	rec := r.store.inst["sw"][0]
	if rec.Outcome != outcomeSucceeded || rec.InstanceType != "m5.large" || rec.Spot || rec.Region != "us-east-1" {
		t.Errorf("instance item %+v", rec)
	}
	v := buildStatus(context.Background(), r.sw, []instanceRecord{rec}, nil, r.s.now)
	if si := v.instances[0]; si.InstanceType != "m5.large" || si.Market != "on-demand" {
		t.Errorf("status shows %s %s", si.InstanceType, si.Market)
	}
}

// A crash between two candidates' launches leaves one instance: whichever step a new
// invocation takes over at (the refusal saved, the move to the next candidate saved,
// or its launch sent and not saved), it ends with the second candidate's one instance.
func TestFallbackCrashBetweenCandidates(t *testing.T) {
	for _, crashAfter := range []string{"refusal saved", "move saved", "launch sent"} {
		t.Run(crashAfter, func(t *testing.T) {
			it := item{Index: 0, InstanceType: "c5.large", Region: "us-east-1",
				Fallback: &fallback{Regions: []string{"us-east-1", "eu-west-1"}}}
			fates := map[string]*fate{
				"sw-0-1":    refusedAlways("VcpuLimitExceeded"),
				"sw-0-1/c1": {end: "exit0", runFor: time.Minute, visible: 20 * time.Second},
			}
			r := newFallbackRig(t, []item{it}, fates, true)
			o := r.orch()
			switch crashAfter {
			case "refusal saved":
				r.steps(o, 5, func() bool { return r.sw.Alive[0].Refused })
			case "move saved":
				r.steps(o, 40, func() bool { return r.sw.Alive[0].Candidate == 1 })
			case "launch sent":
				r.steps(o, 40, func() bool { return r.runs("sw-0-1/c1") == 1 })
				// The save of its id is lost: the record still names no instance.
				sw, _ := r.store.loadSweep(context.Background(), "sw")
				sw.Alive[0].InstanceID, sw.Launched = "", 0
				r.store.sweeps["sw"] = sw
			}
			r.s.now = r.s.now.Add(time.Minute)
			o = r.orch()
			r.steps(o, 60, func() bool { return r.sw.Status == statusCompleted })
			if len(r.fe.insts) != 1 || r.fe.insts[0].region != "eu-west-1" || r.store.inst["sw"][0].Region != "eu-west-1" {
				t.Errorf("%d instances; instance item %+v", len(r.fe.insts), r.store.inst["sw"][0])
			}
		})
	}
}

// A refused candidate whose earlier call did launch (its answer lost, the retry refused)
// is adopted when its token is looked up: the item never moves on to a second instance.
func TestFallbackAdoptsRefusedCandidatesLaunch(t *testing.T) {
	it := item{Index: 0, InstanceType: "c5.large", Fallback: &fallback{InstanceTypes: []string{"c5.large", "m5.large"}}}
	fates := map[string]*fate{
		"sw-0-1":    {errs: []string{"timeout-launched", "capacity"}, end: "exit0", runFor: time.Minute, visible: 20 * time.Second},
		"sw-0-1/c1": {end: "exit0", runFor: time.Minute},
	}
	r := newFallbackRig(t, []item{it}, fates, false) // moto: a token repeated launches again
	r.steps(r.orch(), 80, func() bool { return r.sw.Status == statusCompleted })
	if r.runs("sw-0-1") != 1 || r.runs("sw-0-1/c1") != 0 || r.store.inst["sw"][0].InstanceType != "c5.large" {
		t.Errorf("instances by token: %d, %d; item %+v", r.runs("sw-0-1"), r.runs("sw-0-1/c1"), r.store.inst["sw"][0])
	}
}

// everyCandidateRefused is a rig whose one item has two types, both refused for capacity.
func everyCandidateRefused(t *testing.T) *fallbackRig {
	it := item{Index: 0, InstanceType: "c5.large", Fallback: &fallback{InstanceTypes: []string{"c5.large", "m5.large"}}}
	fates := map[string]*fate{
		"sw-0-1":    refusedAlways("InsufficientInstanceCapacity"),
		"sw-0-1/c1": refusedAlways("InsufficientInstanceCapacity"),
	}
	return newFallbackRig(t, []item{it}, fates, true)
}

// When every candidate is refused, the reservation starts again from the first after a
// backoff, saying so; a refusal that is not for capacity (throttling) retries the same
// candidate; an item with one candidate waits on it as before.
func TestFallbackEveryCandidateRefused(t *testing.T) {
	r := everyCandidateRefused(t)
	o := r.orch()
	r.steps(o, 80, func() bool { e := r.sw.Alive[0]; return e.Tried == 2 && e.Candidate == 0 })
	e := r.sw.Alive[0]
	if !strings.HasPrefix(e.WaitReason, "every candidate refused") || !e.NotBefore.After(r.s.now) || e.ClientToken != "sw-0-1" {
		t.Errorf("after a full round: %+v", e)
	}
	if len(r.fe.insts) != 0 || r.sw.Counts.Failed != 0 {
		t.Errorf("%d instances, counts %+v", len(r.fe.insts), r.sw.Counts)
	}

	one := item{Index: 0, InstanceType: "c5.large"}
	r = newFallbackRig(t, []item{one}, map[string]*fate{"sw-0-1": refusedAlways("InsufficientInstanceCapacity")}, true)
	r.steps(r.orch(), 3, func() bool { return r.sw.Alive[0].LaunchTries > 0 })
	if e := r.sw.Alive[0]; e.Refused || e.Candidate != 0 {
		t.Errorf("an item without candidates: %+v", e)
	}

	thr := item{Index: 0, InstanceType: "c5.large", Fallback: &fallback{InstanceTypes: []string{"c5.large", "m5.large"}}}
	r = newFallbackRig(t, []item{thr}, map[string]*fate{"sw-0-1": {errs: []string{"throttle", "throttle"}, end: "exit0", runFor: time.Minute}}, true)
	r.steps(r.orch(), 40, func() bool { return r.sw.Status == statusCompleted })
	if r.runs("sw-0-1") != 1 {
		t.Errorf("a throttled launch moved to another candidate")
	}
}

// A cancel while a candidate's refusal is being settled terminates what it finds by any
// of the item's tokens, launches nothing, and ends CANCELLED.
func TestFallbackCancelDuringSettle(t *testing.T) {
	r := everyCandidateRefused(t)
	o := r.orch()
	r.steps(o, 80, func() bool { return r.sw.Alive[0].Candidate == 1 && r.sw.Alive[0].Refused })
	ctx := context.Background()
	if _, err := r.store.requestCancel(ctx, "sw"); err != nil {
		t.Fatal(err)
	}
	o = r.orch()
	r.steps(o, 40, func() bool { return r.sw.Status == statusCancelled })
	if len(r.fe.insts) != 0 || r.sw.Counts.Cancelled != 1 {
		t.Errorf("%d instances, counts %+v", len(r.fe.insts), r.sw.Counts)
	}
	if toks, regions := o.earlierTokens(r.sw, &aliveInstance{Index: 0, Attempt: 1, Candidate: 1, Tried: 2}); len(toks) != 1 || toks[0] != "sw-0-1" || regions[0] != "us-east-1" {
		t.Errorf("earlier tokens %v %v", toks, regions)
	}
}

// Each candidate launches as itself: its type, region, market, that region's AMI,
// subnet and security groups, and its own token (the first keeps the item's).
func TestCandidateItem(t *testing.T) {
	sw := &sweep{SweepID: "sw-1", Region: "us-east-1", AMIs: map[string]string{"us-east-1/c7g.large": "ami-0aaaaaaaaaaaaaaaa"}}
	it := item{Index: 3, InstanceType: "c7g.large", Region: "us-west-2", Spot: true, SpotMaxPrice: "0.05", Fallback: &fallback{
		InstanceTypes: []string{"c7g.large", "m7g.large"}, Regions: []string{"us-west-2", "eu-west-1"}, SpotPrefer: true,
		AMIs:    map[string]string{"us-west-2": "ami-0bbbbbbbbbbbbbbbb", "eu-west-1": "ami-0cccccccccccccccc"},
		Subnets: map[string]string{"us-west-2": "subnet-0bbbbbbbbbbbbbbbb", "eu-west-1": "subnet-0cccccccccccccccc"},
	}}
	cands := candidatesOf(it)
	if len(cands) != 8 || cands[1].String() != "c7g.large on-demand in us-west-2" || cands[2].String() != "m7g.large spot in us-west-2" ||
		cands[4].String() != "c7g.large spot in eu-west-1" {
		t.Fatalf("candidates %v", cands)
	}
	tokens := map[string]bool{}
	for k := range cands {
		c := candidateItem(sw, it, k)
		in := runInstancesInput(sw, c, 1)
		tokens[*in.ClientToken] = true
		wantAMI, wantSubnet := "ami-0bbbbbbbbbbbbbbbb", "subnet-0bbbbbbbbbbbbbbbb"
		if k >= 4 {
			wantAMI, wantSubnet = "ami-0cccccccccccccccc", "subnet-0cccccccccccccccc"
		}
		if *in.ImageId != wantAMI || *in.SubnetId != wantSubnet || string(in.InstanceType) != cands[k].InstanceType ||
			(in.InstanceMarketOptions != nil) != cands[k].Spot {
			t.Errorf("candidate %d launches as %s %s %s spot=%v", k, *in.ImageId, *in.SubnetId, in.InstanceType, in.InstanceMarketOptions != nil)
		}
	}
	if len(tokens) != 8 || !tokens[clientToken("sw-1", 3, 1)] || candidateToken("sw-1", 3, 1, 2) != candidateToken("sw-1", 3, 1, 2) {
		t.Errorf("tokens are not one per candidate, the first the item's: %v", tokens)
	}
	def := item{Index: 0, InstanceType: "c7g.large", Fallback: &fallback{SpotPrefer: true}}
	if c := candidateItem(sw, def, 1); c.AMI != "ami-0aaaaaaaaaaaaaaaa" || c.Spot {
		t.Errorf("default AMI: %+v", c)
	}
}

// The cost bound prices an item with a fallback at its dearest candidate.
func TestCostBoundUsesDearestCandidate(t *testing.T) {
	p := newTablePricer("us-east-1")
	cheap := item{InstanceType: "t3.micro", TTL: time.Hour}
	fb := cheap
	fb.Fallback = &fallback{InstanceTypes: []string{"t3.micro", "m5.large"}}
	one, _ := p.dryRunCostBound(context.Background(), []item{cheap}, 0)
	both, _ := p.dryRunCostBound(context.Background(), []item{fb}, 0)
	dear, _ := p.priceFor(context.Background(), "us-east-1", "m5.large", false)
	if one >= both || both != dear {
		t.Errorf("bound %v for t3.micro, %v with m5.large as fallback, want %v", one, both, dear)
	}
}

// results show the market a "prefer" item ran in (it may have fallen back to on-demand),
// and the item's own market for the others.
func TestResultsShowMarketRunIn(t *testing.T) {
	sw := &sweep{SweepID: "sw", Region: "us-east-1", TotalParams: 2, Status: statusRunning}
	prefer := item{Index: 0, InstanceType: "c5.large", Spot: true, Fallback: &fallback{SpotPrefer: true}}
	spot := item{Index: 1, InstanceType: "c5.large", Spot: true}
	recs := []instanceRecord{
		{SweepID: "sw", Index: 0, InstanceID: "i-1", Region: "us-east-1", InstanceType: "c5.large", Spot: false, Attempt: 1, Outcome: outcomeSucceeded},
		{SweepID: "sw", Index: 1, InstanceID: "i-2", Region: "us-east-1", InstanceType: "c5.large", Attempt: 1, Outcome: outcomeSucceeded},
	}
	v := buildStatus(context.Background(), sw, recs, nil, time.Now())
	doc := buildResults(v, []item{prefer, spot}, nil, recs)
	if doc.Results[0].Spot || !doc.Results[1].Spot {
		t.Errorf("spot columns %v and %v, want false (fell back) and true (the item's own)", doc.Results[0].Spot, doc.Results[1].Spot)
	}
	if v.instances[0].Market != "on-demand" {
		t.Errorf("status market %q", v.instances[0].Market)
	}
}

// An earlier candidate's instance that EC2 shows only after its consistency window (so
// the item moved on and runs a second instance: the one case the settling cannot see) is
// found by a cancel through the token the reservation records, and terminated.
func TestFallbackCancelFindsEarlierCandidatesLateInstance(t *testing.T) {
	it := item{Index: 0, InstanceType: "c5.large", Fallback: &fallback{InstanceTypes: []string{"c5.large", "m5.large"}}}
	fates := map[string]*fate{
		"sw-0-1":    {errs: []string{"timeout-launched", "refuse:InsufficientInstanceCapacity"}, end: "hang-hard", visible: 5 * time.Minute},
		"sw-0-1/c1": {end: "hang-hard"},
	}
	r := newFallbackRig(t, []item{it}, fates, false)
	r.fe.noChecks = true // two instances of one item is what this test sets up
	o := r.orch()
	r.steps(o, 80, func() bool { return r.sw.Alive[0].Candidate == 1 && r.sw.Alive[0].InstanceID != "" })
	r.s.now = r.s.now.Add(5 * time.Minute) // the first candidate's instance is visible now
	if _, err := r.store.requestCancel(context.Background(), "sw"); err != nil {
		t.Fatal(err)
	}
	o = r.orch()
	var asked []string
	o.ec2For = func(ctx context.Context, region string) (ec2API, error) {
		api, err := r.fe.client(ctx, region)
		return tokenLookups{api, &asked}, err
	}
	r.steps(o, 40, func() bool { return r.sw.Status == statusCancelled })
	if !slices.Contains(asked, "sw-0-1") {
		t.Errorf("the cancel looked up tokens %v, not the first candidate's", asked)
	}
	if len(r.fe.insts) != 2 {
		t.Fatalf("%d instances; the test wants the late one and the fallback's", len(r.fe.insts))
	}
	for _, inst := range r.fe.insts {
		if r.fe.alive(inst) {
			t.Errorf("instance %s (token %s) alive after the cancel", inst.id, inst.token)
		}
	}
}

// tokenLookups notes the client tokens DescribeInstances is asked about.
type tokenLookups struct {
	ec2API
	asked *[]string
}

func (l tokenLookups) DescribeInstances(ctx context.Context, in *ec2.DescribeInstancesInput, opts ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error) {
	for _, f := range in.Filters {
		if aws.ToString(f.Name) == "client-token" {
			*l.asked = append(*l.asked, f.Values...)
		}
	}
	return l.ec2API.DescribeInstances(ctx, in, opts...)
}
