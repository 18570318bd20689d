package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
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
	"github.com/aws/aws-sdk-go-v2/service/s3"
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

	// What EC2 and the hosts do (faultproxy_ec2_test.go).
	forgetAfter         time.Duration // EC2 forgets a terminated instance this long after it ended
	region2             string        // a second region some items name ("": none)
	region2Items        []int
	refuseAt, refuseFor time.Duration // region2 refuses every EC2 call in this window after launch
	clockOffset         time.Duration // the CLI host's clock is off by this much
	fallback            bool          // items list t3.large then t3.micro, and EC2 refuses t3.large for capacity
}

// The lags of EC2's eventual consistency in the fault runs: seconds, as on AWS, within
// the consistency window the engine is given (testConsistencyWindow).
var (
	testVisibleLag = [2]time.Duration{time.Second, 3 * time.Second}
	testTagLag     = [2]time.Duration{time.Second, 3 * time.Second}
)

// What the simulated instances do besides exiting 0 or 1: the fraction whose spawn:exit-code
// tag write is lost (only the exit record in S3 tells), and the fraction that die with no
// report at all.
const (
	tagLostRate  = 0.2
	noReportRate = 0.1
)

type dupPlan struct {
	at   time.Duration
	sync bool // a synchronous invoke runs beside the holder (two runtime processes poll)
}

func newFaultPlan(rng *rand.Rand) faultPlan {
	p := faultPlan{
		items:   4 + rng.IntN(5),
		maxConc: 1 + rng.IntN(3),
		// The CLI refuses a poll interval under 1 s.
		poll: time.Second + time.Duration(rng.IntN(4))*100*time.Millisecond,
		// 5–8 s: far below the 20 s the README promises progress at, and enough for an
		// invocation's fixed round trips (lease, lease item, hand-on) under -race here.
		fnTimeout: int32(5 + rng.IntN(4)),
		rate:      0.05 + 0.15*rng.Float64(),
		failRate:  0.2,
	}
	// A killed holder's lease blocks the sweep until it expires (60 s): at most two.
	switch k := rng.IntN(20); {
	case k < 9:
	case k < 17:
		p.kills = []time.Duration{between(rng, 500*time.Millisecond, 10*time.Second)}
	default:
		first := between(rng, 500*time.Millisecond, 6*time.Second)
		// Apart enough that a replacement process polls before the next kill.
		p.kills = []time.Duration{first, first + between(rng, 3*time.Second, 8*time.Second)}
	}
	for range 1 + rng.IntN(3) {
		p.dups = append(p.dups, dupPlan{at: between(rng, 300*time.Millisecond, 10*time.Second), sync: rng.IntN(2) == 0})
	}
	if rng.IntN(10) < 3 {
		p.cancelAt = between(rng, 500*time.Millisecond, 12*time.Second)
	}
	p.planEC2(rng)
	p.fallback = rng.IntN(3) == 0
	return p
}

// planEC2 draws what EC2 and the CLI host do in this run.
func (p *faultPlan) planEC2(rng *rand.Rand) {
	p.clockOffset = between(rng, -30*time.Minute, 30*time.Minute)
	// AWS forgets a terminated instance after about an hour. Here it is seconds, less
	// than the longest the engine can go without looking (a killed holder's 60 s lease):
	// an instance may end and be forgotten before any engine saw it end, as on AWS when a
	// sweep's orchestrator stopped for over an hour (a --no-detach run resumed later).
	p.forgetAfter = between(rng, 15*time.Second, 30*time.Second)
	if rng.IntN(10) >= 3 {
		return
	}
	p.region2 = "eu-west-1"
	for i := range p.items {
		if rng.IntN(3) == 0 {
			p.region2Items = append(p.region2Items, i)
		}
	}
	if len(p.region2Items) == 0 {
		p.region2Items = []int{rng.IntN(p.items)}
	}
	p.refuseAt = between(rng, time.Second, 8*time.Second)
	// Longer than a cancel's own attempts at the region (about 5 s), so that a cancel
	// early in the window gives up and names it.
	p.refuseFor = between(rng, 8*time.Second, 20*time.Second)
	if p.cancelAt > 0 && rng.IntN(2) == 0 {
		p.cancelAt = p.refuseAt + between(rng, 300*time.Millisecond, 2*time.Second)
	}
	// The engine cannot look at the region's instances while it refuses.
	p.forgetAfter = max(p.forgetAfter, p.refuseFor+10*time.Second)
}

