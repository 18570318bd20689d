package main

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	lambdasvc "github.com/aws/aws-sdk-go-v2/service/lambda"
	lambdatypes "github.com/aws/aws-sdk-go-v2/service/lambda/types"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/rs/zerolog"
)

// secondAccount gives credentials of another account on the backend, or skips: moto
// answers sts:AssumeRole into any account with credentials that act in that account (an
// account's state is its own; the trust policy is not evaluated), kumo has one account.
func secondAccount(t *testing.T, a *testAWS) (account string, creds aws.Credentials) {
	t.Helper()
	if a.backend.name == "kumo" {
		t.Skip("kumo has one account: the cross-account end-to-end test runs on moto")
	}
	n, err := rand.Int(rand.Reader, big.NewInt(1e11))
	if err != nil {
		t.Fatal(err)
	}
	account = fmt.Sprintf("4%011d", n.Int64()) // a fresh account each run
	ctx := context.Background()
	out, err := sts.NewFromConfig(a.cfg).AssumeRole(ctx, &sts.AssumeRoleInput{
		RoleArn: aws.String("arn:aws:iam::" + account + ":role/spawn-test-admin"), RoleSessionName: aws.String("spawn-test")})
	if err != nil {
		t.Skipf("backend %s cannot give credentials of a second account (AssumeRole: %v)", a.backend.name, err)
	}
	c := out.Credentials
	creds = aws.Credentials{AccessKeyID: aws.ToString(c.AccessKeyId), SecretAccessKey: aws.ToString(c.SecretAccessKey), SessionToken: aws.ToString(c.SessionToken)}
	cfg := a.cfg.Copy()
	cfg.Credentials = credentials.StaticCredentialsProvider{Value: creds}
	id, err := sts.NewFromConfig(cfg).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil || aws.ToString(id.Account) != account {
		t.Skipf("backend %s has one account: assumed credentials act in %v (%v)", a.backend.name, id, err)
	}
	return account, creds
}

// writeAccountProfiles writes an AWS config with profile "main" (the backend's default
// account) and profile "compute" (creds, another account), both on endpoint.
func writeAccountProfiles(t *testing.T, endpoint string, creds aws.Credentials) map[string]string {
	env := writeProfiles(t, endpoint)
	c := fmt.Sprintf("[main]\naws_access_key_id = test\naws_secret_access_key = test\n\n[compute]\naws_access_key_id = %s\naws_secret_access_key = %s\naws_session_token = %s\n",
		creds.AccessKeyID, creds.SecretAccessKey, creds.SessionToken)
	if err := os.WriteFile(env["AWS_SHARED_CREDENTIALS_FILE"], []byte(c), 0o600); err != nil {
		t.Fatal(err)
	}
	return env
}

// createIdleFunction creates a function that never runs (moto's Lambda needs Docker): a
// launch's asynchronous invocation is accepted, and the test drives the engine itself.
func createIdleFunction(t *testing.T, a *testAWS, name string) {
	t.Helper()
	ctx := context.Background()
	role, err := iam.NewFromConfig(a.cfg).CreateRole(ctx, &iam.CreateRoleInput{RoleName: aws.String(uniqueName("fn-role")),
		AssumeRolePolicyDocument: aws.String(mustJSON(lambdaTrustPolicy()))})
	if err != nil {
		t.Fatal(err)
	}
	var zipped bytes.Buffer
	zw := zip.NewWriter(&zipped)
	w, _ := zw.Create("bootstrap")
	_, _ = w.Write([]byte("#!/bin/sh\n"))
	_ = zw.Close()
	if _, err := lambdasvc.NewFromConfig(a.cfg).CreateFunction(ctx, &lambdasvc.CreateFunctionInput{
		FunctionName: aws.String(name), Role: role.Role.Arn, Runtime: lambdatypes.RuntimeProvidedal2023,
		Handler: aws.String("bootstrap"), Code: &lambdatypes.FunctionCode{ZipFile: zipped.Bytes()}}); err != nil {
		t.Fatal(err)
	}
}

