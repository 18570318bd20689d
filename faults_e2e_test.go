package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	lambdasvc "github.com/aws/aws-sdk-go-v2/service/lambda"
)

// TestFaultsEndToEnd runs many small sweeps of the real binary on kumo, each with its own
// tables, bucket, function and fault proxy between the function and kumo, while a
// workload simulator ends the instances, the function process is killed and restarted,
// events are delivered twice and some sweeps are cancelled. It checks the orchestrator's
// promises continuously and at the end of every run.
//
//	SPAWN_FAULT_SEED=N      run only the run with seed N (every failure names its seed)
//	SPAWN_FAULT_RUNS=N      how many runs (default 50), seeds from a random base
//	SPAWN_FAULT_PARALLEL=N  runs at a time (default 10)
func TestFaultsEndToEnd(t *testing.T) {
	a := newTestAWS(t)
	a.requireRuntimeAPI(t)
	var seeds []uint64
	if s := os.Getenv("SPAWN_FAULT_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("SPAWN_FAULT_SEED %q is not a number", s)
		}
		seeds = []uint64{n}
	} else {
		runs := envInt(t, "SPAWN_FAULT_RUNS", 50)
		base := rand.Uint64() % 1_000_000_000
		for i := range runs {
			seeds = append(seeds, base+uint64(i))
		}
		t.Logf("%d runs, seeds %d..%d", runs, base, base+uint64(runs)-1)
	}
	parallel := envInt(t, "SPAWN_FAULT_PARALLEL", 10)
	// The CLI runs in this process, for every run at once: only what all runs share is
	// in the environment, everything else is a flag.
	for k, v := range cliTestEnv() {
		t.Setenv(k, v)
	}

	start := time.Now()
	var total faultTotals
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	for _, seed := range seeds {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			// Subtests that are not parallel may run from several goroutines at once;
			// each gets its own T, so a Fatal ends only its run.
			t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
				r := newFaultRun(t, a, seed)
				r.execute()
				total.add(r)
			})
		}()
	}
	wg.Wait()
	total.report(t, len(seeds), time.Since(start))
}

func envInt(t *testing.T, name string, def int) int {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		t.Fatalf("%s %q is not a positive number", name, s)
	}
	return n
}

// faultPlan is what a seed decides before the run starts; only the timing of the
// machine varies between two runs of one seed.
type faultPlan struct {
	items, maxConc int
	poll           time.Duration
	fnTimeout      int32 // seconds
	rate           float64
	kills          []time.Duration // after launch
	dups           []dupPlan
	cancelAt       time.Duration // after launch; 0: no cancel
	failRate       float64       // fraction of workloads that exit 1
}

type dupPlan struct {
	at   time.Duration
	sync bool // a synchronous invoke runs beside the holder (two runtime processes poll)
}

func newFaultPlan(rng *rand.Rand) faultPlan {
	p := faultPlan{
		items:   4 + rng.IntN(5),
		maxConc: 1 + rng.IntN(3),
		// The CLI refuses a poll interval under 1 s.
		poll:      time.Second + time.Duration(rng.IntN(4))*100*time.Millisecond,
		fnTimeout: int32(3 + rng.IntN(4)),
		rate:      0.05 + 0.15*rng.Float64(),
		failRate:  0.2,
	}
	between := func(lo, hi time.Duration) time.Duration { return lo + time.Duration(rng.Int64N(int64(hi-lo))) }
	// A killed holder's lease blocks the sweep until it expires (60 s): at most two.
	switch k := rng.IntN(20); {
	case k < 9:
	case k < 17:
		p.kills = []time.Duration{between(500*time.Millisecond, 10*time.Second)}
	default:
		first := between(500*time.Millisecond, 6*time.Second)
		// Apart enough that a replacement process polls before the next kill.
		p.kills = []time.Duration{first, first + between(3*time.Second, 8*time.Second)}
	}
	for range 1 + rng.IntN(3) {
		p.dups = append(p.dups, dupPlan{at: between(300*time.Millisecond, 10*time.Second), sync: rng.IntN(2) == 0})
	}
	if rng.IntN(10) < 3 {
		p.cancelAt = between(500*time.Millisecond, 12*time.Second)
	}
	return p
}