func between(rng *rand.Rand, lo, hi time.Duration) time.Duration {
	return lo + time.Duration(rng.Int64N(int64(hi-lo)))
}

func (p faultPlan) String() string {
	s := fmt.Sprintf("%d items, max_concurrent %d, poll %s, function timeout %ds, fault rate %.0f%%, kills at %v, duplicates %v, cancel at %v, "+
		"EC2 forgets after %s, CLI clock off by %s",
		p.items, p.maxConc, p.poll, p.fnTimeout, 100*p.rate, p.kills, p.dups, p.cancelAt, p.forgetAfter, p.clockOffset.Round(time.Second))
	if p.region2 != "" {
		s += fmt.Sprintf(", items %v in %s, which refuses EC2 calls from %s for %s", p.region2Items, p.region2, p.refuseAt, p.refuseFor)
	}
	if p.fallback {
		s += ", t3.large refused for capacity (items fall back to t3.micro)"
	}
	return s
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
	region         string
	index, attempt int
	created        time.Time
	visibleAt      time.Time // when EC2 first shows it
	endAt          time.Time // when the workload ends (after it booted: once EC2 shows it)
	exitCode       int
	fate           string // "" (reports by record and tag), fateTagLost, fateNoReport
	ended          bool   // the workload ended and the instance powered off
	recorded       bool   // its exit record is in S3
	tagged         bool   // its spawn:exit-code tag write was accepted
	killed         bool   // it was terminated before its workload ended (no report)
}

const (
	fateTagLost  = "tag lost"  // the exit record is written, the tag never is
	fateNoReport = "no report" // the instance dies with no report at all
)

// reported: the instance left its exit code somewhere the engine may read it.
func (in *simInstance) reported() bool { return in.recorded || in.tagged }

