package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/eventbridge"
	ebtypes "github.com/aws/aws-sdk-go-v2/service/eventbridge/types"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	lambdatypes "github.com/aws/aws-sdk-go-v2/service/lambda/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"
	"github.com/rs/zerolog"
)

// deployTestNames are one test's resource names: kumo keeps one state per process. The
// IAM role names are fixed (docs/design.md, Resources), so deploy tests clear them first and never run
// in parallel.
type deployTestNames struct {
	table, instancesTable, bucket, function string
}

func newDeployTestNames() deployTestNames {
	return deployTestNames{
		table:          uniqueName("orch"),
		instancesTable: uniqueName("inst"),
		bucket:         uniqueName("spawn-deploy"),
		function:       uniqueName("fn"),
	}
}

// newDeployTest is what a deploy test needs: the backend, the bootstrap, its names and
// environment, with the fixed-name roles cleared before and after it.
func newDeployTest(t *testing.T) (*testAWS, string, deployTestNames, map[string]string) {
	t.Helper()
	a := newTestAWS(t)
	boot := testBootstrap(t)
	clearSpawnRoles(t, a)
	t.Cleanup(func() { clearSpawnRoles(t, a) })
	return a, boot, newDeployTestNames(), deployEnv(t)
}

func (n deployTestNames) args(a *testAWS, extra ...string) []string {
	return append([]string{
		"--endpoint-url", a.backend.endpoint, "--region", "us-east-1",
		"--table", n.table, "--instances-table", n.instancesTable, "--bucket", n.bucket, "--function", n.function,
	}, extra...)
}

// deployEnv isolates the CLI from the machine's AWS files and gives it test credentials.
func deployEnv(t testing.TB) map[string]string {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	return map[string]string{
		"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_SESSION_TOKEN": "",
		"AWS_REGION": "us-east-1", "AWS_PROFILE": "", "AWS_CONFIG_FILE": empty, "AWS_SHARED_CREDENTIALS_FILE": empty,
		"AWS_ENDPOINT_URL": "",
	}
}

// testBootstrap is the Linux executable the tests deploy: this test binary (it is
// spawn, see TestMain), so no extra build is needed.
func testBootstrap(t testing.TB) string {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skipf("deploy zips a Linux executable; this test binary is %s", runtime.GOOS)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return exe
}

// clearSpawnRoles removes the fixed-name roles and instance profile a previous test may
// have left, spawn's or not (a test may have made a foreign one).
func clearSpawnRoles(t testing.TB, a *testAWS) {
	t.Helper()
	ctx := context.Background()
	ic := iam.NewFromConfig(a.cfg)
	prof, err := ic.GetInstanceProfile(ctx, &iam.GetInstanceProfileInput{InstanceProfileName: aws.String(instanceRoleName)})
	if err == nil {
		for _, r := range prof.InstanceProfile.Roles {
			if _, err := ic.RemoveRoleFromInstanceProfile(ctx, &iam.RemoveRoleFromInstanceProfileInput{
				InstanceProfileName: aws.String(instanceRoleName), RoleName: r.RoleName}); err != nil {
				t.Fatalf("clearing instance profile %s: %v", instanceRoleName, err)
			}
		}
		if _, err := ic.DeleteInstanceProfile(ctx, &iam.DeleteInstanceProfileInput{InstanceProfileName: aws.String(instanceRoleName)}); err != nil {
			t.Fatalf("clearing instance profile %s: %v", instanceRoleName, err)
		}
	} else if !isNotFound(err) {
		t.Fatalf("clearing instance profile %s: %v", instanceRoleName, err)
	}
	for _, role := range []string{orchestratorRoleName, crossAccountRoleName, instanceRoleName} {
		if _, err := ic.GetRole(ctx, &iam.GetRoleInput{RoleName: aws.String(role)}); isNotFound(err) {
			continue
		}
		inline, err := inlinePolicies(ctx, ic, role)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range inline {
			if _, err := ic.DeleteRolePolicy(ctx, &iam.DeleteRolePolicyInput{RoleName: aws.String(role), PolicyName: aws.String(p)}); err != nil {
				t.Fatalf("clearing role %s: %v", role, err)
			}
		}
		attached, err := attachedPolicies(ctx, ic, role)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range attached {
			if _, err := ic.DetachRolePolicy(ctx, &iam.DetachRolePolicyInput{RoleName: aws.String(role), PolicyArn: aws.String(p)}); err != nil {
				t.Fatalf("clearing role %s: %v", role, err)
			}
		}
		if _, err := ic.DeleteRole(ctx, &iam.DeleteRoleInput{RoleName: aws.String(role)}); err != nil && !isNotFound(err) {
			t.Fatalf("clearing role %s: %v", role, err)
		}
	}
}

type resourcesDoc struct {
	Resources []resourceResult `json:"resources"`
}

