package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/smithy-go"
	"github.com/rs/zerolog"
)

// scenario is one random run: a sweep, each launch's fate, and the disturbances.
type scenario struct {
	seed          uint64
	items         int
	maxConcurrent int
	poll          time.Duration
	launchDelay   time.Duration
	ttl           time.Duration
	idle          time.Duration
	budget        time.Duration // 0: no deadline (the CLI's --no-detach)
	regions       []string
	idempotent    bool
	ignoreFilters bool
	crashAt       int           // fake call at which the first invocation dies (0: never)
	duplicateAt   time.Duration // a second invocation of the same event (-1: none)
	resumeAt      time.Duration // a `resume --no-detach` (-1: none)
	cancelAt      time.Duration // a `cancel` (-1: none)
	faults        float64
}

type simResult struct {
	store *fakeStore
	ec2   *fakeEC2
	sw    *sweep
	truth map[int]string // expected outcome per index (no cancel)
	spawn int            // invocations started
}

func randomScenario(seed uint64) scenario {
	r := rand.New(rand.NewPCG(seed, 1))
	sc := scenario{
		seed:          seed,
		items:         1 + r.IntN(25),
		maxConcurrent: 1 + r.IntN(6),
		poll:          time.Duration(1+r.IntN(15)) * time.Second,
		duplicateAt:   -1,
		resumeAt:      -1,
		cancelAt:      -1,
		regions:       []string{"us-east-1"},
		idempotent:    r.IntN(2) == 0,
		ignoreFilters: r.IntN(4) == 0,
	}
	if r.IntN(3) == 0 {
		sc.launchDelay = time.Duration(r.IntN(3000)) * time.Millisecond
	}
	if r.IntN(2) == 0 {
		sc.ttl = 10 * time.Minute
	}
	if r.IntN(4) == 0 {
		sc.idle = 15 * time.Minute
	}
	switch r.IntN(4) {
	case 0:
		sc.budget = 0
	case 1:
		sc.budget = 20 * time.Second
	case 2:
		sc.budget = 90 * time.Second
	default:
		sc.budget = 900 * time.Second
	}
	if r.IntN(3) == 0 {
		sc.regions = append(sc.regions, "eu-west-1")
	}
	if r.IntN(3) == 0 {
		sc.crashAt = 1 + r.IntN(120)
	}
	if r.IntN(3) == 0 {
		sc.duplicateAt = time.Duration(r.IntN(120_000)) * time.Millisecond
	}
	if r.IntN(4) == 0 {
		sc.resumeAt = time.Duration(r.IntN(300)) * time.Second
	}
	if r.IntN(4) == 0 {
		sc.cancelAt = time.Duration(r.IntN(600)) * time.Second
	}
	if r.IntN(3) == 0 {
		sc.faults = 0.03
	}
	return sc
}

