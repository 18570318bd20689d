package main

import (
	"context"
	"sort"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	iamtypes "github.com/aws/aws-sdk-go-v2/service/iam/types"
)

// roleInlinePolicies is every inline policy name of a role, sorted.
func roleInlinePolicies(t *testing.T, ic *iam.Client, role string) []string {
	t.Helper()
	names, err := inlinePolicies(context.Background(), ic, role)
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(names)
	return names
}

// A spawnd-role that someone else made, with an admin policy attached, is refused by
// deploy before anything is created, and left as it was by deploy and destroy: untagged,
// then tagged but with a managed policy attached, then with an extra inline policy.
func TestDeployRefusesAForeignRoleAndLeavesItAlone(t *testing.T) {
	a, boot, n, env := newDeployTest(t)
	ctx := context.Background()
	ic := iam.NewFromConfig(a.cfg)

	admin, err := ic.CreatePolicy(ctx, &iam.CreatePolicyInput{PolicyName: aws.String(uniqueName("admin")),
		PolicyDocument: aws.String(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}`)})
	if err != nil {
		t.Fatal(err)
	}
	adminARN := aws.ToString(admin.Policy.Arn)
	if _, err := ic.CreateRole(ctx, &iam.CreateRoleInput{RoleName: aws.String(instanceRoleName),
		AssumeRolePolicyDocument: aws.String(ec2TrustPolicy().json())}); err != nil {
		t.Fatal(err)
	}
	if _, err := ic.AttachRolePolicy(ctx, &iam.AttachRolePolicyInput{RoleName: aws.String(instanceRoleName), PolicyArn: aws.String(adminARN)}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		clearSpawnRoles(t, a)
		_, _ = ic.DeletePolicy(ctx, &iam.DeletePolicyInput{PolicyArn: aws.String(adminARN)})
	})

	wantAttached := []string{adminARN} // what the foreign role holds at each step
	wantInline := []string(nil)
	refused := func(step string, want ...string) {
		t.Helper()
		out, errOut, code := runSpawn(t, env, n.args(a, "deploy", "--bootstrap", boot)...)
		if code != exitRuntime {
			t.Fatalf("%s: deploy exit %d, want %d\nstdout %s\nstderr %s", step, code, exitRuntime, out, errOut)
		}
		for _, w := range append(want, "role "+instanceRoleName, "run deploy again") {
			if !strings.Contains(errOut, w) {
				t.Errorf("%s: the error does not say %q: %s", step, w, errOut)
			}
		}
		if strings.Count(strings.TrimSpace(errOut), "\n") > 1 {
			t.Errorf("%s: the error is more than one line and a hint: %q", step, errOut)
		}
		// Checked before anything is created, and the role is as it was.
		if _, err := dynamodb.NewFromConfig(a.cfg).DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(n.table)}); !isNotFound(err) {
			t.Errorf("%s: a refused deploy created table %s (%v)", step, n.table, err)
		}
		if _, err := ic.GetRole(ctx, &iam.GetRoleInput{RoleName: aws.String(orchestratorRoleName)}); !isNotFound(err) {
			t.Errorf("%s: a refused deploy created role %s (%v)", step, orchestratorRoleName, err)
		}
		att, err := attachedPolicies(ctx, ic, instanceRoleName)
		if err != nil || strings.Join(att, ",") != strings.Join(wantAttached, ",") {
			t.Errorf("%s: the foreign role's attached policies changed: %v %v, want %v", step, att, err, wantAttached)
		}
		if got := roleInlinePolicies(t, ic, instanceRoleName); strings.Join(got, ",") != strings.Join(wantInline, ",") {
			t.Errorf("%s: the foreign role's inline policies changed: %v, want %v", step, got, wantInline)
		}
	}

	refused("untagged", "not spawn's", "spawn:managed=true", "delete it")
	// destroy reports it skipped, with the reason, and leaves it.
	gone := runDeployJSON(t, env, n.args(a, "destroy", "--yes", "--force")...)
	skipped := false
	for _, r := range gone.Resources {
		if r.Kind == kindRole && r.Name == instanceRoleName {
			skipped = r.Action == actionSkipped && strings.Contains(r.Reason, "not spawn's")
		}
	}
	if !skipped {
		t.Errorf("destroy did not skip the foreign role with its reason: %+v", gone.Resources)
	}
	if _, err := ic.GetRole(ctx, &iam.GetRoleInput{RoleName: aws.String(instanceRoleName)}); err != nil {
		t.Fatalf("destroy deleted a role that is not spawn's: %v", err)
	}

	if _, err := ic.TagRole(ctx, &iam.TagRoleInput{RoleName: aws.String(instanceRoleName),
		Tags: []iamtypes.Tag{{Key: aws.String(tagManaged), Value: aws.String("true")}}}); err != nil {
		t.Fatal(err)
	}
	refused("tagged, with an admin policy attached", "managed policies that spawn did not attach", adminARN, "detach")

	if _, err := ic.DetachRolePolicy(ctx, &iam.DetachRolePolicyInput{RoleName: aws.String(instanceRoleName), PolicyArn: aws.String(adminARN)}); err != nil {
		t.Fatal(err)
	}
	if _, err := ic.PutRolePolicy(ctx, &iam.PutRolePolicyInput{RoleName: aws.String(instanceRoleName), PolicyName: aws.String("extra"),
		PolicyDocument: aws.String(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}`)}); err != nil {
		t.Fatal(err)
	}
	wantAttached, wantInline = nil, []string{"extra"}
	refused("tagged, with an extra inline policy", "inline policies that spawn did not write (extra)", "delete-role-policy")
}