func runDeployJSON(t testing.TB, env map[string]string, args ...string) resourcesDoc {
	t.Helper()
	out, errOut, code := runSpawn(t, env, append(args, "--output", "json")...)
	if code != 0 {
		t.Fatalf("spawn %s: exit %d\nstderr: %s\nstdout: %s", args[0], code, errOut, out)
	}
	var doc resourcesDoc
	dec := json.NewDecoder(strings.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		t.Fatalf("spawn %s --output json printed %q: %v", args[0], out, err)
	}
	if dec.More() {
		t.Fatalf("spawn %s printed more than one JSON document: %q", args[0], out)
	}
	return doc
}

// optionalKinds are the steps an emulator may lack (EMULATORS.md): skipped there with
// a reason, never on AWS.
var optionalKinds = map[string]bool{kindServiceLinkedRole: true, kindPITR: true, kindRecursionConfig: true, kindEventInvokeConfg: true, kindHealthCheck: true,
	kindSchedule: true, kindPermission: true}

// wantKinds is every line a deploy in one account prints, in order.
func wantKinds(n deployTestNames, bucket string) [][2]string {
	return [][2]string{
		{kindTable, n.table}, {kindPITR, n.table},
		{kindTable, n.instancesTable}, {kindPITR, n.instancesTable},
		{kindRole, orchestratorRoleName}, {kindRole, instanceRoleName}, {kindInstanceProfile, instanceRoleName},
		{kindServiceLinkedRole, spotRoleName},
		{kindBucket, bucket},
		{kindFunction, n.function}, {kindRecursionConfig, n.function}, {kindEventInvokeConfg, n.function},
		{kindSchedule, policyNames{function: n.function}.watchdogRule()}, {kindPermission, watchdogStatementID},
		{kindHealthCheck, n.function},
	}
}

// checkActions fails unless the document lists exactly want, each with action (or, for
// an optional step, skipped with a reason).
func checkActions(t *testing.T, doc resourcesDoc, want [][2]string, action string) {
	t.Helper()
	if len(doc.Resources) != len(want) {
		t.Fatalf("got %d resources, want %d: %+v", len(doc.Resources), len(want), doc.Resources)
	}
	for i, r := range doc.Resources {
		if r.Kind != want[i][0] || r.Name != want[i][1] {
			t.Errorf("resource %d: got %s %s, want %s %s", i, r.Kind, r.Name, want[i][0], want[i][1])
		}
		if r.ARN == "" {
			t.Errorf("%s %s: no arn", r.Kind, r.Name)
		}
		switch {
		case r.Kind == kindHealthCheck && r.Action == actionUnchanged:
			if !strings.HasPrefix(r.Reason, "answered: spawn ") {
				t.Errorf("health check answered %q", r.Reason)
			}
		case r.Kind == kindServiceLinkedRole && action == actionCreated && r.Action == actionUnchanged:
			// The account's, not spawn's: destroy leaves it, so a first deploy may find it.
		case r.Action == actionSkipped && optionalKinds[r.Kind]:
			if r.Reason == "" {
				t.Errorf("%s %s skipped without a reason", r.Kind, r.Name)
			}
		case r.Action != action:
			t.Errorf("%s %s: action %s (%s), want %s", r.Kind, r.Name, r.Action, r.Reason, action)
		}
	}
}

// startDeployedFunction runs this binary as the function on kumo's runtime API, so
// deploy's health check reaches real code. Other backends cannot run it.
func startDeployedFunction(t *testing.T, a *testAWS, n deployTestNames) {
	if a.backend.name != "kumo" {
		return
	}
	startFunctionProcess(t, a.backend.endpoint, n.function, map[string]string{
		"SPAWN_TABLE": n.table, "SPAWN_INSTANCES_TABLE": n.instancesTable, "SPAWN_BUCKET": n.bucket,
	})
}