// faultRun is one randomised run: its resources, its chaos, and what it observed.
type faultRun struct {
	t     *testing.T
	seed  uint64
	a     *testAWS
	plan  faultPlan
	proxy *faultProxy
	ec2   *ec2.Client // kumo itself: what is really there
	s3    *s3.Client  // kumo itself: the instances write their exit records straight to S3
	lc    *lambdasvc.Client
	store *dynamoStore

	fn, table, itable, bucket string
	procEnv                   []string

	mu          sync.Mutex
	rng         *rand.Rand // workload draws, after the plan
	sweepID     string
	launchedAt  time.Time
	insts       map[string]*simInstance
	byPair      map[[2]int][]string
	instanceEC2 map[string]*ec2.Client // region → the instances' own EC2 client (the proxy's clean side)
	procs       []*fnProc
	violations  []string
	terminal    string    // first terminal status the poller saw
	cancelled   time.Time // when a cancel that answered CANCELLED returned
	cancelSaid  time.Time // when a cancel first returned having recorded the request (exit 0, or 1 naming what it could not reach)
	maxAlive    int
	lastSweep   *sweep

	kills, asyncDups, syncDups, cancels int
	syncRetried, cancelRepeats          int
	cancelUnreached                     map[string]int  // region a cancel could not reach → exits 1 naming it
	quotaWaits                          map[string]bool // "index code": the record showed the item waiting for it
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
		ec2: ec2.NewFromConfig(a.cfg), s3: newS3Client(a.cfg, ""), lc: lambdasvc.NewFromConfig(a.cfg),
		insts: map[string]*simInstance{}, byPair: map[[2]int][]string{}, instanceEC2: map[string]*ec2.Client{},
		cancelUnreached: map[string]int{}, quotaWaits: map[string]bool{},
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
	r.proxy.ec2 = ec2Settings{visibleLag: testVisibleLag, tagLag: testTagLag, forgetAfter: r.plan.forgetAfter}
	if r.plan.fallback {
		r.proxy.ec2.refuseTypes = map[string]string{"t3.large": "InsufficientInstanceCapacity"}
	}
	r.proxy.onRunInstances = r.onRunInstances
	t.Cleanup(r.proxy.Close)

	// The runtime API is kumo's own; every AWS call of the function crosses the proxy.
	// The function gets the settings the CLI gets (Lambda would, from its configuration).
	env := map[string]string{
		"SPAWN_AWS_TIMEOUT": "1s",
		"SPAWN_TABLE":       r.table, "SPAWN_INSTANCES_TABLE": r.itable, "SPAWN_BUCKET": r.bucket,
	}
	for k, v := range cliTestEnv() {
		env[k] = v
	}
	var err error
	r.procEnv, err = functionEnv(a.backend.endpoint, r.proxy.URL(), r.fn, env)
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

// offsetClock is a host clock that is off by d: the CLI's host in a fault run. Its
// sleeps are real.
type offsetClock struct{ d time.Duration }

func (c offsetClock) Now() time.Time { return time.Now().Add(c.d) }

func (c offsetClock) Sleep(ctx context.Context, d time.Duration) error {
	return realClock{}.Sleep(ctx, d)
}

// cli runs the spawn CLI in this process with the run's deployment flags, on a host
// whose clock is off by the plan's offset; endpoint is kumo (direct) or the proxy's
// fault-free side.
func (r *faultRun) cli(endpoint string, args ...string) (string, string, int) {
	args = append(args, deploymentFlags(endpoint, r.table, r.itable, r.bucket, r.fn)...)
	var out, errb syncBuffer
	root := newRootConfig(strings.NewReader(""), &out, &errb)
	root.clock = offsetClock{r.plan.clockOffset}
	err := root.run(context.Background(), args)
	if err != nil && err.Error() != "" {
		fmt.Fprintf(&errb, "spawn: %v\n", err)
	}
	return out.String(), errb.String(), exitCode(err)
}

// workloadStep ends the instances whose time has come, as the user-data script does:
// write the exit record to S3 under the instance's aws:userid, tag spawn:exit-code
// (through EC2 as it really is: the tag shows seconds late), and power off. Some
// instances lose the tag write (only the record tells), some die with no report.
func (r *faultRun) workloadStep(now time.Time) {
	r.mu.Lock()
	var due []*simInstance
	for _, in := range r.insts {
		if !in.ended && !now.Before(in.endAt) {
			due = append(due, in)
		}
	}
	r.mu.Unlock()
	for _, in := range due {
		r.endWorkload(in)
	}
}

// faultRunRole is the role id in the aws:userid of the simulated instances.
const faultRunRole = "AROAFAULTRUN"

// endWorkload does what the instance's script does when its command has exited; a call
// that fails is made again next step, as the script retries.
func (r *faultRun) endWorkload(in *simInstance) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r.mu.Lock()
	snap := *in
	r.mu.Unlock()
	if !snap.recorded && !snap.killed {
		// An instance already terminated (by a cancel, say) runs no script at all.
		if alive, err := r.aliveOf([]string{in.id}); err != nil {
			return
		} else if len(alive) == 0 {
			r.mu.Lock()
			in.killed, in.ended = true, true
			r.mu.Unlock()
			return
		}
	}
	if snap.fate != fateNoReport && !snap.recorded {
		body := fmt.Sprintf(`{"exit_code": %d, "ran_seconds": %.1f}`, snap.exitCode, time.Since(snap.created).Seconds())
		key := exitReportKey(r.sweepID, snap.index, snap.attempt, faultRunRole+":"+snap.id)
		if _, err := r.s3.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(r.bucket), Key: aws.String(key),
			Body: strings.NewReader(body)}); err != nil {
			return
		}
		r.mu.Lock()
		in.recorded = true
		r.mu.Unlock()
	}
	if snap.fate == "" && !snap.tagged {
		_, err := r.instanceClient(snap.region).CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{snap.id},
			Tags: []ec2types.Tag{{Key: aws.String(tagExitCode), Value: aws.String(strconv.Itoa(snap.exitCode))}}})
		switch {
		case apiErrorCode(err) == "UnauthorizedOperation":
			// The region refuses the instance's calls too: the script gives up on the tag
			// (the record in S3 still tells).
		case err != nil:
			return
		default:
			r.mu.Lock()
			in.tagged = true
			r.mu.Unlock()
		}
	}
	// Power off: the instance shuts itself down (shutdown behaviour terminate), which no
	// region's API refuses; EC2 shows it terminated from now on.
	if _, err := r.ec2.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{snap.id}}); err != nil {
		return
	}
	r.proxy.noteTerminated([]string{snap.id}, r.proxy.now())
	r.mu.Lock()
	in.ended = true
	r.mu.Unlock()
}

