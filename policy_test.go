package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

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
	"ec2:DescribeInstances":        true,
	"ec2:DescribeTags":             true,
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
		"launcher":              n.launcherPolicy(),
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
	// An instance may write an exit record and a result only under its own name, and the
	// orchestrator may list only the sweeps' objects.
	ijs := n.instancePolicy(n.account).json()
	if !strings.Contains(ijs, `/sweeps/*/exit/*/*/${aws:userid}.json"`) {
		t.Errorf("spawnd policy does not scope exit records to the instance's own user id: %s", ijs)
	}
	if !strings.Contains(ijs, `/sweeps/*/results/*/${aws:userid}.json"`) || strings.Contains(ijs, `/sweeps/*/results/*"`) {
		t.Errorf("spawnd policy does not scope results to the instance's own user id: %s", ijs)
	}
	if bjs := n.bucketPolicy().json(); !strings.Contains(bjs, `/sweeps/*/results/*/${aws:userid}.json"`) {
		t.Errorf("bucket policy does not let compute-account instances write their results: %s", bjs)
	}
	if js := n.instancePolicy(n.account).json(); !strings.Contains(js, `"ForAllValues:StringEquals":{"aws:TagKeys":["spawn:exit-code"]}`) {
		t.Errorf("spawnd policy lets an instance set tags other than its exit code (spawn:managed=false would unmanage it): %s", js)
	}
	if !strings.Contains(js, `"s3:prefix":["sweeps/*"]`) {
		t.Errorf("orchestrator policy lists more than the sweeps' objects: %s", js)
	}
	trust := n.crossAccountTrustPolicy(orch).json()
	if !strings.Contains(trust, `"sts:ExternalId":"spawn-111122223333"`) || !strings.Contains(trust, `"AWS":"`+orch+`"`) {
		t.Errorf("cross-account trust: %s", trust)
	}
}

// The allow-lists appear in the launching roles' policies only when deploy was given
// them: the type on the instance (the only resource with ec2:InstanceType), the region
// on both RunInstances statements, and nothing else changes.
func TestPoliciesCarryTheAllowListsOnlyWhenSet(t *testing.T) {
	n := examplePolicyNames()
	policies := func(n policyNames) map[string]policyDocument {
		return map[string]policyDocument{"orchestrator": n.orchestratorPolicy(), "cross-account": n.crossAccountPolicy("444455556666"),
			"launcher": n.launcherPolicy()}
	}
	for name, p := range policies(n) {
		if js := p.json(); strings.Contains(js, keyInstanceType) || strings.Contains(js, keyRequestedRegion) {
			t.Errorf("%s policy without allow-lists names them: %s", name, js)
		}
	}
	without := policies(n)
	types, regions := []string{"t3.*", "c6i.large"}, []string{"us-east-1", "us-west-2"}
	for _, tt := range []struct {
		name                 string
		allow                allowLists
		wantType, wantRegion bool
	}{
		{"types", allowLists{InstanceTypes: types}, true, false},
		{"regions", allowLists{Regions: regions}, false, true},
		{"both", allowLists{InstanceTypes: types, Regions: regions}, true, true},
	} {
		n.allow = tt.allow
		for name, p := range policies(n) {
			p := decodePolicy(t, p.json())
			for i, st := range p.Statement {
				cond := mustJSON(st.Condition)
				launches := slicesContain(st.Action, "ec2:RunInstances")
				wantType := tt.wantType && st.Sid == sidLaunchTagged
				wantRegion := tt.wantRegion && launches
				if got := strings.Contains(cond, `"StringLike":{"ec2:InstanceType":["t3.*","c6i.large"]}`); got != wantType {
					t.Errorf("%s, %s policy, statement %s: ec2:InstanceType condition %v, want %v: %s", tt.name, name, st.Sid, got, wantType, cond)
				}
				if got := strings.Contains(cond, `"aws:RequestedRegion":["us-east-1","us-west-2"]`); got != wantRegion {
					t.Errorf("%s, %s policy, statement %s: aws:RequestedRegion condition %v, want %v: %s", tt.name, name, st.Sid, got, wantRegion, cond)
				}
				if st.Sid == sidLaunchTagged && !strings.Contains(cond, `"aws:RequestTag/spawn:managed":"true"`) {
					t.Errorf("%s, %s policy: the launch no longer needs spawn:managed=true: %s", tt.name, name, cond)
				}
				// Every statement is as it was but for these conditions.
				st.Condition = decodePolicy(t, without[name].json()).Statement[i].Condition
				if was := decodePolicy(t, without[name].json()).Statement[i]; !reflectEqualJSON(st, was) {
					t.Errorf("%s, %s policy: statement %s changed beyond its conditions", tt.name, name, st.Sid)
				}
			}
		}
	}
}