func TestDeployCreatesEveryResourceThenReportsUnchangedThenDestroys(t *testing.T) {
	a := newTestAWS(t)
	boot := testBootstrap(t)
	clearSpawnRoles(t, a)
	n := newDeployTestNames()
	env := deployEnv(t)
	startDeployedFunction(t, a, n)
	ctx := context.Background()

	first := runDeployJSON(t, env, n.args(a, "deploy", "--bootstrap", boot)...)
	checkActions(t, first, wantKinds(n, n.bucket), actionCreated)
	if a.backend.name == "kumo" {
		if h := first.Resources[len(first.Resources)-1]; h.Action != actionUnchanged {
			t.Errorf("on kumo the function runs and must answer the health check: %+v", h)
		}
	}
	second := runDeployJSON(t, env, n.args(a, "deploy", "--bootstrap", boot)...)
	checkActions(t, second, wantKinds(n, n.bucket), actionUnchanged)
	for i := range second.Resources {
		if f, s := first.Resources[i], second.Resources[i]; (f.Action == actionSkipped) != (s.Action == actionSkipped) {
			t.Errorf("%s %s: skipped on one run only (%s, then %s)", s.Kind, s.Name, f.Action, s.Action)
		}
	}

	verifyDeployed(t, a, n)

	// Text output: one aligned line per resource.
	out, _, code := runSpawn(t, env, n.args(a, "deploy", "--bootstrap", boot)...)
	if code != 0 {
		t.Fatalf("text deploy: exit %d", code)
	}
	t.Logf("deploy on %s:\n%s", a.backend.name, out)
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) != len(second.Resources) {
		t.Fatalf("text output has %d lines, want %d:\n%s", len(lines), len(second.Resources), out)
	}
	col := -1
	for i, line := range lines {
		at := strings.Index(line, " "+second.Resources[i].Action)
		if !strings.HasPrefix(line, second.Resources[i].Kind+" ") || at < 0 || (col >= 0 && at != col) {
			t.Fatalf("text output is not aligned kind, name, action lines:\n%s", out)
		}
		col = at
	}

	// Drift: a changed function setting and a deleted bucket policy are found, planned by
	// --dry-run without being touched, then repaired.
	lc := lambda.NewFromConfig(a.cfg)
	if _, err := lc.UpdateFunctionConfiguration(ctx, &lambda.UpdateFunctionConfigurationInput{
		FunctionName: aws.String(n.function), Timeout: aws.Int32(30)}); err != nil {
		t.Fatal(err)
	}
	s3c := newS3Client(a.cfg, "")
	if _, err := s3c.PutPublicAccessBlock(ctx, &s3.PutPublicAccessBlockInput{Bucket: aws.String(n.bucket),
		PublicAccessBlockConfiguration: &s3types.PublicAccessBlockConfiguration{BlockPublicAcls: aws.Bool(false),
			IgnorePublicAcls: aws.Bool(false), BlockPublicPolicy: aws.Bool(false), RestrictPublicBuckets: aws.Bool(false)}}); err != nil {
		t.Fatal(err)
	}
	plan := runDeployJSON(t, env, n.args(a, "deploy", "--bootstrap", boot, "--dry-run")...)
	changed := map[string]string{}
	for _, r := range plan.Resources {
		changed[r.Kind] = r.Action
	}
	if changed[kindFunction] != actionUpdated || changed[kindBucket] != actionUpdated || changed[kindRole] != actionUnchanged ||
		changed[kindHealthCheck] != actionSkipped {
		t.Errorf("dry-run plan: %+v", plan.Resources)
	}
	if cfg, err := lc.GetFunctionConfiguration(ctx, &lambda.GetFunctionConfigurationInput{FunctionName: aws.String(n.function)}); err != nil || aws.ToInt32(cfg.Timeout) != 30 {
		t.Fatalf("--dry-run changed the function: %v %v", err, cfg)
	}
	if pab, err := s3c.GetPublicAccessBlock(ctx, &s3.GetPublicAccessBlockInput{Bucket: aws.String(n.bucket)}); err != nil || allTrue(pab.PublicAccessBlockConfiguration) {
		t.Fatalf("--dry-run wrote the public access block: %v", err)
	}
	repair := runDeployJSON(t, env, n.args(a, "deploy", "--bootstrap", boot)...)
	for _, r := range repair.Resources {
		want := actionUnchanged
		if r.Kind == kindFunction || r.Kind == kindBucket {
			want = actionUpdated
		}
		if r.Action != want && !(r.Action == actionSkipped && optionalKinds[r.Kind]) {
			t.Errorf("after drift: %s %s %s, want %s", r.Kind, r.Name, r.Action, want)
		}
	}
	verifyDeployed(t, a, n)

	// destroy: needs --yes without a terminal, refuses a running sweep unless --force.
	_, errOut, code := runSpawn(t, env, n.args(a, "destroy")...)
	if code != exitUsage || !strings.Contains(errOut, "--yes") {
		t.Fatalf("destroy without --yes: exit %d, %q", code, errOut)
	}
	ddb := dynamodb.NewFromConfig(a.cfg)
	if _, err := ddb.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(n.table), Item: map[string]ddbtypes.AttributeValue{
		"sweep_id": &ddbtypes.AttributeValueMemberS{Value: "sw-running"},
		"status":   &ddbtypes.AttributeValueMemberS{Value: statusRunning},
	}}); err != nil {
		t.Fatal(err)
	}
	_, errOut, code = runSpawn(t, env, n.args(a, "destroy", "--yes")...)
	if code != exitRuntime || !strings.Contains(errOut, "sw-running") || !strings.Contains(errOut, "--force") {
		t.Fatalf("destroy with a running sweep: exit %d, %q", code, errOut)
	}
	if _, err := lc.GetFunction(ctx, &lambda.GetFunctionInput{FunctionName: aws.String(n.function)}); err != nil {
		t.Fatalf("a refused destroy deleted the function: %v", err)
	}
	// Objects, so destroy must empty the bucket first.
	for _, key := range []string{"sweeps/x/params.json", "sweeps/x/logs/0.log"} {
		if _, err := s3c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(n.bucket), Key: aws.String(key), Body: strings.NewReader("{}")}); err != nil {
			t.Fatal(err)
		}
	}
	gone := runDeployJSON(t, env, n.args(a, "destroy", "--yes", "--force")...)
	wantGone := [][2]string{
		{kindSchedule, policyNames{function: n.function}.watchdogRule()}, {kindFunction, n.function}, {kindRole, orchestratorRoleName}, {kindInstanceProfile, instanceRoleName},
		{kindRole, instanceRoleName}, {kindTable, n.table}, {kindTable, n.instancesTable}, {kindBucket, n.bucket},
	}
	checkGone(t, gone, wantGone, actionDeleted)
	verifyNothingLeft(t, a, n)
	again := runDeployJSON(t, env, n.args(a, "destroy", "--yes")...)
	checkGone(t, again, wantGone, actionSkipped)
}