// regionArgs are n's flags in region, for a deployment beside the test's us-east-1 one.
func regionArgs(a *testAWS, n deployTestNames, region string, extra ...string) []string {
	return append([]string{
		"--endpoint-url", a.backend.endpoint, "--region", region,
		"--table", n.table, "--instances-table", n.instancesTable, "--bucket", n.bucket, "--function", n.function,
	}, extra...)
}

// roleActions maps the IAM lines of a deploy or destroy to their actions and reasons.
func roleActions(doc resourcesDoc) map[string]resourceResult {
	out := map[string]resourceResult{}
	for _, r := range doc.Resources {
		if r.Kind == kindRole || r.Kind == kindInstanceProfile {
			out[r.Kind+" "+r.Name] = r
		}
	}
	return out
}

// Deploying a second region adds its policy to the global roles without touching the
// first region's; destroying the second leaves the first working; the roles go with
// the last region.
func TestDeployTwoRegionsShareTheRolesAndDestroyOneKeepsTheOther(t *testing.T) {
	a := newTestAWS(t)
	boot := testBootstrap(t)
	clearSpawnRoles(t, a)
	t.Cleanup(func() { clearSpawnRoles(t, a) })
	east, west := newDeployTestNames(), newDeployTestNames()
	env := deployEnv(t)
	startDeployedFunction(t, a, east)
	startDeployedFunction(t, a, west)
	ctx := context.Background()
	ic := iam.NewFromConfig(a.cfg)
	roles := []string{orchestratorRoleName, instanceRoleName}
	policyNames := func(role string) string { return strings.Join(roleInlinePolicies(t, ic, role), ",") }
	namesTable := func(role, region, table string) bool {
		pol, err := ic.GetRolePolicy(ctx, &iam.GetRolePolicyInput{RoleName: aws.String(role), PolicyName: aws.String(regionPolicyName(region))})
		return err == nil && strings.Contains(mustJSON(decodePolicy(t, aws.ToString(pol.PolicyDocument))), table)
	}

	runDeployJSON(t, env, regionArgs(a, east, "us-east-1", "deploy", "--bootstrap", boot)...)
	for _, r := range roles {
		out, err := ic.GetRole(ctx, &iam.GetRoleInput{RoleName: aws.String(r)})
		if err != nil || !taggedAsSpawns(out.Role.Tags) {
			t.Errorf("role %s is not tagged %s=true: %v", r, tagManaged, err)
		}
	}
	if prof, err := ic.GetInstanceProfile(ctx, &iam.GetInstanceProfileInput{InstanceProfileName: aws.String(instanceRoleName)}); err != nil ||
		(a.backend.name != "kumo" && !taggedAsSpawns(prof.InstanceProfile.Tags)) { // kumo drops a profile's tags
		t.Errorf("instance profile %s is not tagged %s=true: %v", instanceRoleName, tagManaged, err)
	}
	second := roleActions(runDeployJSON(t, env, regionArgs(a, west, "us-west-2", "deploy", "--bootstrap", boot)...))
	for _, r := range roles {
		if got := second[kindRole+" "+r].Action; got != actionUpdated {
			t.Errorf("second region: role %s %s, want %s (its region's policy added)", r, got, actionUpdated)
		}
		if got, want := policyNames(r), "spawn-us-east-1,spawn-us-west-2"; got != want {
			t.Errorf("role %s has policies %s, want %s", r, got, want)
		}
	}
	if !namesTable(orchestratorRoleName, "us-east-1", east.table) || !namesTable(orchestratorRoleName, "us-west-2", west.table) {
		t.Errorf("each region's orchestrator policy does not name its own table")
	}
	if !namesTable(instanceRoleName, "us-east-1", east.bucket) || !namesTable(instanceRoleName, "us-west-2", west.bucket) {
		t.Errorf("each region's instance policy does not name its own bucket")
	}
	// The first region's deployment is intact: deploying it again changes nothing.
	checkActions(t, runDeployJSON(t, env, regionArgs(a, east, "us-east-1", "deploy", "--bootstrap", boot)...), wantKinds(east, east.bucket), actionUnchanged)

	gone := roleActions(runDeployJSON(t, env, regionArgs(a, west, "us-west-2", "destroy", "--yes", "--force")...))
	for _, r := range roles {
		if got := gone[kindRole+" "+r]; got.Action != actionUpdated || !strings.Contains(got.Reason, "kept for us-east-1") {
			t.Errorf("destroying us-west-2: role %s %+v, want updated and kept for us-east-1", r, got)
		}
		if got, want := policyNames(r), "spawn-us-east-1"; got != want {
			t.Errorf("after destroying us-west-2, role %s has policies %s, want %s", r, got, want)
		}
	}
	if got := gone[kindInstanceProfile+" "+instanceRoleName]; got.Action != actionSkipped || !strings.Contains(got.Reason, "us-east-1") {
		t.Errorf("destroying us-west-2: instance profile %+v, want skipped and kept for us-east-1", got)
	}
	if _, err := ic.GetInstanceProfile(ctx, &iam.GetInstanceProfileInput{InstanceProfileName: aws.String(instanceRoleName)}); err != nil {
		t.Errorf("destroying us-west-2 removed the instance profile us-east-1 uses: %v", err)
	}
	checkActions(t, runDeployJSON(t, env, regionArgs(a, east, "us-east-1", "deploy", "--bootstrap", boot)...), wantKinds(east, east.bucket), actionUnchanged)
	verifyDeployed(t, a, east)

	last := roleActions(runDeployJSON(t, env, regionArgs(a, east, "us-east-1", "destroy", "--yes", "--force")...))
	for _, k := range []string{kindRole + " " + orchestratorRoleName, kindRole + " " + instanceRoleName, kindInstanceProfile + " " + instanceRoleName} {
		if last[k].Action != actionDeleted {
			t.Errorf("destroying the last region: %s %+v, want deleted", k, last[k])
		}
	}
	verifyNothingLeft(t, a, east)
}

