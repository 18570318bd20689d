package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	lambdasvc "github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/rs/zerolog"
)

// testImage is an AMI the backend accepts: moto checks AMI ids, kumo does not list any.
func testImage(t testing.TB, api *ec2.Client) string {
	t.Helper()
	out, err := api.DescribeImages(context.Background(), &ec2.DescribeImagesInput{})
	if err == nil && len(out.Images) > 0 {
		return aws.ToString(out.Images[0].ImageId)
	}
	return "ami-12345678"
}

func createTestTables(t testing.TB, a *testAWS) (*dynamoStore, string, string) {
	t.Helper()
	db := dynamodb.NewFromConfig(a.cfg)
	table, itable := uniqueName("sweeps"), uniqueName("instances")
	for _, in := range []*dynamodb.CreateTableInput{sweepTableInput(table), instancesTableInput(itable)} {
		if _, err := db.CreateTable(context.Background(), in); err != nil {
			t.Fatalf("CreateTable %s: %v", aws.ToString(in.TableName), err)
		}
	}
	return newDynamoStore(db, table, itable), table, itable
}

// TestEngineCompletesOnEmulator runs a 20-item sweep at max_concurrent 3 with the real
// DynamoDB store and the real EC2 client on the emulator, while the test plays the
// workload: it ends each instance shortly after launch (on moto it first reports exit
// code 0 by tag, as the instance's script does).
func TestEngineCompletesOnEmulator(t *testing.T) {
	a := newTestAWS(t)
	store, _, _ := createTestTables(t, a)
	real := ec2.NewFromConfig(a.cfg)
	image := testImage(t, real)
	api := newCountingEC2(real)
	const items, maxConc = 20, 3
	sw := &sweep{
		SweepID: uniqueName("sw"), SweepName: "integration", UserID: "arn:aws:iam::000000000000:user/test", Status: statusInitializing, MaxConcurrent: maxConc,
		LaunchDelay: "0s", PollInterval: "250ms", TotalParams: items, Region: a.cfg.Region, AWSAccountID: "000000000000",
	}
	if err := store.createSweep(context.Background(), sw); err != nil {
		t.Fatal(err)
	}
	var list []item
	for i := range items {
		list = append(list, item{Index: i, InstanceType: "t3.micro"})
	}
	o := &orchestrator{
		store:  store,
		ec2For: func(context.Context, string) (ec2API, error) { return api, nil },
		launchInput: func(sw *sweep, it item, attempt int) *ec2.RunInstancesInput {
			in := testLaunchInput(sw, it, attempt)
			in.ImageId = aws.String(image)
			in.TagSpecifications[0].Tags = append(in.TagSpecifications[0].Tags,
				ec2types.Tag{Key: aws.String("spawn:managed"), Value: aws.String("true")})
			return in
		},
		loadItems: func(context.Context, *sweep) ([]item, error) { return list, nil },
		log:       zerolog.Nop(),
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- o.run(ctx, sw.SweepID, time.Time{}) }()

	// The workload: end every instance ~300 ms after it was launched.
	seen := map[string]time.Time{}
	var runErr error
loop:
	for {
		select {
		case runErr = <-done:
			break loop
		case <-time.After(100 * time.Millisecond):
		}
		launched, _, _, _ := api.snapshot()
		for _, id := range launched {
			first, ok := seen[id]
			if !ok {
				seen[id] = time.Now()
				continue
			}
			if first.IsZero() || time.Since(first) < 300*time.Millisecond {
				continue
			}
			// As the instance's own script does: report the exit code, then end.
			if _, err := real.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{id},
				Tags: []ec2types.Tag{{Key: aws.String(exitCodeTag), Value: aws.String("0")}}}); err != nil {
				t.Fatalf("CreateTags: %v", err)
			}
			if _, err := real.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{id}}); err != nil {
				t.Fatalf("TerminateInstances: %v", err)
			}
			api.ended(id)
			seen[id] = time.Time{}
		}
	}
	if runErr != nil {
		t.Fatalf("run: %v", runErr)
	}
	got, err := store.loadSweep(context.Background(), sw.SweepID)
	if err != nil {
		t.Fatal(err)
	}
	launched, _, maxAlive, doubled := api.snapshot()
	if got.Status != statusCompleted || len(got.Alive) != 0 || got.LeaseOwner != "" {
		t.Fatalf("status %s, alive %d, lease %q; want COMPLETED, none, released", got.Status, len(got.Alive), got.LeaseOwner)
	}
	if len(launched) != items || len(doubled) > 0 {
		t.Errorf("%d instances launched for %d items (tokens with two instances: %v)", len(launched), items, doubled)
	}
	if maxAlive > maxConc {
		t.Errorf("%d instances alive at once, max_concurrent %d", maxAlive, maxConc)
	}
	recs, err := store.listInstances(context.Background(), sw.SweepID)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != items {
		t.Fatalf("%d instance items, want %d", len(recs), items)
	}
	want := outcomeSucceeded
	for _, rec := range recs {
		if rec.Outcome != want || rec.InstanceID == "" {
			t.Errorf("index %d: outcome %q (instance %q), want %s", rec.Index, rec.Outcome, rec.InstanceID, want)
		}
	}
	c := got.Counts
	if c.Succeeded != items || c.Pending != 0 || c.Running != 0 {
		t.Errorf("counts %+v", c)
	}
	if got.Launched != items {
		t.Errorf("launched %d, want %d", got.Launched, items)
	}
	fmt.Fprintf(testWriter{t}, "backend %s: %d launches, at most %d alive\n", a.backend.name, len(launched), maxAlive)
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(b []byte) (int, error) { w.t.Log(string(b)); return len(b), nil }

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
	if a.backend.name != "kumo" {
		t.Skipf("running this binary as the Lambda function needs kumo's runtime API (moto's Lambda needs Docker); backend is %s", a.backend.name)
	}
	store, table, itable := createTestTables(t, a)
	bucket := uniqueName("spawn-e2e")
	if _, err := newS3Client(a.cfg).CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String(bucket)}); err != nil {
		t.Fatalf("CreateBucket: %v", err)
	}
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
		env:     map[string]string{"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1"},
		globals: []string{"--endpoint-url", a.backend.endpoint, "--table", table, "--instances-table", itable, "--bucket", bucket, "--function", fn},
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