// plan draws each (index, attempt)'s fate and the outcome the item must end with.
func (sc scenario) plan(sweepID string, r *rand.Rand) (items []item, fates map[string]*fate, truth map[int]string) {
	fates = map[string]*fate{}
	truth = map[int]string{}
	for i := range sc.items {
		it := item{Index: i, InstanceType: "t3.micro", Region: sc.regions[r.IntN(len(sc.regions))], Spot: r.IntN(3) == 0}
		if it.Region == "us-east-1" {
			it.Region = "" // the sweep's region
		}
		items = append(items, it)
		for attempt := 1; attempt <= maxAttempts; attempt++ {
			fa := &fate{runFor: time.Duration(1+r.IntN(300)) * time.Second}
			if !sc.idempotent {
				fa.visible = 0 // moto: no eventual consistency, no idempotency
			} else if r.IntN(2) == 0 {
				fa.visible = time.Duration(r.IntN(40)) * time.Second
			}
			for range r.IntN(3) {
				kinds := []string{"capacity", "throttle", "timeout", "timeout-launched"}
				fa.errs = append(fa.errs, kinds[r.IntN(len(kinds))])
				if slices.Contains(fa.errs, "timeout-launched") {
					break // once it launched, later calls answer with the instance (or find it)
				}
			}
			ends := []string{"exit0", "exit0", "exit0", "exit1", "noreport"}
			if sc.ttl > 0 {
				ends = append(ends, "hang", "hang-hard")
			}
			fa.end = ends[r.IntN(len(ends))]
			if it.Spot && r.IntN(3) == 0 {
				fa.end = "spot"
			}
			if attempt == 1 && r.IntN(15) == 0 {
				fa.errs = []string{"bad"}
			}
			fates[fmt.Sprintf("%s-%d-%d", sweepID, i, attempt)] = fa
			if fa.end == "spot" && attempt < maxAttempts && !slices.Contains(fa.errs, "bad") {
				continue
			}
			switch {
			case slices.Contains(fa.errs, "bad"):
				truth[i] = outcomeFailed
			case fa.end == "exit0":
				truth[i] = outcomeSucceeded
			case fa.end == "exit1":
				truth[i] = outcomeFailed
			case fa.end == "hang", fa.end == "hang-hard":
				truth[i] = outcomeExpired
			default:
				truth[i] = outcomeUnknown
			}
			break
		}
	}
	// A bad-input fate only makes sense on a call that can be refused: make it permanent.
	for _, fa := range fates {
		if slices.Contains(fa.errs, "bad") {
			fa.errs = []string{"bad", "bad", "bad", "bad", "bad", "bad", "bad", "bad", "bad", "bad"}
		}
	}
	return items, fates, truth
}