// An instance profile named spawnd-role that spawn did not create is refused and left
// alone. kumo drops instance profiles' tags (so an emulator's untagged profile is taken
// as spawn's): this runs where the backend keeps them.
func TestDeployRefusesAForeignInstanceProfile(t *testing.T) {
	a := newTestAWS(t)
	if a.backend.name == "kumo" {
		t.Skip("kumo v0.33.1 drops the tags of CreateInstanceProfile: run on moto")
	}
	boot := testBootstrap(t)
	clearSpawnRoles(t, a)
	t.Cleanup(func() { clearSpawnRoles(t, a) })
	n := newDeployTestNames()
	env := deployEnv(t)
	ctx := context.Background()
	ic := iam.NewFromConfig(a.cfg)
	if _, err := ic.CreateInstanceProfile(ctx, &iam.CreateInstanceProfileInput{InstanceProfileName: aws.String(instanceRoleName)}); err != nil {
		t.Fatal(err)
	}
	_, errOut, code := runSpawn(t, env, n.args(a, "deploy", "--bootstrap", boot)...)
	if code != exitRuntime || !strings.Contains(errOut, "instance profile "+instanceRoleName) || !strings.Contains(errOut, "not spawn's") ||
		!strings.Contains(errOut, "delete-instance-profile") {
		t.Errorf("a foreign instance profile: exit %d, %s", code, errOut)
	}
	gone := roleActions(runDeployJSON(t, env, n.args(a, "destroy", "--yes", "--force")...))
	if got := gone[kindInstanceProfile+" "+instanceRoleName]; got.Action != actionSkipped || !strings.Contains(got.Reason, "not spawn's") {
		t.Errorf("destroy: instance profile %+v, want skipped as not spawn's", got)
	}
	if _, err := ic.GetInstanceProfile(ctx, &iam.GetInstanceProfileInput{InstanceProfileName: aws.String(instanceRoleName)}); err != nil {
		t.Errorf("the foreign instance profile is gone: %v", err)
	}
}