func (e *e2eEnv) paramFile(t *testing.T, n int) string {
	t.Helper()
	var b strings.Builder
	b.WriteString(`{"defaults": {"ami": "ami-12345678", "instance_type": "t3.micro", "command": "sleep 1"}, "params": [`)
	for i := range n {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `{"seed": %d}`, i)
	}
	b.WriteString("]}\n")
	path := filepath.Join(t.TempDir(), "sweep.json")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
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
	out, errOut, code := e.spawn(t, "launch", "--param-file", e.paramFile(t, items), "--max-concurrent", strconv.Itoa(maxConc),
		"--poll-interval", "1s", "--output", "json")
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
			if err := invokeEvent(ctx, lc, e.fn, id); err != nil {
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

// TestCancelFindsInstancesByTag: cancel terminates instances of the sweep that no record
// names, found by their tags, and never one of another sweep, even where the backend
// ignores the tag filter (kumo: nothing is found by tag, nothing foreign is touched).
func TestCancelFindsInstancesByTag(t *testing.T) {
	a := newTestAWS(t)
	store, _, _ := createTestTables(t, a)
	api := ec2.NewFromConfig(a.cfg)
	image := testImage(t, api)
	ctx := context.Background()
	sw := &sweep{SweepID: uniqueName("sw"), SweepName: "cancel", UserID: "arn:aws:iam::000000000000:user/test",
		Status: statusRunning, MaxConcurrent: 2, PollInterval: "1s", TotalParams: 4, NextToLaunch: 2,
		Region: a.cfg.Region, AWSAccountID: "000000000000"}
	if err := store.createSweep(ctx, sw); err != nil {
		t.Fatal(err)
	}
	run := func(sweepID string) string {
		out, err := api.RunInstances(ctx, &ec2.RunInstancesInput{
			ImageId: aws.String(image), InstanceType: ec2types.InstanceTypeT3Micro, MinCount: aws.Int32(1), MaxCount: aws.Int32(1),
			TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeInstance, Tags: []ec2types.Tag{
				{Key: aws.String("spawn:sweep-id"), Value: aws.String(sweepID)},
				{Key: aws.String("spawn:managed"), Value: aws.String("true")},
			}}},
		})
		if err != nil {
			t.Fatalf("RunInstances: %v", err)
		}
		return aws.ToString(out.Instances[0].InstanceId)
	}
	ours := []string{run(sw.SweepID), run(sw.SweepID)}
	foreign := run(uniqueName("other"))
	o := &orchestrator{store: store, ec2For: func(context.Context, string) (ec2API, error) { return api, nil },
		owner: "cancel-test", log: zerolog.Nop()}
	got, already, err := o.cancelRun(ctx, sw.SweepID)
	if err != nil || already || got.Status != statusCancelled {
		t.Fatalf("cancel: %v, already %v, status %v", err, already, got)
	}
	if got.Counts.Cancelled != 4 || got.LeaseOwner != "" {
		t.Errorf("counts %+v, lease %q", got.Counts, got.LeaseOwner)
	}
	states := map[string]ec2types.InstanceStateName{}
	insts, err := describeInstances(ctx, api, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, inst := range insts {
		states[aws.ToString(inst.InstanceId)] = inst.State.Name
	}
	if !liveState(states[foreign]) {
		t.Errorf("an instance of another sweep was terminated: %s", states[foreign])
	}
	if !a.keepsEC2Tags() {
		if len(o.terminated) != 0 {
			t.Errorf("terminated %v on a backend that ignores tags", o.terminated)
		}
		t.Logf("backend %s ignores EC2 tags: only checked that nothing foreign was terminated", a.backend.name)
		return
	}
	for _, id := range ours {
		if liveState(states[id]) {
			t.Errorf("instance %s of the sweep is still %s", id, states[id])
		}
	}
	if len(o.terminated) != 2 {
		t.Errorf("terminated %v, want the sweep's 2", o.terminated)
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
				Tags: []ec2types.Tag{{Key: aws.String(exitCodeTag), Value: aws.String("0")}}})
			_, _ = api.TerminateInstances(context.Background(), &ec2.TerminateInstancesInput{InstanceIds: []string{id}})
		}
	}
}