func (p faultPlan) String() string {
	return fmt.Sprintf("%d items, max_concurrent %d, poll %s, function timeout %ds, fault rate %.0f%%, kills at %v, duplicates %v, cancel at %v",
		p.items, p.maxConc, p.poll, p.fnTimeout, 100*p.rate, p.kills, p.dups, p.cancelAt)
}

func (d dupPlan) String() string {
	if d.sync {
		return "sync@" + d.at.String()
	}
	return "event@" + d.at.String()
}

// simInstance is one instance a run created, as the harness saw it.
type simInstance struct {
	id             string
	index, attempt int
	created        time.Time
	endAt          time.Time // when the workload reports and terminates it
	exitCode       int
	ended          bool // the workload reported and terminated it
}

// faultRun is one randomised run: its resources, its chaos, and what it observed.
type faultRun struct {
	t     *testing.T
	seed  uint64
	a     *testAWS
	plan  faultPlan
	proxy *faultProxy
	ec2   *ec2.Client
	lc    *lambdasvc.Client
	store *dynamoStore

	fn, table, itable, bucket string
	procEnv                   []string

	mu         sync.Mutex
	rng        *rand.Rand // workload draws, after the plan
	sweepID    string
	insts      map[string]*simInstance
	byPair     map[[2]int][]string
	procs      []*fnProc
	violations []string
	terminal   string    // first terminal status the poller saw
	cancelled  time.Time // when a cancel that answered CANCELLED returned
	maxAlive   int
	lastSweep  *sweep

	kills, asyncDups, syncDups, cancels int
	syncRetried, cancelRepeats          int
	cancelOutcome                       string
	syncRunning                         sync.WaitGroup
}

func (r *faultRun) prefix() string {
	return fmt.Sprintf("seed %d (rerun just it: SPAWN_FAULT_SEED=%d go test -count=1 -run TestFaultsEndToEnd .)", r.seed, r.seed)
}

// fatalf ends this run; the message starts with the seed.
func (r *faultRun) fatalf(format string, args ...any) {
	r.t.Helper()
	r.t.Fatalf("%s: "+format+"\nplan: %s", append(append([]any{r.prefix()}, args...), r.plan)...)
}

// violate records a broken invariant; it is safe from any goroutine.
func (r *faultRun) violate(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	r.mu.Lock()
	r.violations = append(r.violations, fmt.Sprintf("%s: %s", time.Now().Format("15:04:05.000"), msg))
	r.mu.Unlock()
}

func newFaultRun(t *testing.T, a *testAWS, seed uint64) *faultRun {
	rng := rand.New(rand.NewPCG(seed, seed^0xfa017))
	r := &faultRun{
		t: t, seed: seed, a: a, plan: newFaultPlan(rng), rng: rng,
		ec2: ec2.NewFromConfig(a.cfg), lc: lambdasvc.NewFromConfig(a.cfg),
		insts: map[string]*simInstance{}, byPair: map[[2]int][]string{},
	}
	ctx := context.Background()
	r.store = newTestStore(t)
	r.table, r.itable = r.store.table, r.store.instancesTable
	r.bucket, r.fn = createTestBucket(t, a, "spawn-faults"), uniqueName("ffn")
	if err := createFunction(ctx, r.lc, r.fn, r.plan.fnTimeout); err != nil {
		r.fatalf("CreateFunction %s: %v", r.fn, err)
	}
	r.proxy = newFaultProxy(a.backend.endpoint, r.plan.rate, seed)
	// The SDK gives up on an attempt after 1 s; the proxy delays "slow" answers past it.
	r.proxy.delay = 1500 * time.Millisecond
	r.proxy.onRunInstances = r.onRunInstances
	t.Cleanup(r.proxy.Close)

	// The runtime API is kumo's own; every AWS call of the function crosses the proxy.
	var err error
	r.procEnv, err = functionEnv(a.backend.endpoint, r.proxy.URL(), r.fn, map[string]string{
		"SPAWN_AWS_TIMEOUT": "1s",
		"SPAWN_TABLE":       r.table, "SPAWN_INSTANCES_TABLE": r.itable, "SPAWN_BUCKET": r.bucket,
	})
	if err != nil {
		r.fatalf("%v", err)
	}
	t.Cleanup(r.stopProcs)
	return r
}

// fnProc is one function process: this test binary running main() on kumo's runtime API.
type fnProc struct {
	cmd    *exec.Cmd
	logs   syncBuffer
	done   chan struct{}
	killed atomic.Bool
}

