package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	lambdasvc "github.com/aws/aws-sdk-go-v2/service/lambda"
)

// e2eEnv is a deployment on kumo for the real binary: tables, bucket, and the function
// process (this test binary running main() on kumo's runtime API).
type e2eEnv struct {
	a       *testAWS
	store   *dynamoStore
	ec2     *ec2.Client
	fn      string
	procs   []*functionProcess
	env     map[string]string
	globals []string
}

func newE2EEnv(t *testing.T, timeoutSeconds int32) *e2eEnv {
	t.Helper()
	a := newTestAWS(t)
	a.requireFunctions(t)
	store := newTestStore(t)
	table, itable := store.table, store.instancesTable
	bucket := createTestBucket(t, a, "spawn-e2e")
	fn := uniqueName("fn")
	createTestFunction(t, a.cfg, fn, timeoutSeconds)
	// Two runtime processes: kumo runs synchronous invokes in parallel across them, so a
	// duplicate can meet a live holder.
	var procs []*functionProcess
	for range 2 {
		procs = append(procs, startFunctionProcess(t, a.backend.endpoint, fn, map[string]string{
			"SPAWN_TABLE": table, "SPAWN_INSTANCES_TABLE": itable, "SPAWN_BUCKET": bucket,
		}))
	}
	waitFunctionReady(t, a.cfg, fn)
	return &e2eEnv{
		a: a, store: store, ec2: ec2.NewFromConfig(a.cfg), fn: fn, procs: procs,
		env:     cliTestEnv(),
		globals: deploymentFlags(a.backend.endpoint, table, itable, bucket, fn),
	}
}

// output is what the function processes logged.
func (e *e2eEnv) output() string {
	var b strings.Builder
	for _, p := range e.procs {
		b.WriteString(p.output())
	}
	return b.String()
}

func (e *e2eEnv) spawn(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	return runSpawn(t, e.env, append(args, e.globals...)...)
}

// sleepDefaults are the defaults of the end-to-end sweeps: items the emulator launches
// and that the test ends itself.
const sleepDefaults = `"ami": "ami-12345678", "instance_type": "t3.micro", "command": "sleep 1"`

// seedParamFile writes a parameter file of n items, {"seed": 0} to {"seed": n-1},
// under defaults (the fields of a JSON object), and returns its path.
func seedParamFile(t testing.TB, defaults string, n int) string {
	t.Helper()
	items := make([]string, n)
	for i := range items {
		items[i] = fmt.Sprintf(`"seed": %d`, i)
	}
	return writeParamFile(t, paramJSON(defaults, items...))
}

// instances lists every instance the emulator knows (kumo ignores filters): id → state.
func (e *e2eEnv) instances(t *testing.T) map[string]ec2types.InstanceStateName {
	t.Helper()
	insts, err := describeInstances(context.Background(), e.ec2, nil)
	if err != nil {
		t.Fatalf("DescribeInstances: %v", err)
	}
	out := map[string]ec2types.InstanceStateName{}
	for _, inst := range insts {
		out[aws.ToString(inst.InstanceId)] = inst.State.Name
	}
	return out
}

func liveState(s ec2types.InstanceStateName) bool {
	return s == ec2types.InstanceStateNamePending || s == ec2types.InstanceStateNameRunning
}