func checkGone(t *testing.T, doc resourcesDoc, want [][2]string, action string) {
	t.Helper()
	if len(doc.Resources) != len(want) {
		t.Fatalf("destroy listed %+v, want %v", doc.Resources, want)
	}
	for i, r := range doc.Resources {
		if r.Kind != want[i][0] || r.Name != want[i][1] || r.Action != action {
			t.Errorf("destroy line %d: %+v, want %s %s %s", i, r, want[i][0], want[i][1], action)
		}
		if action == actionSkipped && r.Reason != "not found" {
			t.Errorf("%s %s skipped with reason %q, want \"not found\"", r.Kind, r.Name, r.Reason)
		}
	}
}

// verifyDeployed reads every resource back through the SDK.
func verifyDeployed(t *testing.T, a *testAWS, n deployTestNames) {
	t.Helper()
	ctx := context.Background()
	s3c := newS3Client(a.cfg, "")
	bucket := aws.String(n.bucket)
	lc, err := s3c.GetBucketLifecycleConfiguration(ctx, &s3.GetBucketLifecycleConfigurationInput{Bucket: bucket})
	// Only logs expire: params (and exit records, results) live as long as the sweep.
	if err != nil || len(lc.Rules) != 1 || lc.Rules[0].Expiration == nil || aws.ToInt32(lc.Rules[0].Expiration.Days) != 30 ||
		lc.Rules[0].Filter == nil || aws.ToString(lc.Rules[0].Filter.Prefix) != "logs/" {
		t.Errorf("lifecycle: %v %+v", err, lc)
	}
	pab, err := s3c.GetPublicAccessBlock(ctx, &s3.GetPublicAccessBlockInput{Bucket: bucket})
	if err != nil || !allTrue(pab.PublicAccessBlockConfiguration) {
		t.Errorf("public access block: %v %+v", err, pab)
	}
	// The test endpoint is plain http: the TLS-only statement, which would refuse every
	// request, is left out (TestBucketPolicyIsTLSOnlyOverHTTPS checks it is written
	// otherwise).
	if pol, err := s3c.GetBucketPolicy(ctx, &s3.GetBucketPolicyInput{Bucket: bucket}); err == nil &&
		strings.Contains(aws.ToString(pol.Policy), "aws:SecureTransport") {
		t.Errorf("a TLS-only bucket policy on a plain-http endpoint: %s", aws.ToString(pol.Policy))
	} else if err != nil && !isNotFound(err) {
		t.Errorf("bucket policy: %v", err)
	}

	verifyWatchdog(t, a, n)
	ddb := dynamodb.NewFromConfig(a.cfg)
	for _, tbl := range []string{n.table, n.instancesTable} {
		out, err := ddb.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(tbl)})
		if err != nil {
			t.Fatalf("table %s: %v", tbl, err)
		}
		if out.Table.BillingModeSummary == nil || out.Table.BillingModeSummary.BillingMode != ddbtypes.BillingModePayPerRequest {
			t.Errorf("table %s is not on-demand: %+v", tbl, out.Table.BillingModeSummary)
		}
		want := instancesTableInput(tbl)
		if tbl == n.table {
			want = sweepTableInput(tbl)
			if len(out.Table.GlobalSecondaryIndexes) != 1 || aws.ToString(out.Table.GlobalSecondaryIndexes[0].IndexName) != gsiUserCreated ||
				!sameKeySchema(out.Table.GlobalSecondaryIndexes[0].KeySchema, want.GlobalSecondaryIndexes[0].KeySchema) {
				t.Errorf("table %s GSI: %+v", tbl, out.Table.GlobalSecondaryIndexes)
			}
		}
		if !sameKeySchema(out.Table.KeySchema, want.KeySchema) {
			t.Errorf("table %s key schema: %+v", tbl, out.Table.KeySchema)
		}
	}

	ic := iam.NewFromConfig(a.cfg)
	for _, role := range []struct{ name, service string }{
		{orchestratorRoleName, "lambda.amazonaws.com"}, {instanceRoleName, "ec2.amazonaws.com"},
	} {
		out, err := ic.GetRole(ctx, &iam.GetRoleInput{RoleName: aws.String(role.name)})
		if err != nil {
			t.Fatalf("role %s: %v", role.name, err)
		}
		trust := decodePolicy(t, aws.ToString(out.Role.AssumeRolePolicyDocument))
		if len(trust.Statement) != 1 || !reflectEqualJSON(trust.Statement[0].Principal, map[string]any{"Service": role.service}) {
			t.Errorf("role %s trust policy: %+v", role.name, trust)
		}
		pol, err := ic.GetRolePolicy(ctx, &iam.GetRolePolicyInput{RoleName: aws.String(role.name), PolicyName: aws.String(regionPolicyName("us-east-1"))})
		if err != nil {
			t.Fatalf("role %s policy: %v", role.name, err)
		}
		doc := decodePolicy(t, aws.ToString(pol.PolicyDocument))
		checkScoped(t, role.name, doc)
		if role.name == instanceRoleName && !strings.Contains(mustJSON(doc), `"${ec2:SourceInstanceARN}"`) {
			t.Errorf("spawnd-role may act on other instances: %s", mustJSON(doc))
		}
		if role.name == orchestratorRoleName && !strings.Contains(mustJSON(doc), "table/"+n.table) {
			t.Errorf("orchestrator policy does not name table %s: %s", n.table, mustJSON(doc))
		}
	}
	prof, err := ic.GetInstanceProfile(ctx, &iam.GetInstanceProfileInput{InstanceProfileName: aws.String(instanceRoleName)})
	if err != nil || len(prof.InstanceProfile.Roles) != 1 || aws.ToString(prof.InstanceProfile.Roles[0].RoleName) != instanceRoleName {
		t.Errorf("instance profile: %v %+v", err, prof)
	}

	fn, err := lambda.NewFromConfig(a.cfg).GetFunction(ctx, &lambda.GetFunctionInput{FunctionName: aws.String(n.function)})
	if err != nil {
		t.Fatalf("function: %v", err)
	}
	c := fn.Configuration
	wantArch := lambdatypes.ArchitectureX8664
	if runtime.GOARCH == "arm64" {
		wantArch = lambdatypes.ArchitectureArm64
	}
	if c.Runtime != lambdatypes.RuntimeProvidedal2023 || aws.ToString(c.Handler) != "bootstrap" || aws.ToInt32(c.Timeout) != 900 ||
		aws.ToInt32(c.MemorySize) != defaultMemoryMB || len(c.Architectures) != 1 || c.Architectures[0] != wantArch ||
		!strings.HasSuffix(aws.ToString(c.Role), ":role/"+orchestratorRoleName) {
		t.Errorf("function configuration: runtime %s handler %s timeout %d memory %d arch %v role %s", c.Runtime,
			aws.ToString(c.Handler), aws.ToInt32(c.Timeout), aws.ToInt32(c.MemorySize), c.Architectures, aws.ToString(c.Role))
	}
	if c.Environment == nil || !sameEnv(c.Environment.Variables, map[string]string{
		"SPAWN_TABLE": n.table, "SPAWN_INSTANCES_TABLE": n.instancesTable, "SPAWN_BUCKET": n.bucket}) {
		t.Errorf("function environment: %+v", c.Environment)
	}
}