func (r *faultRun) startProc() error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	p := &fnProc{cmd: exec.Command(exe), done: make(chan struct{})}
	p.cmd.Env = r.procEnv
	p.cmd.Stdout = &p.logs
	p.cmd.Stderr = &p.logs
	if err := p.cmd.Start(); err != nil {
		return fmt.Errorf("starting the function process: %w", err)
	}
	go func() {
		_ = p.cmd.Wait()
		close(p.done)
		if !p.killed.Load() {
			r.violate("the function process exited by itself (%v); it printed:\n%s", p.cmd.ProcessState, tail(p.logs.String(), 3000))
		}
	}()
	r.mu.Lock()
	r.procs = append(r.procs, p)
	r.mu.Unlock()
	return nil
}

func (p *fnProc) kill() {
	if p.killed.Swap(true) {
		return
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

func (r *faultRun) stopProcs() {
	r.mu.Lock()
	procs := append([]*fnProc(nil), r.procs...)
	r.mu.Unlock()
	for _, p := range procs {
		p.kill()
	}
}

// liveProcs are the function processes not killed.
func (r *faultRun) liveProcs() []*fnProc {
	r.mu.Lock()
	defer r.mu.Unlock()
	var live []*fnProc
	for _, p := range r.procs {
		if !p.killed.Load() {
			live = append(live, p)
		}
	}
	return live
}

func (r *faultRun) functionLogs() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	for i, p := range r.procs {
		fmt.Fprintf(&b, "--- process %d (killed %v)\n%s", i, p.killed.Load(), p.logs.String())
	}
	return b.String()
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

// cli runs the spawn CLI in this process with the run's deployment flags; endpoint is
// kumo (direct) or the proxy's fault-free side.
func (r *faultRun) cli(endpoint string, args ...string) (string, string, int) {
	args = append(args, deploymentFlags(endpoint, r.table, r.itable, r.bucket, r.fn)...)
	var out, errb syncBuffer
	err := runCLI(context.Background(), args, strings.NewReader(""), &out, &errb)
	if err != nil && err.Error() != "" {
		fmt.Fprintf(&errb, "spawn: %v\n", err)
	}
	return out.String(), errb.String(), exitCode(err)
}

// workloadStep ends the instances whose time has come, as the instance's own script
// does: report the exit code by tag, then terminate (straight to kumo).
func (r *faultRun) workloadStep(now time.Time) {
	r.mu.Lock()
	var due []*simInstance
	for _, in := range r.insts {
		if !in.ended && !now.Before(in.endAt) {
			due = append(due, in)
		}
	}
	r.mu.Unlock()
	ctx := context.Background()
	for _, in := range due {
		if _, err := r.ec2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{in.id},
			Tags: []ec2types.Tag{{Key: aws.String(tagExitCode), Value: aws.String(strconv.Itoa(in.exitCode))}}}); err != nil {
			continue
		}
		if _, err := r.ec2.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{in.id}}); err != nil {
			continue
		}
		r.mu.Lock()
		in.ended = true
		r.mu.Unlock()
	}
}

// cancel runs `spawn cancel` against the proxy's fault-free side: the CLI talks to AWS
// directly, but it shares EC2's memory of client tokens with the function's path (kumo
// has none, and a cancel repeats a reserved launch to find its instance).
func (r *faultRun) cancel() {
	out, errOut, code := r.cli(r.proxy.CleanURL(), "cancel", "--sweep-id", r.sweepID, "--output", "json")
	// The cancel is recorded but a new holder took the lease while the CLI waited for
	// the old one to expire: do as the message says.
	for range 3 {
		if code == 0 || !strings.Contains(errOut, "has not stopped yet") {
			break
		}
		r.mu.Lock()
		r.cancelRepeats++
		r.mu.Unlock()
		out, errOut, code = r.cli(r.proxy.CleanURL(), "cancel", "--sweep-id", r.sweepID, "--output", "json")
	}
	var doc cancelDoc
	if code != 0 || json.Unmarshal([]byte(out), &doc) != nil {
		r.violate("spawn cancel: exit %d, stdout %q, stderr %q", code, out, errOut)
		r.mu.Lock()
		r.cancelOutcome = "error"
		r.mu.Unlock()
		return
	}
	r.mu.Lock()
	r.cancelOutcome = doc.Status
	if doc.Already {
		r.cancelOutcome += " already"
	}
	if doc.Status == statusCancelled {
		r.cancelled = time.Now()
	}
	r.mu.Unlock()
	if doc.Status != statusCancelled && doc.Status != statusCompleted {
		r.violate("spawn cancel answered status %s", doc.Status)
	}
	if alive, err := r.aliveOf(r.createdIDs()); err != nil {
		r.violate("checking instances after cancel: %v", err)
	} else if len(alive) > 0 {
		r.violate("instances alive after `spawn cancel` returned %s: %v", doc.Status, alive)
	}
	sw, err := r.store.loadSweep(context.Background(), r.sweepID)
	if err != nil {
		r.violate("reading the record after cancel: %v", err)
	} else if sw.Status != doc.Status {
		r.violate("cancel answered %s but the record says %s", doc.Status, sw.Status)
	}
}