func (e *e2eEnv) launch(t *testing.T, items, maxConc int) string {
	t.Helper()
	out, errOut, code := e.spawn(t, "launch", "--param-file", seedParamFile(t, sleepDefaults, items), "--max-concurrent", strconv.Itoa(maxConc),
		"--poll-interval", "1s", "--no-ttl", "--output", "json")
	var doc launchDoc
	if code != 0 || json.Unmarshal([]byte(out), &doc) != nil || doc.SweepID == "" {
		t.Fatalf("launch: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if doc.TotalParams != items || doc.MaxConcurrent != maxConc {
		t.Fatalf("launch answered %+v", doc)
	}
	return doc.SweepID
}

// TestEndToEndSweepOnKumo runs the real binary: the CLI launches, the function (timeout
// 6 s) orchestrates and re-invokes itself, the test ends instances as workloads would,
// and a duplicated event plus a concurrent `resume` cause no second launch.
func TestEndToEndSweepOnKumo(t *testing.T) {
	e := newE2EEnv(t, 6)
	const items, maxConc = 24, 3
	before := e.instances(t)
	id := e.launch(t, items, maxConc)

	ctx := context.Background()
	seen := map[string]time.Time{}
	maxAlive := 0
	raced := false
	var resumeDone chan struct{}
	var resumeErr string
	var resumeCode int
	deadline := time.Now().Add(3 * time.Minute)
	var sw *sweep
	for {
		var err error
		sw, err = e.store.loadSweep(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if sw.Status == statusCompleted {
			break
		}
		if terminalStatus(sw.Status) || time.Now().After(deadline) {
			t.Fatalf("sweep %s: status %s, next %d, alive %d", id, sw.Status, sw.NextToLaunch, len(sw.Alive))
		}
		alive := 0
		for iid, state := range e.instances(t) {
			if _, old := before[iid]; old || !liveState(state) {
				continue
			}
			alive++
			if first, ok := seen[iid]; !ok {
				seen[iid] = time.Now()
			} else if time.Since(first) > 1500*time.Millisecond {
				if _, err := e.ec2.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{iid}}); err != nil {
					t.Fatalf("TerminateInstances: %v", err)
				}
			}
		}
		maxAlive = max(maxAlive, alive)
		if !raced && strings.Count(e.output(), "sweep handed on") >= 1 {
			raced = true
			// A duplicated delivery of the event, a detached resume, and a resume
			// running the engine here, all while the function holds the sweep.
			lc := lambdasvc.NewFromConfig(e.a.cfg)
			if err := invokeEvent(ctx, lc, e.fn, orchestratorEvent{SweepID: id}); err != nil {
				t.Fatalf("duplicate event: %v", err)
			}
			// The same event delivered synchronously runs beside the holder right now.
			dctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			dup, err := lc.Invoke(dctx, &lambdasvc.InvokeInput{FunctionName: aws.String(e.fn), Payload: []byte(`{"sweep_id": "` + id + `"}`)})
			cancel()
			if err != nil || dup.FunctionError != nil {
				t.Fatalf("duplicate invoke: %v %v", err, dup)
			}
			if out, errOut, code := e.spawn(t, "resume", "--sweep-id", id); code != 0 {
				t.Fatalf("resume: exit %d, %q %q", code, out, errOut)
			}
			resumeDone = make(chan struct{})
			go func() {
				defer close(resumeDone)
				// Either it finds the lease held and says so, or it takes over and
				// finishes the sweep here: both are correct.
				_, resumeErr, resumeCode = runSpawn(t, e.env, append([]string{"resume", "--sweep-id", id, "--no-detach"}, e.globals...)...)
			}()
		}
		time.Sleep(300 * time.Millisecond)
	}
	if resumeDone != nil {
		<-resumeDone
	}
	handoffs := strings.Count(e.output(), "sweep handed on")
	if handoffs < 3 {
		t.Errorf("the function handed the sweep on %d times, want at least 3 (timeout 6 s)", handoffs)
	}
	if !raced {
		t.Error("the duplicate event and the concurrent resume never ran")
	}
	if maxAlive > maxConc {
		t.Errorf("%d instances alive at once, max_concurrent %d", maxAlive, maxConc)
	}
	// kumo ignores ClientToken: a repeated RunInstances would be a second instance.
	made := 0
	for iid := range e.instances(t) {
		if _, old := before[iid]; !old {
			made++
		}
	}
	recs, err := e.store.listInstances(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for _, rec := range recs {
		ids[rec.InstanceID] = true
		if rec.Attempt != 1 || rec.Outcome == "" {
			t.Errorf("index %d: attempt %d, outcome %q", rec.Index, rec.Attempt, rec.Outcome)
		}
	}
	if made != items || len(recs) != items || len(ids) != items || sw.Launched != items {
		t.Errorf("%d instances made, %d instance items with %d distinct ids, launched %d; want %d each", made, len(recs), len(ids), sw.Launched, items)
	}
	if sw.LeaseOwner != "" || len(sw.Alive) != 0 {
		t.Errorf("lease %q, alive %d after completion", sw.LeaseOwner, len(sw.Alive))
	}
	held := strings.Count(e.output(), "another orchestrator holds the lease")
	t.Logf("%d items, %d hand-offs, %d invocations found the lease held, resume --no-detach exit %d, at most %d alive",
		items, handoffs, held, resumeCode, maxAlive)
	if resumeCode != 0 && !strings.Contains(resumeErr, "being run by another orchestrator") {
		t.Errorf("resume --no-detach: exit %d, %q", resumeCode, resumeErr)
	}
	if held == 0 && resumeCode == 0 {
		t.Error("no invocation or resume ever met a live lease: the race was not exercised")
	}
	if os.Getenv("SPAWN_E2E_DUMP") != "" {
		_ = os.WriteFile(os.Getenv("SPAWN_E2E_DUMP"), []byte(e.output()), 0o644)
	}
}

// TestEndToEndCancelOnKumo: `cancel` mid-sweep wins and stays won.
func TestEndToEndCancelOnKumo(t *testing.T) {
	e := newE2EEnv(t, 6)
	before := e.instances(t)
	id := e.launch(t, 30, 3)
	ctx := context.Background()
	deadline := time.Now().Add(time.Minute)
	for {
		sw, err := e.store.loadSweep(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		launched := 0
		for _, a := range sw.Alive {
			if a.InstanceID != "" {
				launched++
			}
		}
		if launched >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing launched in a minute: %+v", sw)
		}
		time.Sleep(200 * time.Millisecond)
	}
	out, errOut, code := e.spawn(t, "cancel", "--sweep-id", id, "--output", "json")
	var doc cancelDoc
	if code != 0 || json.Unmarshal([]byte(out), &doc) != nil || doc.Status != statusCancelled || doc.Already {
		t.Fatalf("cancel: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	check := func(when string) int {
		sw, err := e.store.loadSweep(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if sw.Status != statusCancelled || len(sw.Alive) != 0 {
			t.Errorf("%s: status %s, alive %d", when, sw.Status, len(sw.Alive))
		}
		c := sw.Counts
		if c.Succeeded+c.Failed+c.Expired+c.Cancelled+c.Unknown != 30 {
			t.Errorf("%s: counts %+v", when, c)
		}
		made := 0
		for iid, state := range e.instances(t) {
			if _, old := before[iid]; old {
				continue
			}
			made++
			if liveState(state) {
				t.Errorf("%s: instance %s is %s", when, iid, state)
			}
		}
		return made
	}
	made := check("right after cancel")
	// Longer than a function timeout and a hand-on: nothing may launch any more.
	time.Sleep(8 * time.Second)
	if again := check("8 s later"); again != made {
		t.Errorf("%d instances made after cancel returned", again-made)
	}
	out, _, code = e.spawn(t, "cancel", "--sweep-id", id)
	if code != 0 || !strings.Contains(out, "already cancelled") {
		t.Errorf("second cancel: exit %d, %q", code, out)
	}
}

// workload ends every instance that appears after start, ~1 s after it was first seen,
// as the instance's own script would (reporting exit code 0 where tags are kept).
func workload(t *testing.T, a *testAWS, api *ec2.Client, before map[string]bool, stop <-chan struct{}) {
	seen := map[string]time.Time{}
	for {
		select {
		case <-stop:
			return
		case <-time.After(200 * time.Millisecond):
		}
		insts, err := describeInstances(context.Background(), api, nil)
		if err != nil {
			continue
		}
		for _, inst := range insts {
			id := aws.ToString(inst.InstanceId)
			if before[id] || !liveState(inst.State.Name) {
				continue
			}
			if first, ok := seen[id]; !ok {
				seen[id] = time.Now()
				continue
			} else if time.Since(first) < time.Second {
				continue
			}
			// As the instance's own script does: report the exit code, then end.
			_, _ = api.CreateTags(context.Background(), &ec2.CreateTagsInput{Resources: []string{id},
				Tags: []ec2types.Tag{{Key: aws.String(tagExitCode), Value: aws.String("0")}}})
			_, _ = api.TerminateInstances(context.Background(), &ec2.TerminateInstancesInput{InstanceIds: []string{id}})
		}
	}
}

// TestNoDetachPauseAndResume: `launch --no-detach` runs the engine in the CLI; Ctrl-C
// pauses it (lease released, a resume hint); `resume --no-detach` finishes the sweep.
func TestNoDetachPauseAndResume(t *testing.T) {
	a := newTestAWS(t)
	store := newTestStore(t)
	table, itable := store.table, store.instancesTable
	bucket := createTestBucket(t, a, "spawn-nd")
	api := ec2.NewFromConfig(a.cfg)
	image := testImage(t, api)
	before := existingInstances(t, api)
	const items = 8
	// moto checks the instance profile exists: give the items one of their own.
	profile := uniqueName("spawnd")
	if a.keepsEC2Tags() {
		if _, err := iam.NewFromConfig(a.cfg).CreateInstanceProfile(context.Background(),
			&iam.CreateInstanceProfileInput{InstanceProfileName: aws.String(profile)}); err != nil {
			t.Fatalf("CreateInstanceProfile: %v", err)
		}
	}
	path := seedParamFile(t, fmt.Sprintf(`"ami": %q, "command": "true", "iam_instance_profile": %q`, image, profile), items)
	for k, v := range cliTestEnv() {
		t.Setenv(k, v)
	}
	globals := deploymentFlags(a.backend.endpoint, table, itable, bucket, uniqueName("absent"))

	// Launch here, then "Ctrl-C" once the first instances run.
	ctx, cancel := context.WithCancel(context.Background())
	var out, errb syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- runCLI(ctx, append([]string{"launch", "--param-file", path, "--max-concurrent", "2", "--poll-interval", "1s",
			"--no-detach", "--ttl", "1h"}, globals...), strings.NewReader(""), &out, &errb)
	}()
	var id string
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if f := strings.Fields(out.String()); len(f) > 1 && id == "" {
			id = f[1]
		}
		if id != "" {
			if sw, err := store.loadSweep(context.Background(), id); err == nil && sw.Launched >= 1 {
				break
			}
		}
	}
	cancel()
	err := <-done
	if exitCode(err) != exitRuntime || !strings.Contains(errb.String(), "paused: resume with 'spawn resume --sweep-id "+id+"'") {
		t.Fatalf("interrupted launch: exit %d, stdout %q, stderr %q", exitCode(err), out.String(), errb.String())
	}
	sw, err := store.loadSweep(context.Background(), id)
	if err != nil || sw.LeaseOwner != "" || sw.Status != statusRunning {
		t.Fatalf("after the pause: %v, lease %q, status %s", err, sw.LeaseOwner, sw.Status)
	}

	stop := make(chan struct{})
	go workload(t, a, api, before, stop)
	defer close(stop)
	stdout, stderr, code := runSpawn(t, nil, append([]string{"resume", "--sweep-id", id, "--no-detach"}, globals...)...)
	if code != 0 || !strings.Contains(stdout, "COMPLETED") {
		t.Fatalf("resume --no-detach: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	sw, err = store.loadSweep(context.Background(), id)
	if err != nil || sw.Status != statusCompleted || sw.Launched != items {
		t.Fatalf("after resume: %v, status %s, launched %d", err, sw.Status, sw.Launched)
	}
	if sw.Counts.Succeeded != items {
		t.Errorf("counts %+v, want %d succeeded", sw.Counts, items)
	}
	// Detached, with no function deployed: one line saying what to do.
	if _, stderr, code := runSpawn(t, nil, append([]string{"launch", "--param-file", path, "--ttl", "1h"}, globals...)...); code != exitRuntime ||
		!strings.Contains(stderr, "does not exist: run 'spawn deploy'") {
		t.Errorf("launch without a function: exit %d, %q", code, stderr)
	}
	// A finished sweep cannot be resumed.
	if _, stderr, code := runSpawn(t, nil, append([]string{"resume", "--sweep-id", id}, globals...)...); code != exitUsage || !strings.Contains(stderr, "nothing to resume") {
		t.Errorf("resume of a completed sweep: exit %d, %q", code, stderr)
	}
}