// `spawn launch --compute-profile` end to end with a second account: deploy's record
// names the compute account, the launch sets the sweep's account to the profile's, and
// the orchestrator (in the deployment's account) launches every instance in the compute
// account through SpawnSweepCrossAccountRole, none in its own.
func TestLaunchComputeProfileRunsInTheSecondAccount(t *testing.T) {
	a := newTestAWS(t)
	compute, creds := secondAccount(t, a)
	ctx := context.Background()
	computeCfg := a.cfg.Copy()
	computeCfg.Credentials = credentials.StaticCredentialsProvider{Value: creds}
	main, err := sts.NewFromConfig(a.cfg).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil {
		t.Fatal(err)
	}
	mainAccount := aws.ToString(main.Account)

	// The deployment: tables, bucket, function, the cross-account role in the compute
	// account, and the record deploy writes.
	table, instTable := createSweepTables(t, a)
	bucket := createTestBucket(t, a, "spawn-xacct")
	fn := uniqueName("fn")
	createIdleFunction(t, a, fn)
	names := policyNames{partition: "aws", account: mainAccount, region: "us-east-1", table: table, bucket: bucket,
		function: fn, computeAccounts: []string{compute}}
	computeIAM := iam.NewFromConfig(computeCfg)
	if _, err := computeIAM.CreateRole(ctx, &iam.CreateRoleInput{RoleName: aws.String(crossAccountRoleName),
		AssumeRolePolicyDocument: aws.String(mustJSON(names.crossAccountTrustPolicy(names.roleARN(mainAccount, orchestratorRoleName))))}); err != nil {
		t.Fatal(err)
	}
	// The instances' profile, which deploy --compute-profile creates there too.
	if _, err := computeIAM.CreateInstanceProfile(ctx, &iam.CreateInstanceProfileInput{InstanceProfileName: aws.String(instanceRoleName)}); err != nil {
		t.Fatal(err)
	}
	d := &deployer{names: names, ddb: dynamodb.NewFromConfig(a.cfg)}
	if err := d.recordDeployment(ctx); err != nil {
		t.Fatal(err)
	}
	rec, err := readDeployment(ctx, dynamodb.NewFromConfig(a.cfg), table)
	if err != nil || rec == nil || len(rec.ComputeAccounts) != 1 || rec.ComputeAccounts[0] != compute {
		t.Fatalf("deployment item %+v (%v): want compute account %s", rec, err, compute)
	}

	env := writeAccountProfiles(t, a.backend.endpoint, creds)
	computeEC2 := ec2.NewFromConfig(computeCfg)
	params := filepath.Join(t.TempDir(), "p.json")
	defaults := fmt.Sprintf(`"ami": %q, "instance_type": "t3.micro", "command": "sleep 1"`, testImage(t, computeEC2))
	if err := os.WriteFile(params, paramJSON(defaults, `"seed": 0`, `"seed": 1`), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := runSpawn(t, env, "launch", "--profile", "main", "--compute-profile", "compute", "--param-file", params,
		"--ttl", "10m", "--yes", "--output", "json", "--endpoint-url", a.backend.endpoint, "--table", table,
		"--instances-table", instTable, "--function", fn)
	var doc launchDoc
	if code != 0 || json.Unmarshal([]byte(out), &doc) != nil || doc.AWSAccountID != compute || doc.ComputeProfile != "compute" {
		t.Fatalf("launch: exit %d, stdout %s, stderr %s; want aws_account_id %s", code, out, errOut, compute)
	}
	store := newDynamoStore(dynamodb.NewFromConfig(a.cfg), table, instTable)
	if sw, err := store.loadSweep(ctx, doc.SweepID); err != nil || sw.AWSAccountID != compute {
		t.Fatalf("record: %+v, %v; want aws_account_id %s", sw, err, compute)
	}

	// The orchestrator runs with the deployment account's credentials.
	deps := newEngineDeps(a.cfg, mainAccount, aws.ToString(main.Arn), table, instTable, bucket, fn, zerolog.New(testWriter{t}))
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- deps.newOrchestrator("test-orchestrator", false, false).run(runCtx, doc.SweepID, time.Time{})
	}()
	var ids []string
	for deadline := time.Now().Add(60 * time.Second); len(ids) < 2 && time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		if ids, err = findSweepInstances(ctx, computeEC2, doc.SweepID); err != nil {
			t.Fatal(err)
		}
	}
	stop()
	if err := <-done; err != nil && runCtx.Err() == nil {
		t.Errorf("the orchestrator: %v", err)
	}
	t.Cleanup(func() { _ = terminate(context.Background(), computeEC2, ids) })
	if len(ids) != 2 {
		sw, _ := store.loadSweep(ctx, doc.SweepID)
		t.Fatalf("record %+v; "+"the compute account %s holds %d instances of sweep %s, want 2", mustJSON(sw), compute, len(ids), doc.SweepID)
	}
	own, err := findSweepInstances(ctx, ec2.NewFromConfig(a.cfg), doc.SweepID)
	if err != nil || len(own) != 0 {
		t.Errorf("the deployment's account %s holds instances %v of the sweep (%v), want none", mainAccount, own, err)
	}

	// spawn cancel cannot assume the role: it records the cancel, starts the function and
	// waits; the orchestrator (run here, as the function would) ends the instances there.
	type result struct {
		out, errOut string
		code        int
	}
	cancelled := make(chan result, 1)
	go func() {
		out, errOut, code := runSpawn(t, env, "cancel", doc.SweepID, "--profile", "main", "--endpoint-url", a.backend.endpoint,
			"--table", table, "--instances-table", instTable, "--function", fn)
		cancelled <- result{out, errOut, code}
	}()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if sw, err := store.loadSweep(ctx, doc.SweepID); err == nil && sw.CancelRequested {
			break
		}
	}
	fnCtx, fnStop := context.WithTimeout(ctx, 60*time.Second)
	defer fnStop()
	if err := deps.newOrchestrator("test-function", false, false).run(fnCtx, doc.SweepID, time.Time{}); err != nil {
		t.Errorf("the orchestrator cancelling: %v", err)
	}
	res := <-cancelled
	if res.code != 0 || !strings.Contains(res.out, "cancelled: its orchestrator stopped and terminated its instances") {
		t.Errorf("cancel: exit %d, stdout %q, stderr %q", res.code, res.out, res.errOut)
	}
	insts, err := describeByIDs(ctx, computeEC2, ids)
	if err != nil {
		t.Fatal(err)
	}
	for id, inst := range insts {
		if liveState(inst.State.Name) {
			t.Errorf("instance %s in the compute account is still %s after the cancel", id, inst.State.Name)
		}
	}
}