func (r *faultRun) kill() {
	live := r.liveProcs()
	if len(live) == 0 {
		return
	}
	r.mu.Lock()
	victim := live[r.rng.IntN(len(live))]
	r.kills++
	r.mu.Unlock()
	victim.kill()
	if err := r.startProc(); err != nil {
		r.violate("restarting the function process: %v", err)
	}
}

func (r *faultRun) duplicate(sync bool) {
	if !sync {
		r.mu.Lock()
		r.asyncDups++
		r.mu.Unlock()
		if err := invokeEvent(context.Background(), r.lc, r.fn, orchestratorEvent{SweepID: r.sweepID}); err != nil {
			r.violate("duplicate event: %v", err)
		}
		return
	}
	r.mu.Lock()
	r.syncDups++
	r.mu.Unlock()
	r.syncRunning.Add(1)
	go func() {
		defer r.syncRunning.Done()
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(r.plan.fnTimeout+30)*time.Second)
		defer cancel()
		payload, _ := json.Marshal(orchestratorEvent{SweepID: r.sweepID})
		out, err := r.lc.Invoke(ctx, &lambdasvc.InvokeInput{FunctionName: aws.String(r.fn), Payload: payload})
		if err == nil && out.FunctionError == nil {
			return
		}
		// The duplicate stands for an event delivered twice, and Lambda retries an event
		// whose invocation failed; a synchronous invoke is not retried, so the harness
		// does it (else a duplicate that took over and then failed would strand the sweep,
		// which no real delivery could).
		r.mu.Lock()
		r.syncRetried++
		r.mu.Unlock()
		if err := invokeEvent(context.Background(), r.lc, r.fn, orchestratorEvent{SweepID: r.sweepID}); err != nil {
			r.violate("re-sending a failed duplicate as an event: %v", err)
		}
	}()
}