// runScenario acts one scenario out; fail reports a broken invariant.
// edit, when not nil, changes the drawn fates (a pinned case).
func runScenario(sc scenario, fail func(string, ...any), edit func(map[string]*fate)) simResult {
	s := newSim(sc.seed, fail)
	r := rand.New(rand.NewPCG(sc.seed, 2))
	sweepID := fmt.Sprintf("sw%d", sc.seed)
	items, fates, truth := sc.plan(sweepID, r)
	if edit != nil {
		edit(fates)
	}
	store := newFakeStore()
	store.sim = s
	store.rng = rand.New(rand.NewPCG(sc.seed, 3))
	store.faults = sc.faults
	lastVersion := int64(0)
	store.check = func(old, next *sweep) {
		if next.Version <= old.Version || next.Version <= lastVersion {
			fail("version went from %d to %d", old.Version, next.Version)
		}
		lastVersion = next.Version
		if len(next.Alive) > next.MaxConcurrent {
			fail("record holds %d alive entries, max_concurrent %d", len(next.Alive), next.MaxConcurrent)
		}
		seen := map[int]bool{}
		for _, e := range next.Alive {
			if seen[e.Index] {
				fail("index %d has two alive entries", e.Index)
			}
			seen[e.Index] = true
		}
	}
	fe := &fakeEC2{
		sim: s, idempotent: sc.idempotent, ignoreFilters: sc.ignoreFilters, maxConcurrent: sc.maxConcurrent,
		ttl: sc.ttl, fates: fates, calls: map[string]int{}, byToken: map[string][]*fakeInstance{},
		launchesByKey: map[string]int{}, faults: sc.faults, rng: rand.New(rand.NewPCG(sc.seed, 4)), fail: fail,
	}
	alarms := &fakeAlarms{sim: s, alarms: map[string]bool{}}
	sw := &sweep{
		SweepID: sweepID, SweepName: "prop", Status: statusInitializing, MaxConcurrent: sc.maxConcurrent,
		LaunchDelay: sc.launchDelay.String(), PollInterval: sc.poll.String(), TotalParams: sc.items,
		Region: "us-east-1", AWSAccountID: "000000000000",
	}
	if sc.ttl > 0 {
		sw.TTL = sc.ttl.String()
	}
	if sc.idle > 0 {
		sw.IdleTimeout = sc.idle.String()
	}
	if err := store.createSweep(context.Background(), sw); err != nil {
		fail("create: %v", err)
	}
	res := simResult{store: store, ec2: fe, truth: truth}
	jr := rand.New(rand.NewPCG(sc.seed, 5))
	newOrch := func(kind string, invoke func(ctx context.Context, id string) error) *orchestrator {
		return &orchestrator{
			store: store,
			ec2For: func(_ context.Context, region string) (ec2API, error) {
				return fakeRegionEC2{f: fe, region: region}, nil
			},
			alarmsFor:   func(context.Context, string) (alarmAPI, error) { return alarms, nil },
			invokeAsync: invoke,
			loadItems:   func(context.Context, *sweep) ([]item, error) { return items, nil },
			launchInput: testLaunchInput,
			clock:       s,
			owner:       fmt.Sprintf("%s-%d", kind, res.spawn),
			jitter:      jr.Float64,
			log:         testLog(s, kind, res.spawn),
		}
	}
	var invoke func(ctx context.Context, id string) error
	var startInvocation func(after time.Duration, crashAt int)
	startInvocation = func(after time.Duration, crashAt int) {
		res.spawn++
		if res.spawn > 2000 {
			fail("more than 2000 invocations")
			return
		}
		o := newOrch("fn", invoke)
		a := s.start("invocation", after, func(ctx context.Context, a *actor) {
			var deadline time.Time
			if sc.budget > 0 {
				deadline = s.now.Add(sc.budget)
			}
			if err := o.run(ctx, sweepID, deadline); err != nil && !errors.Is(err, errCrashed) && !errors.Is(err, errLeaseHeld) {
				// Lambda retries a failed event.
				startInvocation(time.Minute, 0)
			}
		})
		a.crashAt = crashAt
		a.onCrash = func() {
			// The runtime dies with it; Lambda retries the event a minute or more later.
			startInvocation(time.Minute+time.Duration(r.IntN(120))*time.Second, 0)
		}
	}
	invoke = func(ctx context.Context, id string) error {
		if err := s.point(ctx); err != nil {
			return err
		}
		if sc.budget == 0 {
			fail("a run without a deadline re-invoked itself")
		}
		startInvocation(50*time.Millisecond, 0)
		return nil
	}
	if sc.budget == 0 {
		// The CLI's --no-detach: no deadline and nobody to hand on to; a crash is
		// followed by the user's `resume`.
		res.spawn++
		o := newOrch("cli", nil)
		a := s.start("no-detach", 0, func(ctx context.Context, a *actor) { _ = o.run(ctx, sweepID, time.Time{}) })
		a.crashAt = sc.crashAt
		a.onCrash = func() {
			res.spawn++
			o2 := newOrch("resume", nil)
			s.start("resume-after-crash", time.Duration(r.IntN(120))*time.Second, func(ctx context.Context, a *actor) {
				// A user told "another orchestrator holds the lease" tries again later.
				for range 10 {
					if err := o2.run(ctx, sweepID, time.Time{}); !errors.Is(err, errLeaseHeld) {
						return
					}
					o2 = newOrch("resume", nil)
					if s.Sleep(ctx, time.Minute) != nil {
						return
					}
				}
			})
		}
	} else {
		startInvocation(0, sc.crashAt)
	}
	if sc.duplicateAt >= 0 && sc.budget > 0 {
		startInvocation(sc.duplicateAt, 0)
	}
	if sc.resumeAt >= 0 {
		res.spawn++
		o := newOrch("resume", nil)
		s.start("resume", sc.resumeAt, func(ctx context.Context, a *actor) { _ = o.run(ctx, sweepID, time.Time{}) })
	}
	if sc.cancelAt >= 0 {
		res.spawn++
		o := newOrch("cancel", nil)
		s.start("cancel", sc.cancelAt, func(ctx context.Context, a *actor) {
			for {
				_, _, err := o.cancelRun(ctx, sweepID)
				if err == nil {
					break
				}
				// The user runs cancel again.
				o = newOrch("cancel", nil)
				if s.Sleep(ctx, 10*time.Second) != nil {
					return
				}
			}
			fe.cancelReturned = true
			fe.checkInvariants("cancel returned")
		})
	}
	if !s.runAll(2_000_000) {
		fail("the simulation did not finish")
	}
	store.faults = 0
	final, _ := store.loadSweep(context.Background(), sweepID)
	res.sw = final
	return res
}