// ec2CallsOfTheCode are the EC2 operations spawn's code calls, as IAM actions. Every
// call needs its ec2.<Operation>Input, so the non-test sources name them all.
func ec2CallsOfTheCode(t *testing.T) map[string]bool {
	t.Helper()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	input := regexp.MustCompile(`\bec2\.([A-Z][A-Za-z0-9]*)Input\b`)
	calls := map[string]bool{}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range input.FindAllStringSubmatch(string(src), -1) {
			calls["ec2:"+m[1]] = true
		}
	}
	// The interfaces the engine and the pricer call EC2 through: the grep must see
	// each of their methods, or it is not finding the calls.
	for _, iface := range []reflect.Type{
		reflect.TypeFor[ec2API](), reflect.TypeFor[tagDescriber](), reflect.TypeFor[spotPriceAPI](),
	} {
		for i := range iface.NumMethod() {
			if name := "ec2:" + iface.Method(i).Name; !calls[name] {
				t.Errorf("%s.%s is called but the source names no ec2.%sInput: the grep is broken", iface.Name(), iface.Method(i).Name, iface.Method(i).Name)
			}
		}
	}
	return calls
}

// ec2ActionsAllowed are the EC2 actions a policy allows. CreateTags allowed only as
// part of RunInstances (ec2:CreateAction) is tagging at launch, RunInstances' own.
func ec2ActionsAllowed(t *testing.T, what string, p policyDocument) map[string]bool {
	t.Helper()
	allowed := map[string]bool{}
	for _, st := range p.Statement {
		if st.Effect != "Allow" {
			continue
		}
		for _, act := range st.Action {
			if strings.Contains(act, "*") {
				t.Errorf("%s: statement %q allows the wildcard action %s: name the actions the code calls", what, st.Sid, act)
			}
			if !strings.HasPrefix(act, "ec2:") {
				continue
			}
			if act == "ec2:CreateTags" && reflectEqualJSON(st.Condition, map[string]map[string]any{"StringEquals": {"ec2:CreateAction": "RunInstances"}}) {
				act = "ec2:RunInstances"
			}
			allowed[act] = true
		}
	}
	return allowed
}

// TestPoliciesAllowExactlyTheEC2CallsTheCodeMakes: the orchestrator may make every EC2
// call the code makes and nothing more (ec2:Describe* would include
// DescribeInstanceAttribute, every instance's user data); in a compute account, the
// engine's calls only (prices are read in the orchestrator's own account).
func TestPoliciesAllowExactlyTheEC2CallsTheCodeMakes(t *testing.T) {
	calls := ec2CallsOfTheCode(t)
	n := examplePolicyNames()
	engine := map[string]bool{}
	for c := range calls {
		if c != "ec2:DescribeSpotPriceHistory" {
			engine[c] = true
		}
	}
	for _, tc := range []struct {
		what string
		p    policyDocument
		want map[string]bool
	}{
		{"orchestrator", n.orchestratorPolicy(), calls},
		{"launcher", n.launcherPolicy(), calls}, // --no-detach runs the engine in the CLI
		{"cross-account", n.crossAccountPolicy("444455556666"), engine},
	} {
		got := ec2ActionsAllowed(t, tc.what, decodePolicy(t, tc.p.json()))
		if g, w := sortedKeys(got), sortedKeys(tc.want); !reflect.DeepEqual(g, w) {
			t.Errorf("%s policy allows the EC2 actions %v; the code calls %v", tc.what, g, w)
		}
	}
	// The check catches a broad grant.
	broad := newPolicy(policyStatement{Effect: "Allow", Action: []string{"ec2:Describe*"}, Resource: []string{"*"}})
	ft := &testing.T{}
	if got := ec2ActionsAllowed(ft, "broad", broad); !ft.Failed() || reflect.DeepEqual(sortedKeys(got), sortedKeys(calls)) {
		t.Error("ec2:Describe* was not refused")
	}
}

// TestDeployerPoliciesAllowEveryIAMCallOfDeploy: each IAM call deploy and destroy make
// (deployIAMAPI) is allowed to the deploying user in both accounts, with the tagging a
// CreateRole or CreateInstanceProfile with tags also needs (iam:TagRole,
// iam:TagInstanceProfile).
func TestDeployerPoliciesAllowEveryIAMCallOfDeploy(t *testing.T) {
	n := examplePolicyNames()
	want := []string{"iam:TagRole", "iam:TagInstanceProfile"}
	iface := reflect.TypeFor[deployIAMAPI]()
	for i := range iface.NumMethod() {
		want = append(want, "iam:"+iface.Method(i).Name)
	}
	for name, p := range map[string]policyDocument{"deployer": n.deployerPolicy(), "compute deployer": n.computeDeployerPolicy("444455556666")} {
		allowed := map[string]bool{}
		for _, st := range p.Statement {
			for _, act := range st.Action {
				allowed[act] = true
			}
		}
		for _, w := range want {
			if !allowed[w] {
				t.Errorf("%s policy does not allow %s, which deploy or destroy calls", name, w)
			}
		}
	}
}