func verifyNothingLeft(t *testing.T, a *testAWS, n deployTestNames) {
	t.Helper()
	ctx := context.Background()
	var errs []error
	_, err := newS3Client(a.cfg, "").HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(n.bucket)})
	errs = append(errs, err)
	for _, tbl := range []string{n.table, n.instancesTable} {
		_, err := dynamodb.NewFromConfig(a.cfg).DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(tbl)})
		errs = append(errs, err)
	}
	ic := iam.NewFromConfig(a.cfg)
	for _, role := range []string{orchestratorRoleName, instanceRoleName} {
		_, err := ic.GetRole(ctx, &iam.GetRoleInput{RoleName: aws.String(role)})
		errs = append(errs, err)
	}
	_, err = ic.GetInstanceProfile(ctx, &iam.GetInstanceProfileInput{InstanceProfileName: aws.String(instanceRoleName)})
	errs = append(errs, err)
	_, err = lambda.NewFromConfig(a.cfg).GetFunction(ctx, &lambda.GetFunctionInput{FunctionName: aws.String(n.function)})
	errs = append(errs, err)
	_, err = eventbridge.NewFromConfig(a.cfg).DescribeRule(ctx, &eventbridge.DescribeRuleInput{Name: aws.String(policyNames{function: n.function}.watchdogRule())})
	errs = append(errs, err)
	for i, err := range errs {
		if !isNotFound(err) {
			t.Errorf("resource %d still there after destroy (or another error): %v", i, err)
		}
	}
}

// fakeLambda is the function API with scripted answers; unscripted calls panic.
type fakeLambda struct {
	deployLambdaAPI
	createErrs []error
	creates    int
	invokeOut  *lambda.InvokeOutput
}

func (f *fakeLambda) GetFunction(context.Context, *lambda.GetFunctionInput, ...func(*lambda.Options)) (*lambda.GetFunctionOutput, error) {
	if f.creates == 0 {
		return nil, &smithy.GenericAPIError{Code: "ResourceNotFoundException"}
	}
	return &lambda.GetFunctionOutput{Configuration: &lambdatypes.FunctionConfiguration{
		State: lambdatypes.StateActive, LastUpdateStatus: lambdatypes.LastUpdateStatusSuccessful}}, nil
}

