package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatch"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/rs/zerolog"
)

// The fixes for a fresh AWS account, each shown against the behaviour the freshAccount
// proxy models (faultproxy_deploy_test.go).

// `spawn deploy` with every behaviour on succeeds on the first run and again on a second:
// a bucket that answers NoSuchBucket after CreateBucket and OperationAborted before it,
// a code upload slower than the per-attempt timeout, a create whose answer is lost, and
// an account without the Spot service-linked role.
func TestDeployOnAFreshAccountFirstRunAndAgain(t *testing.T) {
	a := newTestAWS(t)
	boot := testBootstrap(t)
	clearSpawnRoles(t, a)
	fi, err := os.Stat(boot)
	if err != nil {
		t.Fatal(err)
	}
	f := newFreshAccount(a.backend.endpoint)
	defer f.Close()
	f.spotRoleMissing, f.alarmRule = true, true
	f.profileLag, f.bucketLag, f.abortCreates = 3*time.Second, 3*time.Second, 2
	f.loseCreate = true
	// The zip is smaller than the executable; at this rate it still takes well over the
	// 2 s per-attempt timeout below.
	f.uploadRate = int(fi.Size() / 20)
	n := newDeployTestNames()
	env := deployEnv(t)
	env["SPAWN_AWS_TIMEOUT"] = "2s"
	startDeployedFunction(t, a, n)
	args := func(extra ...string) []string {
		out := n.args(a, extra...)
		out[1] = f.URL() // --endpoint-url: through the proxy
		return out
	}
	first := runDeployJSON(t, env, args("deploy", "--bootstrap", boot)...)
	checkActions(t, first, wantKinds(n, n.bucket), actionCreated)
	got := f.counts()
	for _, kind := range []string{"operation-aborted", "no-such-bucket", "slow-upload", "lost-create-answer", "spot-role-created"} {
		if got[kind] == 0 {
			t.Errorf("the proxy never showed %s: %v", kind, got)
		}
	}
	second := runDeployJSON(t, env, args("deploy", "--bootstrap", boot)...)
	checkActions(t, second, wantKinds(n, n.bucket), actionUnchanged)
	for _, r := range second.Resources {
		if r.Kind == kindServiceLinkedRole && r.Action != actionUnchanged {
			t.Errorf("second run: %s %s", r.Kind, r.Action)
		}
	}
	t.Logf("proxy: %v", f.counts())
}

// Against AWS, deploy ends only once EC2 accepts the new instance profile (a DryRun
// launch, which the proxy answers as AWS does and never passes on).
func TestDeployWaitsUntilEC2AcceptsTheProfile(t *testing.T) {
	a := newTestAWS(t)
	f := newFreshAccount(a.backend.endpoint)
	defer f.Close()
	f.profileLag = 3 * time.Second
	f.profileMadeAt = time.Now()
	cfg := a.cfg.Copy()
	cfg.BaseEndpoint = aws.String(f.URL())
	d := &deployer{log: zerolog.Nop(), ec2: ec2.NewFromConfig(cfg), probeProfile: true,
		propagationDelay: 200 * time.Millisecond, propagationWait: 30 * time.Second}
	start := time.Now()
	if err := d.waitProfileAccepted(context.Background()); err != nil {
		t.Fatal(err)
	}
	if took, got := time.Since(start), f.counts(); took < f.profileLag || got["profile-not-visible"] == 0 || got["dry-run"] != 1 {
		t.Fatalf("deploy went on after %s, proxy %v: want it to wait until EC2 accepts the profile", took, got)
	}
	// A profile EC2 never accepts within the wait fails deploy, saying what to do.
	f.mu.Lock()
	f.profileMadeAt, f.profileLag = time.Now(), time.Hour
	f.mu.Unlock()
	d.propagationWait = time.Second
	if err := d.waitProfileAccepted(context.Background()); err == nil || !strings.Contains(err.Error(), "run spawn deploy again") {
		t.Fatalf("a profile never accepted: %v", err)
	}
}

// A spot launch in an account that never used Spot is refused until deploy has made the
// service-linked role; the engine takes the refusal for propagation, not bad input.
func TestSpotLaunchNeedsTheServiceLinkedRoleDeployMakes(t *testing.T) {
	a := newTestAWS(t)
	f := newFreshAccount(a.backend.endpoint)
	defer f.Close()
	f.spotRoleMissing = true
	cfg := a.cfg.Copy()
	cfg.BaseEndpoint = aws.String(f.URL())
	ec := ec2.NewFromConfig(cfg)
	spot := &ec2.RunInstancesInput{ImageId: aws.String("ami-12345678"), InstanceType: ec2types.InstanceTypeT3Micro,
		MinCount: aws.Int32(1), MaxCount: aws.Int32(1), ClientToken: aws.String(uniqueName("tok")),
		InstanceMarketOptions: &ec2types.InstanceMarketOptionsRequest{MarketType: ec2types.MarketTypeSpot}}
	_, err := ec.RunInstances(context.Background(), spot)
	if apiErrorCode(err) != codeSLRNotPermitted || !strings.HasPrefix(launchWaitReason(err), slrWaitReason) {
		t.Fatalf("spot launch before deploy: %v (wait reason %q)", err, launchWaitReason(err))
	}
	d := &deployer{log: zerolog.Nop(), iam: iam.NewFromConfig(cfg), names: policyNames{partition: "aws", account: "000000000000"}}
	for range 2 { // the second finds it (GetRole), never "created" twice
		if err := d.ensureSpotRole(context.Background(), d.iam, "000000000000"); err != nil {
			t.Fatal(err)
		}
	}
	if len(d.results) != 2 || d.results[0].Action != actionCreated || d.results[1].Action != actionUnchanged {
		t.Fatalf("ensureSpotRole twice: %+v", d.results)
	}
	if _, err := ec.RunInstances(context.Background(), spot); err != nil {
		t.Fatalf("spot launch after deploy: %v", err)
	}
}