// TestNoDetachPauseAndResume: `launch --no-detach` runs the engine in the CLI; Ctrl-C
// pauses it (lease released, a resume hint); `resume --no-detach` finishes the sweep.
func TestNoDetachPauseAndResume(t *testing.T) {
	a := newTestAWS(t)
	store, table, itable := createTestTables(t, a)
	bucket := uniqueName("spawn-nd")
	if _, err := newS3Client(a.cfg).CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String(bucket)}); err != nil {
		t.Fatalf("CreateBucket: %v", err)
	}
	api := ec2.NewFromConfig(a.cfg)
	image := testImage(t, api)
	before := map[string]bool{}
	insts, err := describeInstances(context.Background(), api, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, inst := range insts {
		before[aws.ToString(inst.InstanceId)] = true
	}
	const items = 8
	// moto checks the instance profile exists: give the items one of their own.
	profile := uniqueName("spawnd")
	if a.keepsEC2Tags() {
		if _, err := iam.NewFromConfig(a.cfg).CreateInstanceProfile(context.Background(),
			&iam.CreateInstanceProfileInput{InstanceProfileName: aws.String(profile)}); err != nil {
			t.Fatalf("CreateInstanceProfile: %v", err)
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, `{"defaults": {"ami": %q, "command": "true", "iam_instance_profile": %q}, "params": [`, image, profile)
	for i := range items {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `{"seed": %d}`, i)
	}
	b.WriteString("]}")
	path := filepath.Join(t.TempDir(), "nd.json")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1"} {
		t.Setenv(k, v)
	}
	globals := []string{"--endpoint-url", a.backend.endpoint, "--table", table, "--instances-table", itable, "--bucket", bucket,
		"--function", uniqueName("absent")}

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
	err = <-done
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
	if _, stderr, code := runSpawn(t, nil, append([]string{"launch", "--param-file", path}, globals...)...); code != exitRuntime ||
		!strings.Contains(stderr, "does not exist: run 'spawn deploy'") {
		t.Errorf("launch without a function: exit %d, %q", code, stderr)
	}
	// A finished sweep cannot be resumed.
	if _, stderr, code := runSpawn(t, nil, append([]string{"resume", "--sweep-id", id}, globals...)...); code != exitUsage || !strings.Contains(stderr, "nothing to resume") {
		t.Errorf("resume of a completed sweep: exit %d, %q", code, stderr)
	}
}

// syncBuffer is a buffer the CLI writes in one goroutine while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestLambdaHandlerBadEvents: a malformed event or an unknown sweep is one clear log line
// and no error (Lambda would retry an error for nothing).
func TestLambdaHandlerBadEvents(t *testing.T) {
	a := newTestAWS(t)
	_, table, itable := createTestTables(t, a)
	var logs syncBuffer
	log := zerolog.New(&logs)
	h := &lambdaHandler{log: log, deps: newEngineDeps(a.cfg, "000000000000", "arn:aws:iam::000000000000:root", table, itable,
		uniqueName("bucket"), uniqueName("fn"), log)}
	h.once.Do(func() {}) // already set up
	for _, tc := range []struct{ event, want string }{
		{`not json`, "malformed event"},
		{`{}`, "malformed event"},
		{`{"sweep_id": "sw-nope"}`, "unknown sweep; not retried"},
	} {
		out, err := h.handle(context.Background(), json.RawMessage(tc.event))
		if err != nil || out != nil {
			t.Errorf("%s: answered %v, %v; want nothing", tc.event, out, err)
		}
		if !strings.Contains(logs.String(), tc.want) {
			t.Errorf("%s: log %q lacks %q", tc.event, logs.String(), tc.want)
		}
	}
	out, err := h.handle(context.Background(), json.RawMessage(`{"health_check": true}`))
	if ans, ok := out.(healthAnswer); err != nil || !ok || !ans.OK || ans.Account != "000000000000" {
		t.Errorf("health check: %#v, %v", out, err)
	}
}