func (f *fakeLambda) CreateFunction(context.Context, *lambda.CreateFunctionInput, ...func(*lambda.Options)) (*lambda.CreateFunctionOutput, error) {
	if len(f.createErrs) > 0 {
		err := f.createErrs[0]
		f.createErrs = f.createErrs[1:]
		return nil, err
	}
	f.creates++
	return &lambda.CreateFunctionOutput{FunctionArn: aws.String("arn:aws:lambda:us-east-1:1:function:f")}, nil
}

func (f *fakeLambda) Invoke(context.Context, *lambda.InvokeInput, ...func(*lambda.Options)) (*lambda.InvokeOutput, error) {
	return f.invokeOut, nil
}

func TestCreateFunctionWaitsForIAMPropagation(t *testing.T) {
	notYet := &smithy.GenericAPIError{Code: "InvalidParameterValueException", Message: "The role defined for the function cannot be assumed by Lambda."}
	f := &fakeLambda{createErrs: []error{notYet, notYet}}
	d := &deployer{log: zerolog.Nop(), lambda: f, names: policyNames{function: "f"},
		propagationDelay: time.Millisecond, propagationWait: time.Minute}
	pkg := &bootstrapPackage{arch: lambdatypes.ArchitectureX8664, goArch: "amd64"}
	if _, err := d.ensureFunction(context.Background(), pkg, "arn:aws:iam::1:role/r"); err != nil {
		t.Fatalf("propagation delay reported as failure: %v", err)
	}
	if f.creates != 1 || len(d.results) != 1 || d.results[0].Action != actionCreated {
		t.Errorf("creates %d, results %+v", f.creates, d.results)
	}
	// Any other refusal is final at once.
	bad := &smithy.GenericAPIError{Code: "InvalidParameterValueException", Message: "Unzipped size must be smaller than 262144000 bytes"}
	f = &fakeLambda{createErrs: []error{bad}}
	d.lambda, d.results = f, nil
	if _, err := d.ensureFunction(context.Background(), pkg, "arn:aws:iam::1:role/r"); !errors.Is(err, bad) {
		t.Errorf("a real error: %v", err)
	}
}

func TestHealthCheckCatchesWrongArchitectureAndFunctionErrors(t *testing.T) {
	answer := func(os, arch string) []byte {
		b, _ := json.Marshal(healthAnswer{OK: true, Version: versionDoc{Version: "v1", OS: os, Arch: arch, GoVersion: "go"}})
		return b
	}
	pkg := &bootstrapPackage{arch: lambdatypes.ArchitectureArm64, goArch: "arm64"}
	for _, c := range []struct {
		name     string
		out      *lambda.InvokeOutput
		emulated bool
		wantErr  string
		want     string
	}{
		{"matching", &lambda.InvokeOutput{Payload: answer("linux", "arm64")}, false, "", actionUnchanged},
		{"other arch", &lambda.InvokeOutput{Payload: answer("linux", "amd64")}, false, "runs as linux/amd64 but was deployed as arm64", ""},
		{"exec format", &lambda.InvokeOutput{FunctionError: aws.String("Unhandled"),
			Payload: []byte(`{"errorType":"Runtime.InvalidEntrypoint","errorMessage":"exec format error"}`)}, false, "does not run on arm64", ""},
		{"handler error on emulator", &lambda.InvokeOutput{FunctionError: aws.String("Unhandled"),
			Payload: []byte(`{"errorType":"errorString","errorMessage":"boom"}`)}, true, "boom", ""},
		{"emulator cannot run functions", &lambda.InvokeOutput{FunctionError: aws.String("Handled"),
			Payload: []byte(`error running docker: no such file`)}, true, "", actionSkipped},
		{"same on AWS is an error", &lambda.InvokeOutput{FunctionError: aws.String("Handled"),
			Payload: []byte(`error running docker: no such file`)}, false, "failed", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := &deployer{log: zerolog.Nop(), lambda: &fakeLambda{invokeOut: c.out}, emulated: c.emulated,
				names: policyNames{function: "f"}, healthWait: time.Second}
			err := d.healthCheck(context.Background(), "arn", pkg)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("got %v, want an error with %q", err, c.wantErr)
				}
				return
			}
			if err != nil || len(d.results) != 1 || d.results[0].Action != c.want {
				t.Fatalf("got %v %+v, want %s", err, d.results, c.want)
			}
		})
	}
}

// writeProfiles writes an AWS config with two profiles on the same endpoint: "main"
// (the orchestrator's account) and "compute".
func writeProfiles(t *testing.T, endpoint string) map[string]string {
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "config")
	credFile := filepath.Join(dir, "credentials")
	cfg := fmt.Sprintf("[profile main]\nregion = us-east-1\nendpoint_url = %s\n\n[profile compute]\nregion = us-east-1\nendpoint_url = %s\n", endpoint, endpoint)
	creds := "[main]\naws_access_key_id = test\naws_secret_access_key = test\n\n[compute]\naws_access_key_id = test\naws_secret_access_key = test\n"
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(credFile, []byte(creds), 0o600); err != nil {
		t.Fatal(err)
	}
	return map[string]string{
		"AWS_CONFIG_FILE": cfgFile, "AWS_SHARED_CREDENTIALS_FILE": credFile, "AWS_PROFILE": "",
		"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_SESSION_TOKEN": "", "AWS_REGION": "", "AWS_ENDPOINT_URL": "",
	}
}