func checkFinal(sc scenario, res simResult, fail func(string, ...any)) {
	sw := res.sw
	if sw == nil {
		fail("no sweep record")
		return
	}
	wantStatus := statusCompleted
	if sc.cancelAt >= 0 && sw.Status == statusCancelled {
		wantStatus = statusCancelled
	}
	if sw.Status != wantStatus {
		fail("status %s, want %s (next %d/%d, alive %d, retry %d, lease %q)", sw.Status, wantStatus, sw.NextToLaunch, sw.TotalParams, len(sw.Alive), len(sw.RetryQueue), sw.LeaseOwner)
	}
	if sw.LeaseOwner != "" {
		fail("lease still held by %s at the end", sw.LeaseOwner)
	}
	if len(sw.Alive) != 0 || len(sw.RetryQueue) != 0 {
		fail("alive %v, retry queue %v at the end", sw.Alive, sw.RetryQueue)
	}
	c := sw.Counts
	if sum := c.Succeeded + c.Failed + c.Expired + c.Cancelled + c.Unknown; sum != sc.items || c.Pending != 0 || c.Running != 0 {
		fail("counts %+v do not add up to %d items", c, sc.items)
	}
	for _, inst := range res.ec2.insts {
		if res.ec2.alive(inst) {
			fail("instance %s (index %d) still alive at the end", inst.id, inst.index)
		}
	}
	recs := res.store.inst[sw.SweepID]
	tally := map[string]int{}
	for idx, rec := range recs {
		tally[rec.Outcome]++
		if rec.Outcome == "" {
			fail("index %d ended without an outcome: %+v", idx, rec)
		}
		if sw.Status == statusCompleted && rec.Outcome != res.truth[idx] {
			fail("index %d: outcome %s, want %s (attempt %d)", idx, rec.Outcome, res.truth[idx], rec.Attempt)
		}
		if sw.Status == statusCancelled && rec.Outcome != outcomeCancelled && rec.Outcome != res.truth[idx] {
			fail("index %d: outcome %s, want %s or cancelled", idx, rec.Outcome, res.truth[idx])
		}
	}
	if sw.Status == statusCompleted && len(recs) != sc.items {
		fail("%d instance items for %d items", len(recs), sc.items)
	}
	for _, o := range []string{outcomeSucceeded, outcomeFailed, outcomeExpired, outcomeUnknown} {
		want := map[string]int{outcomeSucceeded: c.Succeeded, outcomeFailed: c.Failed, outcomeExpired: c.Expired, outcomeUnknown: c.Unknown}[o]
		if tally[o] != want {
			fail("%d instance items say %s, the record counts %d", tally[o], o, want)
		}
	}
	if tally[outcomeCancelled] > c.Cancelled {
		fail("%d instance items say cancelled, the record counts %d", tally[outcomeCancelled], c.Cancelled)
	}
}

