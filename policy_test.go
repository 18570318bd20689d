package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
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
	section("Launching user or CI role (orchestrator account)",
		"What a principal needs to launch sweeps into a deployed spawn and follow them (`launch --wait`, `status`, `results` of its own sweeps), and nothing that deploys: the policy of the CI role the GitHub Action uses. Without the Price List API and spot price history, `status` and `results` price an instance the engine did not price from spawn's embedded table.",
		n.launcherPolicy())
	section("SpawnSweepOrchestratorRole: trust", "The Lambda service assumes the orchestrator role.", lambdaTrustPolicy())
	section("SpawnSweepOrchestratorRole: inline policy `spawn`",
		"The orchestrator function's permissions. The `AssumeComputeAccountRole` statement appears only when a compute account was deployed.",
		n.orchestratorPolicy())
	section("spawnd-role: trust", "EC2 assumes the instance role (instance profile `spawnd-role`).", ec2TrustPolicy())
	section("spawnd-role: inline policy `spawn`",
		"An instance may terminate only itself, tag itself only with its exit code, and write only its own log, result and exit record objects (named by its `aws:userid`, `<role id>:<instance id>`).", n.instancePolicy(n.account))
	section("SpawnSweepCrossAccountRole: trust (compute account)",
		"Only the orchestrator role, and only with the external id.", n.crossAccountTrustPolicy(orchARN))
	section("SpawnSweepCrossAccountRole: inline policy `spawn` (compute account)",
		"The EC2 calls the orchestrator makes there, passing that account's `spawnd-role`, and the idle-timeout alarms (an alarm lives in its instance's account).",
		n.crossAccountPolicy("444455556666"))
	section("Bucket policy",
		"Refuses every request not made over TLS. With a compute account, its instances may write their own log, result and exit record objects.",
		n.bucketPolicy())
	return strings.TrimRight(b.String(), "\n") + "\n"
}