func TestDeployComputeProfileCreatesTheCrossAccountRole(t *testing.T) {
	a := newTestAWS(t)
	boot := testBootstrap(t)
	clearSpawnRoles(t, a)
	n := newDeployTestNames()
	env := writeProfiles(t, a.backend.endpoint)
	startDeployedFunction(t, a, n)
	args := func(cmd string, extra ...string) []string {
		return append([]string{cmd, "--profile", "main", "--compute-profile", "compute",
			"--table", n.table, "--instances-table", n.instancesTable, "--bucket", n.bucket, "--function", n.function}, extra...)
	}
	doc := runDeployJSON(t, env, args("deploy", "--bootstrap", boot)...)
	var cross *resourceResult
	for i, r := range doc.Resources {
		if r.Kind == kindRole && r.Name == crossAccountRoleName {
			cross = &doc.Resources[i]
		}
	}
	if cross == nil || cross.Action != actionCreated {
		t.Fatalf("no %s created: %+v", crossAccountRoleName, doc.Resources)
	}
	ctx := context.Background()
	// The deployment item names the compute account: launch --compute-profile checks it.
	me, err := sts.NewFromConfig(a.cfg).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil {
		t.Fatal(err)
	}
	if rec, err := readDeployment(ctx, dynamodb.NewFromConfig(a.cfg), n.table); err != nil || rec == nil ||
		!slicesContain(rec.ComputeAccounts, aws.ToString(me.Account)) {
		t.Errorf("deployment item %+v (%v) does not name compute account %s", rec, err, aws.ToString(me.Account))
	}
	ic := iam.NewFromConfig(a.cfg)
	orch, err := ic.GetRole(ctx, &iam.GetRoleInput{RoleName: aws.String(orchestratorRoleName)})
	if err != nil {
		t.Fatal(err)
	}
	role, err := ic.GetRole(ctx, &iam.GetRoleInput{RoleName: aws.String(crossAccountRoleName)})
	if err != nil {
		t.Fatal(err)
	}
	trust := decodePolicy(t, aws.ToString(role.Role.AssumeRolePolicyDocument))
	if len(trust.Statement) != 1 || !reflectEqualJSON(trust.Statement[0].Principal, map[string]any{"AWS": aws.ToString(orch.Role.Arn)}) ||
		!strings.HasPrefix(fmt.Sprint(trust.Statement[0].Condition["StringEquals"]["sts:ExternalId"]), "spawn-") {
		t.Errorf("cross-account trust policy: %s", mustJSON(trust))
	}
	pol, err := ic.GetRolePolicy(ctx, &iam.GetRolePolicyInput{RoleName: aws.String(crossAccountRoleName), PolicyName: aws.String(regionPolicyName("us-east-1"))})
	if err != nil {
		t.Fatal(err)
	}
	cp := decodePolicy(t, aws.ToString(pol.PolicyDocument))
	checkScoped(t, crossAccountRoleName, cp)
	for _, st := range cp.Statement {
		for _, act := range st.Action {
			// ssm: EC2 resolves an `ami: resolve:ssm:` parameter with the launcher's permissions.
			if !strings.HasPrefix(act, "ec2:") && act != "iam:PassRole" && !strings.HasPrefix(act, "cloudwatch:") &&
				act != "iam:CreateServiceLinkedRole" && !strings.HasPrefix(act, "ssm:GetParameter") {
				t.Errorf("cross-account role allows %s", act)
			}
		}
	}
	op, err := ic.GetRolePolicy(ctx, &iam.GetRolePolicyInput{RoleName: aws.String(orchestratorRoleName), PolicyName: aws.String(regionPolicyName("us-east-1"))})
	if err != nil {
		t.Fatal(err)
	}
	var assumes []string
	for _, st := range decodePolicy(t, aws.ToString(op.PolicyDocument)).Statement {
		if slicesContain(st.Action, "sts:AssumeRole") {
			assumes = append(assumes, st.Resource...)
		}
	}
	if len(assumes) != 1 || !strings.HasSuffix(assumes[0], ":role/"+crossAccountRoleName) {
		t.Errorf("the orchestrator may assume %v, want only %s", assumes, crossAccountRoleName)
	}

	// A later deploy without --compute-profile keeps the grant: sweeps there still run.
	plain := []string{"deploy", "--profile", "main", "--table", n.table, "--instances-table", n.instancesTable,
		"--bucket", n.bucket, "--function", n.function, "--bootstrap", boot}
	for _, r := range runDeployJSON(t, env, plain...).Resources {
		if r.Action != actionUnchanged && !(r.Action == actionSkipped && optionalKinds[r.Kind]) {
			t.Errorf("redeploy without --compute-profile changed %s %s: %s", r.Kind, r.Name, r.Action)
		}
	}

	gone := runDeployJSON(t, env, args("destroy", "--yes")...)
	found := false
	for _, r := range gone.Resources {
		if r.Kind == kindRole && r.Name == crossAccountRoleName && r.Action == actionDeleted {
			found = true
		}
	}
	if !found {
		t.Errorf("destroy --compute-profile left %s: %+v", crossAccountRoleName, gone.Resources)
	}
	if _, err := ic.GetRole(ctx, &iam.GetRoleInput{RoleName: aws.String(crossAccountRoleName)}); !isNotFound(err) {
		t.Errorf("%s still there: %v", crossAccountRoleName, err)
	}
}