// TestEngineProperties acts out many random sweeps against fakes with a simulated clock:
// launch errors, late visibility, duplicate and crashed invocations, resumes and cancels.
// SPAWN_PROPERTY_SEED=n replays one run; SPAWN_PROPERTY_RUNS sets how many.
func TestEngineProperties(t *testing.T) {
	runs := 1000
	if n, err := strconv.Atoi(os.Getenv("SPAWN_PROPERTY_RUNS")); err == nil {
		runs = n
	}
	base := uint64(time.Now().UnixNano())
	if s, err := strconv.ParseUint(os.Getenv("SPAWN_PROPERTY_SEED"), 10, 64); err == nil {
		base, runs = s, 1
	}
	failures := 0
	for i := range runs {
		seed := base + uint64(i)
		sc := randomScenario(seed)
		var msgs []string
		fail := func(format string, args ...any) {
			if len(msgs) < 5 {
				msgs = append(msgs, fmt.Sprintf(format, args...))
			}
		}
		res := runScenario(sc, fail, nil)
		checkFinal(sc, res, fail)
		if len(msgs) > 0 {
			failures++
			t.Errorf("seed %d (replay: SPAWN_PROPERTY_SEED=%d go test -run TestEngineProperties .)\nscenario %+v\n%s", seed, seed, sc, strings.Join(msgs, "\n"))
			if failures >= 3 {
				t.FailNow()
			}
		}
	}
}

// TestEngineNoDoubleLaunchAfterTimeout pins the hardest case: RunInstances times out
// after launching, the instance is not yet visible, and the process dies; the next holder
// must end with one instance for that (index, attempt), on AWS (idempotent token).
func TestEngineNoDoubleLaunchAfterTimeout(t *testing.T) {
	for _, idempotent := range []bool{true, false} {
		sc := scenario{seed: 7, items: 3, maxConcurrent: 2, poll: 5 * time.Second, regions: []string{"us-east-1"},
			idempotent: idempotent, duplicateAt: -1, resumeAt: -1, cancelAt: -1, budget: 60 * time.Second}
		var msgs []string
		fail := func(format string, args ...any) { msgs = append(msgs, fmt.Sprintf(format, args...)) }
		res := runScenario(sc, fail, func(fates map[string]*fate) {
			for _, fa := range fates {
				fa.errs = []string{"timeout-launched"}
				if idempotent {
					fa.visible = 30 * time.Second
				}
				fa.end = "exit0"
			}
		})
		for i := range sc.items {
			res.truth[i] = outcomeSucceeded
		}
		checkFinal(sc, res, fail)
		if len(msgs) > 0 {
			t.Fatalf("idempotent=%v: %s", idempotent, strings.Join(msgs, "\n"))
		}
		if got := len(res.ec2.insts); got != 3 {
			t.Errorf("idempotent=%v: %d instances for 3 items", idempotent, got)
		}
	}
}