// TestRoleS3StatementsNameTheBucketOwner: every S3 grant of a role holds only on a bucket
// of the orchestrator's account (s3:ResourceAccount), so a bucket of the same name in
// another account is never written or read, whatever the name.
func TestRoleS3StatementsNameTheBucketOwner(t *testing.T) {
	n := examplePolicyNames()
	check := func(t *testing.T, what string, p policyDocument) (s3Statements int) {
		for _, st := range p.Statement {
			hasS3 := false
			for _, act := range st.Action {
				hasS3 = hasS3 || strings.HasPrefix(act, "s3:")
			}
			if !hasS3 || st.Effect != "Allow" {
				continue
			}
			s3Statements++
			if got := st.Condition["StringEquals"]["s3:ResourceAccount"]; got != n.account {
				t.Errorf("%s: S3 statement %q holds on a bucket of any account (s3:ResourceAccount %v, want %s)", what, st.Sid, got, n.account)
			}
		}
		return s3Statements
	}
	for what, p := range map[string]policyDocument{
		"orchestrator":             n.orchestratorPolicy(),
		"spawnd":                   n.instancePolicy(n.account),
		"spawnd (compute account)": n.instancePolicy("444455556666"),
		"cross-account":            n.crossAccountPolicy("444455556666"),
		"launcher":                 n.launcherPolicy(),
	} {
		got := check(t, what, decodePolicy(t, p.json()))
		if what != "cross-account" && got == 0 {
			t.Errorf("%s: no S3 statement found: the check is not looking", what)
		}
	}
	// The check catches a statement without the condition.
	ft := &testing.T{}
	check(ft, "bare", newPolicy(policyStatement{Effect: "Allow", Action: []string{"s3:PutObject"}, Resource: []string{"arn:aws:s3:::b/*"}}))
	if !ft.Failed() {
		t.Error("an S3 statement without s3:ResourceAccount was accepted")
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

// TestSecurityModelMatchesThePolicies: every statement id, role and policy section the
// README's Security model names is in the generated policies, and what it says no
// policy grants, none does.
func TestSecurityModelMatchesThePolicies(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(readme)
	b := strings.Index(doc, "\n## Security model\n")
	if b < 0 {
		t.Fatal("README.md has no \"## Security model\" section")
	}
	model := doc[b+1:]
	model = model[:strings.Index(model, permissionsBegin)]
	n := examplePolicyNames()
	known := map[string]bool{orchestratorRoleName: true, crossAccountRoleName: true, instanceRoleName: true}
	for _, p := range []policyDocument{n.orchestratorPolicy(), n.instancePolicy(n.account), n.launcherPolicy(), n.ciLauncherPolicy(), n.deployerPolicy(), n.crossAccountPolicy("444455556666")} {
		for _, st := range p.Statement {
			known[st.Sid] = true
		}
	}
	sids := regexp.MustCompile("`([A-Z][a-z]+(?:[A-Z][a-z0-9]*)+)`")
	for _, m := range sids.FindAllStringSubmatch(model, -1) {
		if !known[m[1]] {
			t.Errorf("the Security model names %s, which no generated policy has", m[1])
		}
	}
	for _, section := range []string{"`Deploying user`", "`Launching user`"} {
		if !strings.Contains(model, section) || !strings.Contains(permissionsDoc(), "## "+strings.Trim(section, "`")) {
			t.Errorf("the Security model or the Permissions section lacks %s", section)
		}
	}
	// What it says no spawn role or the launching user is allowed.
	for name, p := range map[string]policyDocument{"orchestrator": n.orchestratorPolicy(), "spawnd": n.instancePolicy(n.account),
		"launcher": n.launcherPolicy(), "cross-account": n.crossAccountPolicy("444455556666")} {
		js := p.json()
		for _, never := range []string{"ec2:Describe*", "ec2:DescribeInstanceAttribute", "secretsmanager:", "ssm:GetParameter\",\"ssm:GetParameters\"],\"Resource\":[\"*\"]"} {
			if strings.Contains(js, never) {
				t.Errorf("%s policy allows %s, which the Security model says it does not", name, never)
			}
		}
	}
	if js := n.instancePolicy(n.account).json(); strings.Contains(js, "s3:GetObject") || strings.Contains(js, "dynamodb:") {
		t.Errorf("the Security model says an instance reads neither the bucket nor the tables: %s", js)
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
(the three EC2 Describe calls spawn makes, DescribeInstances, DescribeTags and
DescribeSpotPriceHistory; the Price List API; ` + "`sts:GetCallerIdentity`" + `): they have no
resource-level permissions. No policy allows ` + "`ec2:Describe*`" + `, which would include
DescribeInstanceAttribute and with it every instance's user data. S3 ARNs carry no account, so
every S3 grant of a role also names the bucket owner's account (` + "`s3:ResourceAccount`" + `): a bucket of
the same name in another account is never read or written.

IAM is global, so the roles keep these names in every region, and each role carries one inline policy
per deployed region, ` + "`spawn-<region>`" + ` (below, ` + "`spawn-us-east-1`" + `): deploying a second region adds its
policy beside the first's, and destroying a region removes only its policy (a role goes with its last
region). Deploy tags the roles and the instance profile it creates ` + "`spawn:managed=true`" + `; it refuses a
role or profile of these names that lacks the tag, or that has a managed policy attached or an inline
policy other than ` + "`spawn-<region>`" + `, and destroy removes only what carries the tag.

Cross-account: the orchestrator assumes ` + "`SpawnSweepCrossAccountRole`" + ` in the compute account with the
external id ` + "`spawn-<orchestrator account id>`" + ` (here ` + "`" + crossAccountExternalID(n.account) + "`" + `). It is derived, not secret: the role
trusts only the orchestrator role's ARN, and the id ties the role to this orchestrator account.

`)
	section("Deploying user (orchestrator account)",
		"What the user running `spawn deploy` and `spawn destroy` needs.", n.deployerPolicy())
	section("Deploying user (compute account)",
		"What the `--compute-profile` user needs in the compute account.", n.computeDeployerPolicy("444455556666"))
	section("Launching user (orchestrator account)",
		"What a user needs to launch, watch, cancel and resume sweeps, and to read their logs and results, "+
			"on a deployment someone else made, with no right to deploy or destroy. It includes the engine's own EC2 calls "+
			"because `--no-detach` runs the engine in the CLI and `cancel` terminates from it; "+
			"a user who only launches detached sweeps and never cancels can leave out the EC2, `iam:PassRole`, CloudWatch and SSM statements.",
		n.launcherPolicy())
	section("CI role (orchestrator account)",
		"What a principal needs to launch sweeps into a deployed spawn and follow them (`launch --wait`, `status`, `results` of its own sweeps), and nothing that deploys: the policy of the CI role the GitHub Action uses. Without the Price List API and spot price history, `status` and `results` price an instance the engine did not price from spawn's embedded table.",
		n.ciLauncherPolicy())
	section("SpawnSweepOrchestratorRole: trust", "The Lambda service assumes the orchestrator role.", lambdaTrustPolicy())
	section("SpawnSweepOrchestratorRole: inline policy `spawn-us-east-1`",
		"The orchestrator function's permissions. The `AssumeComputeAccountRole` statement appears only when a compute account was deployed. "+
			"With `spawn deploy --allow-instance-types` the `"+sidLaunchTagged+"` statement also carries `\"StringLike\": {\""+keyInstanceType+"\": [...]}`, "+
			"and with `--allow-regions` both `ec2:RunInstances` statements carry `\"StringEquals\": {\""+keyRequestedRegion+"\": [...]}`; "+
			"deploy writes the same into the cross-account role's policy. A launching user's policy is not deploy's to write: "+
			"add the same conditions to it to bound the sweeps it runs with `--no-detach`.",
		n.orchestratorPolicy())
	section("spawnd-role: trust", "EC2 assumes the instance role (instance profile `spawnd-role`).", ec2TrustPolicy())
	section("spawnd-role: inline policy `spawn-us-east-1`",
		"An instance may terminate only itself, tag itself only with its exit code, and write only its own log, result and exit record objects (named by its `aws:userid`, `<role id>:<instance id>`).", n.instancePolicy(n.account))
	section("SpawnSweepCrossAccountRole: trust (compute account)",
		"Only the orchestrator role, and only with the external id.", n.crossAccountTrustPolicy(orchARN))
	section("SpawnSweepCrossAccountRole: inline policy `spawn-us-east-1` (compute account)",
		"The EC2 calls the orchestrator makes there, passing that account's `spawnd-role`, and the idle-timeout alarms (an alarm lives in its instance's account).",
		n.crossAccountPolicy("444455556666"))
	section("Bucket policy",
		"Refuses every request not made over TLS. With a compute account, its instances may write their own log, result and exit record objects.",
		n.bucketPolicy())
	return strings.TrimRight(b.String(), "\n") + "\n"
}
