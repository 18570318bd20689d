package main

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
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
	"github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	lambdatypes "github.com/aws/aws-sdk-go-v2/service/lambda/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
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

// clearSpawnRoles removes the fixed-name roles a previous test may have left.
func clearSpawnRoles(t testing.TB, a *testAWS) {
	t.Helper()
	d := &deployer{log: zerolog.Nop(), iam: iam.NewFromConfig(a.cfg), names: policyNames{partition: "aws", account: "000000000000"}}
	ctx := context.Background()
	for _, role := range []string{orchestratorRoleName, crossAccountRoleName} {
		if err := d.deleteRole(ctx, d.iam, "000000000000", role); err != nil {
			t.Fatalf("clearing role %s: %v", role, err)
		}
	}
	if err := d.deleteInstanceRole(ctx, d.iam, "000000000000"); err != nil {
		t.Fatalf("clearing %s: %v", instanceRoleName, err)
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
var optionalKinds = map[string]bool{kindPITR: true, kindRecursionConfig: true, kindEventInvokeConfg: true, kindHealthCheck: true}

// wantKinds is every line a deploy in one account prints, in order.
func wantKinds(n deployTestNames, bucket string) [][2]string {
	return [][2]string{
		{kindTable, n.table}, {kindPITR, n.table},
		{kindTable, n.instancesTable}, {kindPITR, n.instancesTable},
		{kindRole, orchestratorRoleName}, {kindRole, instanceRoleName}, {kindInstanceProfile, instanceRoleName},
		{kindBucket, bucket},
		{kindFunction, n.function}, {kindRecursionConfig, n.function}, {kindEventInvokeConfg, n.function},
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
	s3c := newS3Client(a.cfg)
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
		{kindFunction, n.function}, {kindRole, orchestratorRoleName}, {kindInstanceProfile, instanceRoleName},
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
	s3c := newS3Client(a.cfg)
	bucket := aws.String(n.bucket)
	lc, err := s3c.GetBucketLifecycleConfiguration(ctx, &s3.GetBucketLifecycleConfigurationInput{Bucket: bucket})
	if err != nil || len(lc.Rules) != 1 || lc.Rules[0].Expiration == nil || aws.ToInt32(lc.Rules[0].Expiration.Days) != 30 {
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
		pol, err := ic.GetRolePolicy(ctx, &iam.GetRolePolicyInput{RoleName: aws.String(role.name), PolicyName: aws.String(rolePolicyName)})
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
	_, err := newS3Client(a.cfg).HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(n.bucket)})
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
	for i, err := range errs {
		if !isNotFound(err) {
			t.Errorf("resource %d still there after destroy (or another error): %v", i, err)
		}
	}
}

// decodePolicy reads a policy as IAM returns it: URL-encoded on AWS, plain on kumo.
func decodePolicy(t *testing.T, doc string) policyDocument {
	t.Helper()
	if s, err := url.PathUnescape(doc); err == nil {
		doc = s
	}
	var raw struct {
		Statement []map[string]any
	}
	if err := json.Unmarshal([]byte(doc), &raw); err != nil {
		t.Fatalf("policy %q: %v", doc, err)
	}
	var p policyDocument
	for _, st := range raw.Statement {
		s := policyStatement{Principal: st["Principal"], Action: stringList(st["Action"]), Resource: stringList(st["Resource"])}
		s.Effect, _ = st["Effect"].(string)
		s.Sid, _ = st["Sid"].(string)
		if c, ok := st["Condition"].(map[string]any); ok {
			s.Condition = map[string]map[string]any{}
			for op, kv := range c {
				s.Condition[op], _ = kv.(map[string]any)
			}
		}
		p.Statement = append(p.Statement, s)
	}
	return p
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func reflectEqualJSON(a, b any) bool { return mustJSON(a) == mustJSON(b) }

// noResourceLevelActions have no resource-level permissions in IAM: "*" is the only
// Resource they take. Anything else must name spawn's resources.
var noResourceLevelActions = map[string]bool{
	"ec2:Describe*":                true,
	"ec2:DescribeSpotPriceHistory": true,
	"pricing:GetProducts":          true,
	"sts:GetCallerIdentity":        true,
}

// checkScoped fails if an Allow statement grants an action that takes resource ARNs on
// "*" or on a wildcard service prefix.
func checkScoped(t *testing.T, what string, p policyDocument) {
	t.Helper()
	for _, st := range p.Statement {
		if st.Effect != "Allow" {
			continue
		}
		for _, act := range st.Action {
			if act == "*" || strings.HasSuffix(act, ":*") {
				t.Errorf("%s: statement %q allows every action of %s", what, st.Sid, act)
			}
			for _, res := range st.Resource {
				if res == "*" && !noResourceLevelActions[act] {
					t.Errorf("%s: statement %q allows %s on every resource", what, st.Sid, act)
				}
			}
		}
		if st.Principal == "*" || reflectEqualJSON(st.Principal, map[string]any{"AWS": "*"}) {
			t.Errorf("%s: statement %q allows everyone", what, st.Sid)
		}
	}
}

func examplePolicyNames() policyNames {
	return policyNames{
		partition: "aws", account: "111122223333", region: "us-east-1",
		table: defaultTable, instancesTable: defaultInstancesTable, bucket: defaultBucketName("111122223333", "us-east-1"),
		function: defaultFunction, computeAccounts: []string{"444455556666"},
	}
}

func TestEveryPolicyIsScopedToSpawnResources(t *testing.T) {
	n := examplePolicyNames()
	orch := "arn:aws:iam::111122223333:role/" + orchestratorRoleName
	for name, p := range map[string]policyDocument{
		"orchestrator":          n.orchestratorPolicy(),
		"spawnd":                n.instancePolicy(n.account),
		"cross-account":         n.crossAccountPolicy("444455556666"),
		"cross-account trust":   n.crossAccountTrustPolicy(orch),
		"bucket":                n.bucketPolicy(),
		"deployer":              n.deployerPolicy(),
		"compute deployer":      n.computeDeployerPolicy("444455556666"),
		"lambda trust":          lambdaTrustPolicy(),
		"ec2 trust":             ec2TrustPolicy(),
		"orchestrator (1 acct)": policyNames{partition: "aws", account: "1", region: "r", table: "t", instancesTable: "i", bucket: "b", function: "f"}.orchestratorPolicy(),
	} {
		checkScoped(t, name, decodePolicy(t, p.json()))
	}
	// The checker itself must catch a broad grant.
	bad := newPolicy(policyStatement{Sid: "Broad", Effect: "Allow", Action: []string{"s3:GetObject"}, Resource: []string{"*"}})
	ft := &testing.T{}
	checkScoped(ft, "bad", bad)
	if !ft.Failed() {
		t.Error("checkScoped accepted s3:GetObject on *")
	}
	// Spot-check the conditions the brief asks for.
	js := n.orchestratorPolicy().json()
	for _, want := range []string{
		`"aws:RequestTag/spawn:managed":"true"`, `"ec2:ResourceTag/spawn:managed":"true"`,
		`"iam:PassedToService":"ec2.amazonaws.com"`, `arn:aws:iam::111122223333:role/spawnd-role`,
		`arn:aws:iam::444455556666:role/SpawnSweepCrossAccountRole`, `alarm:spawn-*`,
		`arn:aws:lambda:us-east-1:111122223333:function:spawn-sweep-orchestrator`,
		`table/spawn-sweep-orchestration/index/user_id-created_at-index`,
	} {
		if !strings.Contains(js, want) {
			t.Errorf("orchestrator policy lacks %s", want)
		}
	}
	trust := n.crossAccountTrustPolicy(orch).json()
	if !strings.Contains(trust, `"sts:ExternalId":"spawn-111122223333"`) || !strings.Contains(trust, `"AWS":"`+orch+`"`) {
		t.Errorf("cross-account trust: %s", trust)
	}
}

func TestSamePolicyIgnoresEncodingAndLayout(t *testing.T) {
	p := examplePolicyNames().orchestratorPolicy()
	var pretty bytes.Buffer
	if err := json.Indent(&pretty, []byte(p.json()), "", "  "); err != nil {
		t.Fatal(err)
	}
	for name, stored := range map[string]string{
		"plain":       p.json(),
		"indented":    pretty.String(),
		"url-encoded": url.PathEscape(p.json()),
	} {
		if !samePolicy(stored, p.json()) {
			t.Errorf("%s: not recognised as the same policy", name)
		}
	}
	one := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*"}]}`
	list := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["s3:GetObject"],"Resource":["arn:aws:s3:::b/*"]}]}`
	if !samePolicy(one, list) {
		t.Error("a one-element list and its element differ")
	}
	if samePolicy(strings.Replace(list, "GetObject", "PutObject", 1), list) {
		t.Error("different actions compare equal")
	}
}

// The README's "Permissions" section is generated from the policies deploy writes, between
// these markers; SPAWN_UPDATE_DOCS=1 rewrites it.
const (
	permissionsBegin = "<!-- permissions:begin -->\n"
	permissionsEnd   = "<!-- permissions:end -->\n"
)

// readmePermissions is permissionsDoc with its headings one level down, as a README section.
func readmePermissions() string {
	lines := strings.SplitAfter(permissionsDoc(), "\n")
	inCode := false
	for i, l := range lines {
		if strings.HasPrefix(l, "```") {
			inCode = !inCode
		}
		if !inCode && strings.HasPrefix(l, "#") {
			lines[i] = "#" + l
		}
	}
	return strings.Join(lines, "")
}