// instanceClient is the EC2 client of the instances in region: EC2 as it really is
// (the proxy's clean side), signed for the instance's own region.
func (r *faultRun) instanceClient(region string) *ec2.Client {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c, ok := r.instanceEC2[region]; ok {
		return c
	}
	cfg := r.a.cfg.Copy()
	cfg.Region = region
	cfg.BaseEndpoint = aws.String(r.proxy.CleanURL())
	c := ec2.NewFromConfig(cfg)
	r.instanceEC2[region] = c
	return c
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
	r.start()
	stopPoll, pollDone := make(chan struct{}), make(chan struct{})
	go r.poll(stopPoll, pollDone)
	if cancelDone := r.chaos(); cancelDone != nil {
		<-cancelDone
	}
	r.syncRunning.Wait()
	close(stopPoll)
	<-pollDone
	r.finalChecks()
	r.stopProcs()
	r.report()
}

// start brings up the function and launches the sweep; the second region's refusal
// window is timed from the launch.
func (r *faultRun) start() {
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
	out, errOut, code := r.cli(r.a.backend.endpoint, "launch", "--param-file", r.paramFile(),
		"--max-concurrent", strconv.Itoa(r.plan.maxConc), "--poll-interval", r.plan.poll.String(), "--no-ttl", "--output", "json")
	var doc launchDoc
	if code != 0 || json.Unmarshal([]byte(out), &doc) != nil || doc.SweepID == "" {
		r.fatalf("launch: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	r.mu.Lock()
	r.sweepID = doc.SweepID
	r.launchedAt = time.Now()
	r.mu.Unlock()
	if r.plan.region2 != "" {
		from := r.launchedAt.Add(r.plan.refuseAt)
		r.proxy.refuseRegion(r.plan.region2, from, from.Add(r.plan.refuseFor))
	}
}

// paramFile is the run's sweep: items {"seed": i}, some of them in the second region.
func (r *faultRun) paramFile() string {
	items := make([]string, r.plan.items)
	for i := range items {
		items[i] = fmt.Sprintf(`"seed": %d`, i)
		if slices.Contains(r.plan.region2Items, i) {
			items[i] += fmt.Sprintf(`, "region": %q`, r.plan.region2)
		}
		if r.plan.fallback {
			items[i] += `, "instance_type": ["t3.large", "t3.micro"]`
		}
	}
	return writeParamFile(r.t, paramJSON(sleepDefaults, items...))
}

// chaos runs the workloads and the plan's kills, duplicates and cancel until the sweep
// has ended and stayed quiet, or the run's time is up. It returns the cancel's done
// channel (nil: no cancel).
func (r *faultRun) chaos() chan struct{} {
	kills := append([]time.Duration(nil), r.plan.kills...)
	dups := append([]dupPlan(nil), r.plan.dups...)
	cancelAt := r.plan.cancelAt
	var cancelDone chan struct{}
	limit := r.timeLimit()
	// A holder whose last release failed (every retry faulted) leaves the ended sweep's
	// lease to lapse: the next invocation watches it out and releases it (seed 152262618).
	var quietUntil, leaseBy time.Time
	for {
		now := time.Now()
		since := now.Sub(r.launchedAt)
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
				leaseBy = now.Add(killedLeaseWait)
			} else if now.After(quietUntil) && (!r.leaseHeld() || now.After(leaseBy)) {
				return cancelDone
			}
		}
		if terminal == "" && since > limit {
			r.mu.Lock()
			sw := r.lastSweep
			r.mu.Unlock()
			r.violate("the sweep did not end within %s: %s", limit, describeSweep(sw))
			return cancelDone
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// leaseHeld reports whether the record last read names a lease holder.
func (r *faultRun) leaseHeld() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lastSweep != nil && r.lastSweep.LeaseOwner != ""
}

// killedLeaseWait is how long a killed holder's lease (60 s) keeps the sweep from
// the next holder, with the time a new invocation takes to see it lapse.
const killedLeaseWait = 80 * time.Second

// timeLimit is how long the run may take before it counts as stuck.
func (r *faultRun) timeLimit() time.Duration {
	// A holder whose lease release fails (every retry faulted) blocks the sweep until
	// its lease expires (60 s), as does a killed one; its lease is watched to the end by
	// a chain of short invocations, each handing on what it watched (about a second of
	// each function timeout goes to starting, reading and handing on, more under -race).
	limit := 180*time.Second + time.Duration(len(r.plan.kills))*killedLeaseWait
	if r.plan.cancelAt > 0 {
		limit += 65 * time.Second // a cancel waits out the lease of a killed holder
	}
	if r.plan.fallback {
		// Each item's refused first type is settled for a consistency window first.
		limit += time.Duration((r.plan.items+r.plan.maxConc-1)/r.plan.maxConc) * 20 * time.Second
	}
	return limit + r.plan.refuseFor
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
	cancelUnreached                                  map[string]int
	// What the hosts and instances did.
	offsets, region2Runs, quotaWaits     int
	minOffset, maxOffset                 time.Duration
	recordOnly, regionLostTags, noReport int
	killedBeforeReport, tagged           int
}

func (f *faultTotals) add(r *faultRun) {
	requests, injected := r.proxy.counts()
	logs := r.functionLogs()
	f.mu.Lock()
	defer f.mu.Unlock()
	r.mu.Lock()
	defer r.mu.Unlock()
	if f.injected == nil {
		f.injected, f.cancelUnreached = map[string]int{}, map[string]int{}
	}
	f.runs++
	f.requests += requests
	for k, v := range injected {
		f.injected[k] += v
	}
	for k, v := range r.cancelUnreached {
		f.cancelUnreached[k] += v
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
	f.quotaWaits += len(r.quotaWaits)
	f.addHosts(r)
}

// addHosts counts what the run's CLI host and instances did; both locks are held.
func (f *faultTotals) addHosts(r *faultRun) {
	if f.offsets == 0 || r.plan.clockOffset < f.minOffset {
		f.minOffset = r.plan.clockOffset
	}
	if f.offsets == 0 || r.plan.clockOffset > f.maxOffset {
		f.maxOffset = r.plan.clockOffset
	}
	f.offsets++
	if r.plan.region2 != "" {
		f.region2Runs++
	}
	for _, in := range r.insts {
		switch {
		case in.killed:
			f.killedBeforeReport++
		case in.tagged:
			f.tagged++
		case in.recorded && in.fate == fateTagLost:
			f.recordOnly++
		case in.recorded:
			f.regionLostTags++
		case in.fate == fateNoReport && in.ended:
			f.noReport++
		}
	}
}

// modelKinds are what the proxy's EC2 model counts (faultproxy_ec2_test.go).
var modelKinds = []string{"visibility-lag", "late-tag", "idempotent-mismatch", "idempotent-terminated", "forgotten", "refused-region"}

func (f *faultTotals) report(t *testing.T, runs int, wall time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var faults, model []string
	sum := 0
	for _, k := range modelKinds {
		if _, ok := f.injected[k]; !ok {
			model = append(model, k+" 0") // named even when it never happened
		}
	}
	for _, k := range sortedKeys(f.injected) {
		part := fmt.Sprintf("%s %d", k, f.injected[k])
		if slices.Contains(netFaults, k) || strings.HasPrefix(k, "quota:") {
			faults = append(faults, part)
			sum += f.injected[k]
		} else {
			model = append(model, part)
		}
	}
	slices.Sort(model)
	var unreached []string
	for _, k := range sortedKeys(f.cancelUnreached) {
		unreached = append(unreached, fmt.Sprintf("%s %d", k, f.cancelUnreached[k]))
	}
	t.Logf("%d runs (%d finished) in %s: %d instances launched; %d AWS requests through the proxies, %d faults injected (%s); "+
		"EC2 as AWS documents it: %s; %d items shown waiting for a quota or capacity refusal; %d runs with a refusing second region; "+
		"%d process kills, %d duplicate events, %d duplicate sync invokes, %d cancels (%d ended CANCELLED); %d invocations, %d hand-offs, "+
		"%d found the lease held, %d handed on at once behind a stale lease; %d failed sync duplicates re-sent as events, %d cancels repeated as told, "+
		"cancels that exited 1 naming a region they could not reach: [%s]; "+
		"CLI clock offsets drawn: %d, from %s to %s; instances: %d reported by record and tag, %d by exit record only (tag lost), "+
		"%d by exit record only (tag refused by the region), %d died with no report, %d terminated before they reported",
		runs, f.runs, wall.Round(time.Second), f.launches, f.requests, sum, strings.Join(faults, ", "),
		strings.Join(model, ", "), f.quotaWaits, f.region2Runs,
		f.kills, f.asyncDups, f.syncDups, f.cancels, f.cancelledRuns, f.invocations, f.handoffs, f.held, f.staleHandOns, f.syncRetried, f.cancelRepeats,
		strings.Join(unreached, ", "),
		f.offsets, f.minOffset.Round(time.Second), f.maxOffset.Round(time.Second), f.tagged, f.recordOnly,
		f.regionLostTags, f.noReport, f.killedBeforeReport)
}