// BenchmarkDeploy measures a first deploy of every resource on the emulator (the health
// check included on kumo) and reports seconds per deploy.
func BenchmarkDeploy(b *testing.B) {
	a := newTestAWS(b)
	boot := testBootstrap(b)
	env := deployEnv(b)
	var total time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		clearSpawnRoles(b, a)
		n := newDeployTestNames()
		if a.backend.name == "kumo" {
			startFunctionProcess(b, a.backend.endpoint, n.function, nil)
		}
		b.StartTimer()
		start := time.Now()
		out, errOut, code := runSpawn(b, env, n.args(a, "deploy", "--bootstrap", boot)...)
		if code != 0 {
			b.Fatalf("deploy: %d %s %s", code, out, errOut)
		}
		total += time.Since(start)
	}
	b.ReportMetric(total.Seconds()/float64(b.N), "s/deploy")
}

// Over https (every real AWS endpoint) the bucket refuses every request not made over
// TLS. The deployer runs against the emulator as it would against AWS, with only its
// plain-http switch off.
func TestBucketPolicyIsTLSOnlyOverHTTPS(t *testing.T) {
	a := newTestAWS(t)
	if a.backend.name != "kumo" {
		t.Skipf("%s enforces the TLS-only policy over its plain-http endpoint, so the test could not read it back; it runs on kumo", a.backend.name)
	}
	ctx := context.Background()
	dep := &deployment{cfg: a.cfg, accountID: "000000000000", userID: "arn:aws:iam::000000000000:user/t", region: a.cfg.Region,
		table: uniqueName("t"), instancesTable: uniqueName("i"), bucket: uniqueName("spawn-tls"), function: uniqueName("f")}
	d := newDeployer(dep, zerolog.Nop(), false)
	if !d.plainHTTP {
		t.Fatal("the emulator's http endpoint was not recognised as plain http")
	}
	d.plainHTTP = false
	if err := d.ensureBucket(ctx); err != nil {
		t.Fatal(err)
	}
	pol, err := newS3Client(a.cfg, "").GetBucketPolicy(ctx, &s3.GetBucketPolicyInput{Bucket: aws.String(dep.bucket)})
	if err != nil {
		t.Fatalf("bucket policy: %v", err)
	}
	var bp policyDocument
	if err := json.Unmarshal([]byte(aws.ToString(pol.Policy)), &bp); err != nil || len(bp.Statement) == 0 ||
		bp.Statement[0].Effect != "Deny" || bp.Statement[0].Condition["Bool"]["aws:SecureTransport"] != "false" {
		t.Errorf("bucket policy is not TLS-only: %v %s", err, aws.ToString(pol.Policy))
	}
	// Back on plain http, a second deploy removes the statement that would lock it out.
	d = newDeployer(dep, zerolog.Nop(), false)
	if err := d.ensureBucket(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := newS3Client(a.cfg, "").GetBucketPolicy(ctx, &s3.GetBucketPolicyInput{Bucket: aws.String(dep.bucket)}); !isNotFound(err) {
		t.Errorf("the TLS-only policy stayed on a plain-http endpoint: %v", err)
	}
	if r := d.results[len(d.results)-1]; r.Action != actionUpdated || !strings.Contains(r.Reason, "plain http") {
		t.Errorf("bucket line: %+v", r)
	}
}

// verifyWatchdog reads the watchdog's rule and target back: every five minutes, the
// function, with the watchdog's input (where the endpoint has EventBridge).
func verifyWatchdog(t *testing.T, a *testAWS, n deployTestNames) {
	t.Helper()
	ctx := context.Background()
	eb := eventbridge.NewFromConfig(a.cfg)
	rule := policyNames{function: n.function}.watchdogRule()
	r, err := eb.DescribeRule(ctx, &eventbridge.DescribeRuleInput{Name: aws.String(rule)})
	if err != nil {
		if a.backend.name == "kumo" {
			t.Errorf("rule %s: %v", rule, err)
		}
		return
	}
	if aws.ToString(r.ScheduleExpression) != "rate(5 minutes)" || r.State != ebtypes.RuleStateEnabled {
		t.Errorf("rule %s: %s %s", rule, aws.ToString(r.ScheduleExpression), r.State)
	}
	tg, err := eb.ListTargetsByRule(ctx, &eventbridge.ListTargetsByRuleInput{Rule: aws.String(rule)})
	if err != nil || len(tg.Targets) != 1 || !strings.HasSuffix(aws.ToString(tg.Targets[0].Arn), ":function:"+n.function) ||
		!sameJSON(aws.ToString(tg.Targets[0].Input), `{"watchdog": true}`) {
		t.Errorf("rule %s targets: %v %+v", rule, err, tg)
	}
}