func TestPermissionsDocMatchesThePolicies(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(readme)
	b, e := strings.Index(doc, permissionsBegin), strings.Index(doc, permissionsEnd)
	if b < 0 || e < b {
		t.Fatalf("README.md has no %q … %q block for the generated permissions", permissionsBegin, permissionsEnd)
	}
	got := readmePermissions()
	if os.Getenv("SPAWN_UPDATE_DOCS") == "1" {
		doc = doc[:b+len(permissionsBegin)] + got + doc[e:]
		if err := os.WriteFile("README.md", []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if doc[b+len(permissionsBegin):e] != got {
		t.Errorf("README.md's permissions are out of date with the policies in policy.go: regenerate them with SPAWN_UPDATE_DOCS=1 go test -run TestPermissionsDocMatchesThePolicies .")
	}
}

func TestBootstrapZipIsReproducibleExecutableAndArchitectureAware(t *testing.T) {
	exe := testBootstrap(t)
	a, err := zipBootstrap(exe)
	if err != nil {
		t.Fatal(err)
	}
	b, err := zipBootstrap(exe)
	if err != nil {
		t.Fatal(err)
	}
	if a.sha256 != b.sha256 || !bytes.Equal(a.zip, b.zip) {
		t.Error("zipping the same binary twice gave different bytes")
	}
	if a.goArch != runtime.GOARCH {
		t.Errorf("architecture %s (%s), this binary is %s", a.arch, a.goArch, runtime.GOARCH)
	}
	zr, err := zip.NewReader(bytes.NewReader(a.zip), int64(len(a.zip)))
	if err != nil || len(zr.File) != 1 || zr.File[0].Name != "bootstrap" || zr.File[0].Mode().Perm() != 0o755 {
		t.Fatalf("zip: %v %+v", err, zr)
	}
	rc, err := zr.File[0].Open()
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(rc)
	rc.Close()
	orig, _ := os.ReadFile(exe)
	if !bytes.Equal(body, orig) {
		t.Error("the zipped bootstrap is not the executable")
	}

	// An arm64 ELF is deployed as arm64 whatever this machine is: patch e_machine.
	arm := filepath.Join(t.TempDir(), "spawn-arm64")
	patched := append([]byte(nil), orig...)
	patched[18], patched[19] = byte(183), 0 // EM_AARCH64, little-endian
	if err := os.WriteFile(arm, patched, 0o755); err != nil {
		t.Fatal(err)
	}
	if arch, goArch, err := elfArchitecture(arm); err != nil || arch != lambdatypes.ArchitectureArm64 || goArch != "arm64" {
		t.Errorf("patched arm64 ELF: %s %s %v", arch, goArch, err)
	}

	script := filepath.Join(t.TempDir(), "not-elf")
	if err := os.WriteFile(script, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err = zipBootstrap(script)
	if err == nil || !strings.Contains(err.Error(), "--bootstrap") {
		t.Errorf("a non-ELF bootstrap: %v", err)
	}
	_, errOut, code := runSpawn(t, deployEnv(t), "deploy", "--bootstrap", script)
	if code != exitUsage || !strings.Contains(errOut, "not a Linux executable") {
		t.Errorf("deploy --bootstrap script: exit %d %q", code, errOut)
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
	pol, err := ic.GetRolePolicy(ctx, &iam.GetRolePolicyInput{RoleName: aws.String(crossAccountRoleName), PolicyName: aws.String(rolePolicyName)})
	if err != nil {
		t.Fatal(err)
	}
	cp := decodePolicy(t, aws.ToString(pol.PolicyDocument))
	checkScoped(t, crossAccountRoleName, cp)
	for _, st := range cp.Statement {
		for _, act := range st.Action {
			if !strings.HasPrefix(act, "ec2:") && act != "iam:PassRole" && !strings.HasPrefix(act, "cloudwatch:") && act != "iam:CreateServiceLinkedRole" {
				t.Errorf("cross-account role allows %s", act)
			}
		}
	}
	op, err := ic.GetRolePolicy(ctx, &iam.GetRolePolicyInput{RoleName: aws.String(orchestratorRoleName), PolicyName: aws.String(rolePolicyName)})
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

// BenchmarkBootstrapZip builds spawn as a release does (buildRelease) and reports the zipped bootstrap's size and the zip time.
func BenchmarkBootstrapZip(b *testing.B) {
	if runtime.GOOS != "linux" {
		b.Skip("zips a Linux build")
	}
	bin := buildRelease(b)
	fi, err := os.Stat(bin)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	var pkg *bootstrapPackage
	for i := 0; i < b.N; i++ {
		if pkg, err = zipBootstrap(bin); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(pkg.zip))/1e6, "MB-zip")
	b.ReportMetric(float64(fi.Size())/1e6, "MB-binary")
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
	pol, err := newS3Client(a.cfg).GetBucketPolicy(ctx, &s3.GetBucketPolicyInput{Bucket: aws.String(dep.bucket)})
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
	if _, err := newS3Client(a.cfg).GetBucketPolicy(ctx, &s3.GetBucketPolicyInput{Bucket: aws.String(dep.bucket)}); !isNotFound(err) {
		t.Errorf("the TLS-only policy stayed on a plain-http endpoint: %v", err)
	}
	if r := d.results[len(d.results)-1]; r.Action != actionUpdated || !strings.Contains(r.Reason, "plain http") {
		t.Errorf("bucket line: %+v", r)
	}
}

// permissionsDoc renders the README's Permissions section: the deploying user's permissions and every
// policy deploy writes, for example account ids. A test keeps the file in step.
func permissionsDoc() string {
	n := policyNames{
		partition: "aws", account: "111122223333", region: "us-east-1",
		table: defaultTable, instancesTable: defaultInstancesTable,
		bucket: defaultBucketName("111122223333", "us-east-1"), function: defaultFunction,
		computeAccounts: []string{"444455556666"},
	}
	orchARN := n.roleARN(n.account, orchestratorRoleName)
	var b strings.Builder
	section := func(title, text string, p policyDocument) {
		js, err := json.MarshalIndent(p, "", "  ")
		if err != nil {
			panic(err)
		}
		fmt.Fprintf(&b, "## %s\n\n%s\n\n```json\n%s\n```\n\n", title, text, js)
	}
	b.WriteString(`# Permissions

<!-- Generated from policy.go by TestPermissionsDocMatchesThePolicies; do not edit.
     Regenerate: SPAWN_UPDATE_DOCS=1 go test -run TestPermissionsDocMatchesThePolicies . -->

` + "`spawn deploy`" + ` creates every resource spawn uses and writes the policies below. The examples use
account 111122223333 (where the orchestrator runs), compute account 444455556666 (only with
` + "`--compute-profile`" + `), region us-east-1 and the default names; deploy fills in yours.

Every statement names spawn's own resources, except the calls AWS authorizes only on ` + "`\"*\"`" + `
(EC2's Describe calls, spot price history included, the Price List API and
` + "`sts:GetCallerIdentity`" + `): they have no resource-level permissions.

Cross-account: the orchestrator assumes ` + "`SpawnSweepCrossAccountRole`" + ` in the compute account with the
external id ` + "`spawn-<orchestrator account id>`" + ` (here ` + "`" + crossAccountExternalID(n.account) + "`" + `). It is derived, not secret: the role
trusts only the orchestrator role's ARN, and the id ties the role to this orchestrator account.

`)
	section("Deploying user (orchestrator account)",
		"What the user running `spawn deploy` and `spawn destroy` needs.", n.deployerPolicy())
	section("Deploying user (compute account)",
		"What the `--compute-profile` user needs in the compute account.", n.computeDeployerPolicy("444455556666"))
	section("SpawnSweepOrchestratorRole: trust", "The Lambda service assumes the orchestrator role.", lambdaTrustPolicy())
	section("SpawnSweepOrchestratorRole: inline policy `spawn`",
		"The orchestrator function's permissions. The `AssumeComputeAccountRole` statement appears only when a compute account was deployed.",
		n.orchestratorPolicy())
	section("spawnd-role: trust", "EC2 assumes the instance role (instance profile `spawnd-role`).", ec2TrustPolicy())
	section("spawnd-role: inline policy `spawn`",
		"An instance may tag and terminate only itself, and write only log objects.", n.instancePolicy(n.account))
	section("SpawnSweepCrossAccountRole: trust (compute account)",
		"Only the orchestrator role, and only with the external id.", n.crossAccountTrustPolicy(orchARN))
	section("SpawnSweepCrossAccountRole: inline policy `spawn` (compute account)",
		"The EC2 calls the orchestrator makes there, passing that account's `spawnd-role`, and the idle-timeout alarms (an alarm lives in its instance's account).",
		n.crossAccountPolicy("444455556666"))
	section("Bucket policy",
		"Refuses every request not made over TLS. With a compute account, its instances may write their log objects.",
		n.bucketPolicy())
	return strings.TrimRight(b.String(), "\n") + "\n"
}