func TestRetryableLaunchError(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{&smithy.GenericAPIError{Code: "InsufficientInstanceCapacity"}, true},
		{&smithy.GenericAPIError{Code: "RequestLimitExceeded"}, true},
		{&smithy.GenericAPIError{Code: "ThrottlingException"}, true},
		{&smithy.GenericAPIError{Code: "Unavailable"}, true},
		{&smithy.GenericAPIError{Code: "InternalError"}, true},
		{context.DeadlineExceeded, true},
		{&smithy.GenericAPIError{Code: "InvalidParameterValue"}, false},
		{&smithy.GenericAPIError{Code: "InvalidAMIID.NotFound"}, false},
		{&smithy.GenericAPIError{Code: "InvalidSubnetID.NotFound"}, false},
		{&smithy.GenericAPIError{Code: "UnsupportedOperation"}, false},
		{&smithy.GenericAPIError{Code: "InvalidKeyPair.NotFound"}, false},
	} {
		if got := retryableLaunchError(tc.err); got != tc.want {
			t.Errorf("retryableLaunchError(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

func TestSafetyMarginScales(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		budget, want time.Duration
	}{
		{5 * time.Second, 2 * time.Second},
		{20 * time.Second, 2 * time.Second},
		{100 * time.Second, 10 * time.Second},
		{900 * time.Second, 60 * time.Second},
	} {
		if got := safetyMargin(start, start.Add(tc.budget)); got != tc.want {
			t.Errorf("budget %s: margin %s, want %s", tc.budget, got, tc.want)
		}
	}
	if got := safetyMargin(start, time.Time{}); got != 0 {
		t.Errorf("no deadline: margin %s", got)
	}
}

func TestTransitionTime(t *testing.T) {
	got, ok := transitionTime("User initiated (2024-01-02 03:04:05 GMT)")
	if !ok || !got.Equal(time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)) {
		t.Errorf("got %v %v", got, ok)
	}
	if _, ok := transitionTime("Client.UserInitiatedShutdown"); ok {
		t.Error("parsed a reason without a time")
	}
}

// BenchmarkPollStep measures one poll step of a sweep at max_concurrent 50 whose
// instances all end within a poll, so every step gives 50 outcomes and makes 50 launches:
// ns/op and the bytes DynamoDB is asked to write per launch (the record and the instance
// items), which must not grow with the number of items.
func BenchmarkPollStep(b *testing.B) {
	for _, n := range []int{1_000, 10_000, 100_000} {
		b.Run(fmt.Sprintf("items=%d", n), func(b *testing.B) {
			s := newSim(1, func(format string, args ...any) { b.Fatalf(format, args...) })
			store := newFakeStore()
			store.measure = true
			fe := &fakeEC2{sim: s, idempotent: true, maxConcurrent: 50, fates: map[string]*fate{},
				calls: map[string]int{}, byToken: map[string][]*fakeInstance{}, byID: map[string]*fakeInstance{},
				launchesByKey: map[string]int{}, noChecks: true, fail: func(f string, a ...any) { b.Fatalf(f, a...) }}
			items := make([]item, n)
			for i := range items {
				items[i] = item{Index: i, InstanceType: "c5.large", Params: []param{{Key: "lr", Value: "0.001"}, {Key: "seed", Value: strconv.Itoa(i)}}}
			}
			ctx := context.Background()
			var sw *sweep
			var o *orchestrator
			start := func() {
				sw = &sweep{SweepID: uniqueName("bench"), SweepName: "bench", UserID: "arn:aws:iam::123456789012:user/bench",
					Status: statusInitializing, MaxConcurrent: 50, LaunchDelay: "0s", PollInterval: "10s", TotalParams: n,
					Region: "us-east-1", AWSAccountID: "123456789012", TTL: "1h"}
				if err := store.createSweep(ctx, sw); err != nil {
					b.Fatal(err)
				}
				o = &orchestrator{
					store:       store,
					ec2For:      func(context.Context, string) (ec2API, error) { return fakeRegionEC2{f: fe, region: "us-east-1"}, nil },
					launchInput: testLaunchInput,
					clock:       s,
					owner:       "bench",
					items:       items,
					log:         zerolog.Nop(),
				}
				o.init()
				renewLease(sw, o.owner, s.now, o.leaseTTL)
				for i := range n {
					fe.fates[fmt.Sprintf("%s-%d-1", sw.SweepID, i)] = &fate{runFor: 5 * time.Second, end: "exit0"}
				}
			}
			start()
			launches := 0
			store.written = 0
			b.ResetTimer()
			for range b.N {
				before := sw.Launched
				if err := o.step(ctx, sw); err != nil {
					b.Fatal(err)
				}
				launches += sw.Launched - before
				s.now = s.now.Add(10 * time.Second)
				if terminalStatus(sw.Status) {
					b.StopTimer()
					start()
					b.StartTimer()
				}
			}
			b.StopTimer()
			if launches > 0 {
				b.ReportMetric(float64(store.written)/float64(launches), "dynamodb_bytes/launch")
				b.ReportMetric(float64(launches)/float64(b.N), "launches/op")
			}
		})
	}
}

// TestCrossAccountCredentials: a sweep in another account gets EC2 credentials from
// that account's SpawnSweepCrossAccountRole with the external id, cached; the
// orchestrator's own account uses its own credentials.
func TestCrossAccountCredentials(t *testing.T) {
	var mu sync.Mutex
	var calls []url.Values
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		mu.Lock()
		calls = append(calls, r.PostForm)
		mu.Unlock()
		w.Header().Set("Content-Type", "text/xml")
		fmt.Fprint(w, `<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><AssumeRoleResult>
<Credentials><AccessKeyId>ASIACROSS</AccessKeyId><SecretAccessKey>s</SecretAccessKey><SessionToken>tok</SessionToken>
<Expiration>2099-01-01T00:00:00Z</Expiration></Credentials>
<AssumedRoleUser><Arn>arn:aws:sts::222222222222:assumed-role/SpawnSweepCrossAccountRole/spawn</Arn><AssumedRoleId>AROA:spawn</AssumedRoleId></AssumedRoleUser>
</AssumeRoleResult><ResponseMetadata><RequestId>1</RequestId></ResponseMetadata></AssumeRoleResponse>`)
	}))
	defer srv.Close()
	base := aws.Config{Region: "us-east-1", BaseEndpoint: aws.String(srv.URL),
		Credentials: credentials.NewStaticCredentialsProvider("AKIAOWN", "s", "")}
	c := newAWSClients(base, "111111111111", "aws")
	ctx := context.Background()

	own, err := c.configFor("111111111111", "eu-west-1").Credentials.Retrieve(ctx)
	if err != nil || own.AccessKeyID != "AKIAOWN" {
		t.Fatalf("own account: %v %v", own.AccessKeyID, err)
	}
	for range 2 {
		cross, err := c.configFor("222222222222", "eu-west-1").Credentials.Retrieve(ctx)
		if err != nil || cross.AccessKeyID != "ASIACROSS" {
			t.Fatalf("other account: %q %v", cross.AccessKeyID, err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(calls) != 1 {
		t.Fatalf("%d AssumeRole calls, want 1 (cached until near expiry)", len(calls))
	}
	got := calls[0]
	if got.Get("Action") != "AssumeRole" || got.Get("RoleArn") != "arn:aws:iam::222222222222:role/SpawnSweepCrossAccountRole" ||
		got.Get("ExternalId") != "spawn-111111111111" {
		t.Errorf("AssumeRole request %v", got)
	}
}

func TestPrepareResume(t *testing.T) {
	ctx := context.Background()
	st := newFakeStore()
	sw := &sweep{SweepID: "sw-r", Status: statusRunning, TotalParams: 5, MaxConcurrent: 2, NextToLaunch: 5,
		Alive: []aliveInstance{{Index: 4, Attempt: 1, ClientToken: "t4"}}}
	sw.Counts = counts{Succeeded: 1, Failed: 3}
	fixCounts(sw)
	if err := st.createSweep(ctx, sw); err != nil {
		t.Fatal(err)
	}
	for _, rec := range []instanceRecord{
		{SweepID: "sw-r", Index: 0, Attempt: 1, Outcome: outcomeSucceeded},
		{SweepID: "sw-r", Index: 1, Attempt: 1, Outcome: outcomeFailed},
		{SweepID: "sw-r", Index: 2, Attempt: 2, Outcome: outcomeFailed},
		{SweepID: "sw-r", Index: 3, Attempt: 1, Outcome: outcomeFailed},
		{SweepID: "sw-r", Index: 4, Attempt: 1},
	} {
		if err := st.putInstance(ctx, &rec); err != nil {
			t.Fatal(err)
		}
	}
	got, queued, err := prepareResume(ctx, st, "sw-r", true)
	if err != nil || queued != 3 {
		t.Fatalf("queued %d, err %v", queued, err)
	}
	want := []retryItem{{1, 2}, {2, 3}, {3, 2}}
	if !slices.Equal(got.RetryQueue, want) || got.Counts.Failed != 0 || got.Counts.Pending != 3 || got.Counts.Running != 1 {
		t.Errorf("retry queue %v, counts %+v", got.RetryQueue, got.Counts)
	}
	// A second --retry-failed before the orchestrator relaunched them queues nothing twice.
	if _, queued, err := prepareResume(ctx, st, "sw-r", true); err != nil || queued != 0 {
		t.Errorf("second retry-failed: queued %d, err %v", queued, err)
	}
	for _, status := range []string{statusCompleted, statusCancelled} {
		cur, _ := st.loadSweep(ctx, "sw-r")
		cur.Status = status
		if err := st.saveSweep(ctx, cur); err != nil {
			t.Fatal(err)
		}
		if _, _, err := prepareResume(ctx, st, "sw-r", false); !errors.Is(err, errNothingToResume) {
			t.Errorf("%s: err %v (exit %d), want a usage error", status, err, exitCode(err))
		}
	}
	if _, _, err := prepareResume(ctx, st, "nope", false); !errors.Is(err, errSweepNotFound) {
		t.Errorf("unknown sweep: exit %d", exitCode(err))
	}
}

func TestWaitSweep(t *testing.T) {
	st := newFakeStore()
	ctx := context.Background()
	if err := st.createSweep(ctx, &sweep{SweepID: "sw-w", Status: statusRunning}); err != nil {
		t.Fatal(err)
	}
	c := &flipClock{st: st, id: "sw-w"}
	sw, err := waitSweep(ctx, st, "sw-w", 5*time.Second, c)
	if err != nil || sw.Status != statusCompleted || c.naps != 3 || c.slept != 15*time.Second {
		t.Fatalf("waitSweep: %v, %v after %d naps (%s)", sw, err, c.naps, c.slept)
	}
	if _, err := waitSweep(ctx, st, "sw-none", time.Second, c); !errors.Is(err, errSweepNotFound) {
		t.Errorf("unknown sweep: %v", err)
	}
}

// TestResolveAMIsStable: items without an AMI get the current Amazon Linux image once per
// region and type; the sweep keeps it, so a newer image published mid-sweep does not
// change a retried launch's parameters (its ClientToken would no longer match them).
func TestResolveAMIsStable(t *testing.T) {
	var mu sync.Mutex
	current, calls := "ami-11111111", 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		fmt.Fprintf(w, `{"Parameter": {"Name": "al2023", "Type": "String", "Value": %q}}`, current)
	}))
	defer srv.Close()
	d := &engineDeps{cfg: aws.Config{Region: "us-east-1", BaseEndpoint: aws.String(srv.URL),
		Credentials: credentials.NewStaticCredentialsProvider("a", "b", "")}}
	sw := &sweep{SweepID: "sw-ami", Region: "us-east-1"}
	items := []item{{Index: 0, InstanceType: "t3.micro"}, {Index: 1, InstanceType: "t3.micro"},
		{Index: 2, InstanceType: "t3.micro", AMI: "ami-99999999"}, {Index: 3, InstanceType: "t3.micro", Region: "eu-west-1"}}
	ctx := context.Background()
	if err := d.resolveAMIs(ctx, sw, items); err != nil {
		t.Fatal(err)
	}
	if items[0].AMI != "ami-11111111" || items[1].AMI != "ami-11111111" || items[2].AMI != "ami-99999999" || calls != 2 {
		t.Fatalf("items %+v after %d lookups", items, calls)
	}
	if sw.AMIs["us-east-1/t3.micro"] != "ami-11111111" || sw.AMIs["eu-west-1/t3.micro"] != "ami-11111111" {
		t.Fatalf("sweep keeps %v", sw.AMIs)
	}
	mu.Lock()
	current = "ami-22222222"
	mu.Unlock()
	again := []item{{Index: 0, InstanceType: "t3.micro"}}
	if err := d.resolveAMIs(ctx, sw, again); err != nil || again[0].AMI != "ami-11111111" {
		t.Errorf("a later invocation resolved %q (%v), want the sweep's ami-11111111", again[0].AMI, err)
	}
}