// execute is the run: launch, chaos on schedule, then the checks.
func (r *faultRun) execute() {
	// Two runtime processes: kumo hands synchronous invokes to whichever polls, so a
	// duplicate can run beside the holder.
	for range 2 {
		if err := r.startProc(); err != nil {
			r.fatalf("%v", err)
		}
	}
	if err := functionReady(r.lc, r.fn, 60*time.Second); err != nil {
		r.fatalf("%v", err)
	}
	out, errOut, code := r.cli(r.a.backend.endpoint, "launch", "--param-file", seedParamFile(r.t, sleepDefaults, r.plan.items),
		"--max-concurrent", strconv.Itoa(r.plan.maxConc), "--poll-interval", r.plan.poll.String(), "--no-ttl", "--output", "json")
	var doc launchDoc
	if code != 0 || json.Unmarshal([]byte(out), &doc) != nil || doc.SweepID == "" {
		r.fatalf("launch: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	r.mu.Lock()
	r.sweepID = doc.SweepID
	r.mu.Unlock()
	launched := time.Now()

	stopPoll, pollDone := make(chan struct{}), make(chan struct{})
	go r.poll(stopPoll, pollDone)

	kills := append([]time.Duration(nil), r.plan.kills...)
	dups := append([]dupPlan(nil), r.plan.dups...)
	cancelAt := r.plan.cancelAt
	var cancelDone chan struct{}
	// A holder whose lease release fails (every retry faulted) blocks the sweep until
	// its lease expires (60 s), as does a killed one.
	limit := 140*time.Second + time.Duration(len(kills))*65*time.Second
	if cancelAt > 0 {
		limit += 65 * time.Second // a cancel waits out the lease of a killed holder
	}
	var quietUntil time.Time
	for {
		now := time.Now()
		since := now.Sub(launched)
		r.mu.Lock()
		terminal := r.terminal
		r.mu.Unlock()
		r.workloadStep(now)
		if terminal == "" {
			for len(kills) > 0 && since >= kills[0] {
				kills = kills[1:]
				r.kill()
			}
		} else {
			kills = nil // killing an idle process after the end proves nothing
		}
		for len(dups) > 0 && (since >= dups[0].at || terminal != "") {
			r.duplicate(dups[0].sync)
			dups = dups[1:]
		}
		if cancelAt > 0 && cancelDone == nil && (since >= cancelAt || terminal != "") {
			r.mu.Lock()
			r.cancels++
			r.mu.Unlock()
			cancelDone = make(chan struct{})
			go func() { defer close(cancelDone); r.cancel() }()
		}
		cancelFinished := cancelDone == nil || isClosed(cancelDone)
		if terminal != "" && len(dups) == 0 && (cancelAt == 0 || cancelFinished) {
			// Long enough for a late duplicate or a re-invocation to do harm, if it could.
			if quietUntil.IsZero() {
				quietUntil = now.Add(time.Duration(r.plan.fnTimeout)*time.Second + time.Second)
			} else if now.After(quietUntil) {
				break
			}
		}
		if since > limit {
			r.mu.Lock()
			sw := r.lastSweep
			r.mu.Unlock()
			r.violate("the sweep did not end within %s: %s", limit, describeSweep(sw))
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if cancelDone != nil {
		<-cancelDone
	}
	r.syncRunning.Wait()
	close(stopPoll)
	<-pollDone
	r.finalChecks()
	r.stopProcs()
	r.report()
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// faultTotals sums what the runs did, for the test's closing line.
type faultTotals struct {
	mu                                               sync.Mutex
	runs, requests, kills, asyncDups, syncDups       int
	cancels, cancelledRuns, handoffs, held, launches int
	invocations, staleHandOns                        int
	syncRetried, cancelRepeats                       int
	injected                                         map[string]int
}

func (f *faultTotals) add(r *faultRun) {
	requests, injected := r.proxy.counts()
	logs := r.functionLogs()
	f.mu.Lock()
	defer f.mu.Unlock()
	r.mu.Lock()
	defer r.mu.Unlock()
	if f.injected == nil {
		f.injected = map[string]int{}
	}
	f.runs++
	f.requests += requests
	for k, v := range injected {
		f.injected[k] += v
	}
	f.kills += r.kills
	f.asyncDups += r.asyncDups
	f.syncDups += r.syncDups
	f.cancels += r.cancels
	f.syncRetried += r.syncRetried
	f.cancelRepeats += r.cancelRepeats
	if !r.cancelled.IsZero() {
		f.cancelledRuns++
	}
	f.launches += len(r.insts)
	f.handoffs += strings.Count(logs, "sweep handed on")
	f.held += strings.Count(logs, "another orchestrator holds the lease")
	f.invocations += strings.Count(logs, "invocation started")
	f.staleHandOns += strings.Count(logs, "its lease outlives this invocation")
}

func (f *faultTotals) report(t *testing.T, runs int, wall time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	kinds := sortedKeys(f.injected)
	var parts []string
	sum := 0
	for _, k := range kinds {
		parts = append(parts, fmt.Sprintf("%s %d", k, f.injected[k]))
		sum += f.injected[k]
	}
	t.Logf("%d runs (%d finished) in %s: %d instances launched; %d AWS requests through the proxies, %d faults injected (%s); "+
		"%d process kills, %d duplicate events, %d duplicate sync invokes, %d cancels (%d ended CANCELLED); %d invocations, %d hand-offs, "+
		"%d found the lease held, %d handed on at once behind a stale lease; %d failed sync duplicates re-sent as events, %d cancels repeated as told",
		runs, f.runs, wall.Round(time.Second), f.launches, f.requests, sum, strings.Join(parts, ", "),
		f.kills, f.asyncDups, f.syncDups, f.cancels, f.cancelledRuns, f.invocations, f.handoffs, f.held, f.staleHandOns, f.syncRetried, f.cancelRepeats)
}