// Idle alarms pass PutMetricAlarm's validation and are ones CloudWatch evaluates on
// basic monitoring: 5-minute periods, missing data not idle; a 2-day idle timeout is
// expressible (in hours), not retried every step against a ValidationError.
func TestIdleAlarmsPassCloudWatchValidation(t *testing.T) {
	a := newTestAWS(t)
	if a.backend.name != "kumo" {
		t.Skipf("CloudWatch alarms are exercised on kumo; backend is %s", a.backend.name)
	}
	f := newFreshAccount(a.backend.endpoint)
	defer f.Close()
	f.alarmRule = true
	cfg := a.cfg.Copy()
	cfg.BaseEndpoint = aws.String(f.URL())
	cw := cloudwatch.NewFromConfig(cfg)
	for _, idle := range []time.Duration{30 * time.Minute, 48 * time.Hour} {
		o := newTestOrchestrator(newFakeStore(), everyRegion(&emptyEC2{}), &napClock{now: time.Now()})
		o.alarmsFor = func(context.Context, string) (alarmAPI, error) { return cw, nil }
		o.items = []item{{Index: 0, IdleTimeout: idle}}
		sw := &sweep{SweepID: uniqueName("sw")}
		e := &aliveInstance{Index: 0, InstanceID: "i-0123456789abcdef0", Region: "us-east-1"}
		o.ensureAlarm(context.Background(), sw, e)
		if !e.IdleAlarm {
			t.Errorf("idle %s: no alarm (proxy %v)", idle, f.counts())
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.alarms) != 2 {
		t.Fatalf("alarms accepted: %+v", f.alarms)
	}
	for _, al := range f.alarms {
		if al.period < 300 || al.missing != "notBreaching" {
			t.Errorf("alarm %s: period %d, TreatMissingData %q: CloudWatch would not see an idle instance in time", al.name, al.period, al.missing)
		}
	}
	if f.noted["alarm-without-data"] != 0 || f.noted["alarm-refused"] != 0 {
		t.Errorf("proxy: %v", f.noted)
	}
}

// A sweep launched right after deploy completes with every item succeeded while EC2 does
// not know the instance profile yet and the vCPU quota refuses half the launches: both
// wait, with their reason, and nothing fails.
func TestSweepRightAfterDeployOnAFreshAccount(t *testing.T) {
	a := newTestAWS(t)
	if a.backend.name != "kumo" {
		// A refused launch is looked up by its client token, a DescribeInstances filter
		// moto answers with HTTP 500 (not implemented); the fault proxy's EC2 model is
		// built on kumo's.
		t.Skipf("the fault proxy is exercised on kumo; backend is %s", a.backend.name)
	}
	store := newTestStore(t)
	bucket := createTestBucket(t, a, "spawn-fresh")
	api := ec2.NewFromConfig(a.cfg)
	image := testImage(t, api)
	before := existingInstances(t, api)
	profile := uniqueName("spawnd")
	if a.keepsEC2Tags() { // moto checks the instance profile exists
		if _, err := iam.NewFromConfig(a.cfg).CreateInstanceProfile(context.Background(),
			&iam.CreateInstanceProfileInput{InstanceProfileName: aws.String(profile)}); err != nil {
			t.Fatalf("CreateInstanceProfile: %v", err)
		}
	}
	quota := newFaultProxy(a.backend.endpoint, 0.5, 7)
	quota.kinds, quota.refuseRuns = []string{"VcpuLimitExceeded"}, 2 // the first two launches meet the quota for sure
	defer quota.Close()
	f := newFreshAccount(quota.URL())
	defer f.Close()
	f.profileLag, f.profileMadeAt = 6*time.Second, time.Now() // deploy made it a moment ago

	const items = 4
	path := seedParamFile(t, fmt.Sprintf(`"ami": %q, "command": "true", "iam_instance_profile": %q`, image, profile), items)
	for k, v := range cliTestEnv() {
		t.Setenv(k, v)
	}
	stop := make(chan struct{})
	go workload(t, a, api, before, stop)
	defer close(stop)
	globals := deploymentFlags(f.URL(), store.table, store.instancesTable, bucket, uniqueName("absent"))
	stdout, stderr, code := runSpawn(t, nil, append([]string{"launch", "--param-file", path, "--max-concurrent", "2",
		"--poll-interval", "1s", "--no-detach", "--ttl", "1h"}, globals...)...)
	if code != 0 || !strings.Contains(stdout, "COMPLETED") {
		t.Fatalf("launch --no-detach: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	id := strings.Fields(stdout)[1]
	sw, err := store.loadSweep(context.Background(), id)
	if err != nil || sw.Status != statusCompleted || sw.Counts.Succeeded != items {
		t.Fatalf("sweep %s: %v, status %s, counts %+v", id, err, sw.Status, sw.Counts)
	}
	_, quotaRefusals := quota.counts()
	if got := f.counts(); got["profile-not-visible"] == 0 || quotaRefusals["quota:VcpuLimitExceeded"] == 0 {
		t.Errorf("the sweep met neither behaviour: fresh account %v, quota %v", got, quotaRefusals)
	}
	t.Logf("fresh account %v, quota %v", f.counts(), quotaRefusals)
}
