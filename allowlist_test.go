package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/rs/zerolog"
)

// * stands for any run of characters, none included, as in IAM's StringLike; every
// other character only for itself.
func TestMatchesPattern(t *testing.T) {
	for _, tt := range []struct {
		pattern, s string
		want       bool
	}{
		{"t3.micro", "t3.micro", true},
		{"t3.micro", "t3.micro2", false},
		{"t3.*", "t3.micro", true},
		{"t3.*", "t3.", true},
		{"t3.*", "t3a.micro", false},
		{"t3*.*", "t3a.micro", true},
		{"*.large", "c6i.large", true},
		{"*.large", "c6i.xlarge", false},
		{"*large", "c6i.xlarge", true}, // * takes the x too, as IAM matches it
		{"*.large", "c6i.medium", false},
		{"c6i.*xlarge", "c6i.2xlarge", true},
		{"c6i.*xlarge", "c6i.large", false},
		{"c*i.*l*", "c6i.large", true},
		{"c*i.*l*", "c6g.large", false},
		{"a*a", "a", false}, // prefix and suffix may not overlap
		{"a*a", "aa", true},
		{"*", "anything", true},
	} {
		if got := matchesPattern(tt.pattern, tt.s); got != tt.want {
			t.Errorf("matchesPattern(%q, %q) = %v, want %v", tt.pattern, tt.s, got, tt.want)
		}
	}
}

// The flags take types, patterns of them and region names, separated by commas; * alone
// removes the restriction; anything else is refused naming the entry and what to give.
func TestParseAllowLists(t *testing.T) {
	for _, tt := range []struct {
		flag, value string
		want        []string // nil with ok: no restriction
		ok          bool
		errHas      []string
	}{
		{"--allow-instance-types", "t3.micro", []string{"t3.micro"}, true, nil},
		{"--allow-instance-types", "t3.*, c6i.large ,t3.*", []string{"t3.*", "c6i.large"}, true, nil},
		{"--allow-instance-types", "*.large,c6i.*xlarge,u-6tb1.metal", []string{"*.large", "c6i.*xlarge", "u-6tb1.metal"}, true, nil},
		{"--allow-instance-types", "*", nil, true, nil},
		{"--allow-instance-types", " * ", nil, true, nil},
		{"--allow-instance-types", "t3.micro,*", nil, false, []string{`holds *, which allows any`, "give * alone"}},
		{"--allow-instance-types", "t3.micro,,c6i.large", nil, false, []string{"empty entry", "single commas"}},
		{"--allow-instance-types", "", nil, false, []string{"empty entry"}},
		{"--allow-instance-types", "c6i.larg", nil, false, []string{`"c6i.larg" is not an instance type or a pattern of one`, "such as t3.*"}},
		{"--allow-instance-types", "T3.micro", nil, false, []string{`"T3.micro" is not an instance type`}},
		{"--allow-instance-types", "t3.?", nil, false, []string{`"t3.?"`}},
		{"--allow-instance-types", "t3.*.x", nil, false, []string{`"t3.*.x"`}},
		{"--allow-instance-types", "**", nil, false, []string{`"**"`}},
		{"--allow-regions", "us-east-1,us-gov-west-1, eu-west-2", []string{"us-east-1", "us-gov-west-1", "eu-west-2"}, true, nil},
		{"--allow-regions", "*", nil, true, nil},
		{"--allow-regions", "us-east", nil, false, []string{`--allow-regions: "us-east" is not an AWS region: did you mean "us-east-1"?`}},
		{"--allow-regions", "US-EAST-1", nil, false, []string{`"US-EAST-1" is not an AWS region`}},
		{"--allow-regions", "nowhere", nil, false, []string{`"nowhere" is not an AWS region: give region names such as us-east-1`}},
		{"--allow-regions", "us-*", nil, false, []string{`"us-*" is not an AWS region`}},
	} {
		parse := parseAllowInstanceTypes
		if tt.flag == "--allow-regions" {
			parse = parseAllowRegions
		}
		got, err := parse(tt.flag, tt.value)
		if (err == nil) != tt.ok {
			t.Errorf("%s %q: error %v, want ok %v", tt.flag, tt.value, err, tt.ok)
			continue
		}
		if err != nil {
			for _, w := range append(tt.errHas, tt.flag) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%s %q: error %q does not say %q", tt.flag, tt.value, err, w)
				}
			}
			continue
		}
		if !got.given || strings.Join(got.list, ",") != strings.Join(tt.want, ",") || (got.list == nil) != (tt.want == nil) {
			t.Errorf("%s %q = %+v, want given %v", tt.flag, tt.value, got, tt.want)
		}
	}
}

// A flag not given keeps the recorded list; given, it replaces it (nil: no restriction).
func TestAllowChangeApply(t *testing.T) {
	rec := []string{"t3.micro"}
	if got := (allowChange{}).apply(rec); strings.Join(got, ",") != "t3.micro" {
		t.Errorf("not given: %v", got)
	}
	if got := (allowChange{given: true}).apply(rec); got != nil {
		t.Errorf("* given: %v", got)
	}
	if got := (allowChange{given: true, list: []string{"c6i.large"}}).apply(rec); strings.Join(got, ",") != "c6i.large" {
		t.Errorf("list given: %v", got)
	}
}

func TestCheckHomeRegion(t *testing.T) {
	if err := (allowLists{}).checkHomeRegion("--allow-regions", "us-east-1"); err != nil {
		t.Errorf("no list: %v", err)
	}
	if err := (allowLists{Regions: []string{"us-west-2", "us-east-1"}}).checkHomeRegion("--allow-regions", "us-east-1"); err != nil {
		t.Errorf("listed: %v", err)
	}
	err := (allowLists{Regions: []string{"us-west-2", "eu-west-1"}}).checkHomeRegion("--allow-regions", "us-east-1")
	want := "--allow-regions us-west-2,eu-west-1 leaves out us-east-1, the region this deployment is in and where every item without a region runs: add us-east-1 to the list"
	if err == nil || err.Error() != want {
		t.Errorf("got %v, want %q", err, want)
	}
}

// Every item's first launch and every fallback candidate must be allowed; the first that
// is not is refused with its index, what it asks for, the list and the deploy that adds
// it. A candidate with no region runs in the sweep's.
func TestCheckItemsAgainstTheAllowLists(t *testing.T) {
	plain := item{Index: 0, InstanceType: "t3.micro"}
	west := item{Index: 1, InstanceType: "t3.small", Region: "us-west-2"}
	fallbackType := item{Index: 2, InstanceType: "t3.micro", Fallback: &fallback{InstanceTypes: []string{"t3.micro", "c6i.large"}, SpotPrefer: true}}
	fallbackRegion := item{Index: 3, InstanceType: "t3.micro", Region: "us-east-1", Fallback: &fallback{Regions: []string{"us-east-1", "eu-west-1"}}}
	for _, tt := range []struct {
		name  string
		allow allowLists
		items []item
		want  string // "": allowed
	}{
		{"no lists", allowLists{}, []item{plain, west, fallbackType, fallbackRegion}, ""},
		{"every type matches", allowLists{InstanceTypes: []string{"t3.*", "c6i.large"}}, []item{plain, west, fallbackType, fallbackRegion}, ""},
		{"the first launch's type", allowLists{InstanceTypes: []string{"t3.micro"}}, []item{plain, west},
			"item 1 asks for instance type t3.small, which this deployment does not allow (it allows t3.micro): use an allowed instance type, " +
				"or ask whoever deploys spawn to add it with 'spawn deploy --allow-instance-types t3.micro,t3.small'"},
		{"a fallback type", allowLists{InstanceTypes: []string{"t3.*"}}, []item{plain, fallbackType},
			"item 2 falls back to instance type c6i.large, which this deployment does not allow (it allows t3.*): use an allowed instance type, " +
				"or ask whoever deploys spawn to add it with 'spawn deploy --allow-instance-types t3.*,c6i.large'"},
		{"the sweep's region", allowLists{Regions: []string{"eu-west-1", "us-west-2"}}, []item{west, plain},
			"item 0 asks for region us-east-1, which this deployment does not allow (it allows eu-west-1, us-west-2): use an allowed region, " +
				"or ask whoever deploys spawn to add it with 'spawn deploy --allow-regions eu-west-1,us-west-2,us-east-1'"},
		{"an item's region", allowLists{Regions: []string{"us-east-1"}}, []item{plain, west},
			"item 1 asks for region us-west-2"},
		{"a fallback region", allowLists{Regions: []string{"us-east-1"}}, []item{plain, fallbackRegion},
			"item 3 falls back to region eu-west-1"},
		{"both lists, both allowed", allowLists{InstanceTypes: []string{"t3.micro"}, Regions: []string{"us-east-1", "eu-west-1"}}, []item{plain, fallbackRegion}, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.allow.checkItems(tt.items, "us-east-1")
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tt.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tt.want)):
				t.Errorf("got %v, want %q", err, tt.want)
			}
		})
	}
}

// The recorded item's lists are what launch checks; an old deployment without an item
// allows anything.
func TestDeploymentItemAllowLists(t *testing.T) {
	var none *deploymentItem
	if a := none.allowLists(); a.InstanceTypes != nil || a.Regions != nil {
		t.Errorf("no item: %+v", a)
	}
	it := &deploymentItem{AllowedInstanceTypes: []string{"t3.*"}, AllowedRegions: []string{"us-east-1"}}
	if a := it.allowLists(); strings.Join(a.InstanceTypes, ",") != "t3.*" || strings.Join(a.Regions, ",") != "us-east-1" {
		t.Errorf("item: %+v", a)
	}
}

// Deploy reads the lists back from the policy it wrote (as IAM returns it, one-element
// lists possibly as strings), so a deploy without the flags keeps them.
func TestRecordedAllowListsRoundTrip(t *testing.T) {
	n := examplePolicyNames()
	for _, a := range []allowLists{
		{},
		{InstanceTypes: []string{"t3.*", "c6i.large"}},
		{Regions: []string{"us-east-1", "us-west-2"}},
		{InstanceTypes: []string{"t3.micro"}, Regions: []string{"us-east-1"}},
	} {
		n.allow = a
		got := recordedAllowLists(n.orchestratorPolicy().json())
		if strings.Join(got.InstanceTypes, ",") != strings.Join(a.InstanceTypes, ",") || strings.Join(got.Regions, ",") != strings.Join(a.Regions, ",") {
			t.Errorf("wrote %+v, read back %+v", a, got)
		}
	}
	scalar := `{"Statement":[{"Sid":"LaunchOnlyTaggedInstances","Condition":{"StringLike":{"ec2:InstanceType":"t3.micro"},"StringEquals":{"aws:RequestedRegion":"us-east-1"}}}]}`
	if got := recordedAllowLists(scalar); strings.Join(got.InstanceTypes, ",") != "t3.micro" || strings.Join(got.Regions, ",") != "us-east-1" {
		t.Errorf("one-element lists as strings: %+v", got)
	}
	if got := recordedAllowLists("not json"); got.InstanceTypes != nil || got.Regions != nil {
		t.Errorf("unreadable policy: %+v", got)
	}
}

// regionPoliciesIAM answers ListRolePolicies and GetRolePolicy from policies, one
// document per policy name; any other call panics.
type regionPoliciesIAM struct {
	deployIAMAPI
	policies map[string]string
}

func (f regionPoliciesIAM) ListRolePolicies(context.Context, *iam.ListRolePoliciesInput, ...func(*iam.Options)) (*iam.ListRolePoliciesOutput, error) {
	var names []string
	for n := range f.policies {
		names = append(names, n)
	}
	return &iam.ListRolePoliciesOutput{PolicyNames: names}, nil
}

func (f regionPoliciesIAM) GetRolePolicy(_ context.Context, in *iam.GetRolePolicyInput, _ ...func(*iam.Options)) (*iam.GetRolePolicyOutput, error) {
	return &iam.GetRolePolicyOutput{PolicyDocument: aws.String(f.policies[aws.ToString(in.PolicyName)])}, nil
}

// Deploy prints a line for each list it writes, keeps or removes, and none for a list
// nobody set. Another region's policy on the shared orchestrator role that allows more
// is named: IAM allows what any of the role's policies allows.
func TestReportAllowLists(t *testing.T) {
	n := examplePolicyNames()
	west := n
	west.region = "us-west-2"
	west.allow = allowLists{InstanceTypes: []string{"t3.micro", "t3.small"}}
	policies := map[string]string{regionPolicyName("us-east-1"): "ignored: this region's", regionPolicyName("us-west-2"): west.orchestratorPolicy().json()}
	for _, tt := range []struct {
		name          string
		before, after allowLists
		want          []string // name action reason
	}{
		{"none", allowLists{}, allowLists{}, nil},
		{"created", allowLists{}, allowLists{InstanceTypes: []string{"t3.*"}},
			[]string{"instance-types created allows t3.*"}},
		{"unchanged, in another order", allowLists{Regions: []string{"us-east-1", "eu-west-1"}}, allowLists{Regions: []string{"eu-west-1", "us-east-1"}},
			[]string{"regions unchanged allows eu-west-1, us-east-1; IAM does not enforce it while " + orchestratorRoleName +
				"'s policy for us-west-2 allows more: deploy there with the same list"}},
		{"updated and deleted, another region allowing more", allowLists{InstanceTypes: []string{"t3.micro"}, Regions: []string{"us-east-1"}},
			allowLists{InstanceTypes: []string{"t3.micro", "c6i.large"}},
			[]string{"instance-types updated allows t3.micro, c6i.large; IAM does not enforce it while " + orchestratorRoleName +
				"'s policy for us-west-2 allows more: deploy there with the same list", "regions deleted removed: any region may launch"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d := &deployer{log: zerolog.Nop(), names: n, allowBefore: tt.before, iam: regionPoliciesIAM{policies: policies}}
			d.names.allow = tt.after
			if err := d.reportAllowLists(context.Background()); err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, r := range d.results {
				if r.Kind != kindAllowList || r.ARN != d.names.tableARN(d.names.table) {
					t.Errorf("line %+v: want kind %s and the sweep table's ARN", r, kindAllowList)
				}
				got = append(got, r.Name+" "+r.Action+" "+r.Reason)
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// A list allows more than another when it restricts less, or has an entry none of the
// other's entries covers.
func TestAllowsMore(t *testing.T) {
	for _, tt := range []struct {
		theirs, mine []string
		want         bool
	}{
		{nil, nil, false},
		{[]string{"t3.micro"}, nil, false},
		{nil, []string{"t3.micro"}, true},
		{[]string{"t3.micro"}, []string{"t3.micro"}, false},
		{[]string{"t3.micro", "t3.mi*"}, []string{"t3.*"}, false},
		{[]string{"t3.*"}, []string{"t3.micro"}, true},
		{[]string{"us-east-1", "us-west-2"}, []string{"us-east-1"}, true},
	} {
		if got := allowsMore(tt.theirs, tt.mine); got != tt.want {
			t.Errorf("allowsMore(%v, %v) = %v, want %v", tt.theirs, tt.mine, got, tt.want)
		}
	}
}

// End to end on the emulator: deploy records --allow-instance-types and writes it into
// the orchestrator's policy; a launch asking for another type, first or as a fallback,
// is refused (exit 2) before anything is written; a deploy without the flag keeps the
// list, a dry run shows its removal without making it, and * removes it. Bad lists are
// refused before deploy creates anything.
func TestDeployAllowListsAndLaunchRefusesOutsideThem(t *testing.T) {
	a, boot, n, env := newDeployTest(t)
	startDeployedFunction(t, a, n)
	ctx := context.Background()
	db := dynamodb.NewFromConfig(a.cfg)

	for _, tt := range []struct{ flag, value, want string }{
		{"--allow-instance-types", "t3.micro,c6i.larg", `spawn: --allow-instance-types: "c6i.larg" is not an instance type or a pattern of one: `},
		{"--allow-regions", "us-west-2", "spawn: --allow-regions us-west-2 leaves out us-east-1, the region this deployment is in"},
	} {
		_, errOut, code := runSpawn(t, env, n.args(a, "deploy", "--bootstrap", boot, tt.flag, tt.value)...)
		if code != exitUsage || !strings.HasPrefix(errOut, tt.want) {
			t.Errorf("deploy %s %s: exit %d, stderr %q; want 2 and %q", tt.flag, tt.value, code, errOut, tt.want)
		}
		if _, err := db.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(n.table)}); !isNotFound(err) {
			t.Fatalf("deploy %s %s created table %s (%v)", tt.flag, tt.value, n.table, err)
		}
	}

	allowLine := func(doc resourcesDoc) string {
		for _, r := range doc.Resources {
			if r.Kind == kindAllowList {
				return r.Name + " " + r.Action + " " + r.Reason
			}
		}
		return ""
	}
	recorded := func() []string {
		t.Helper()
		it, err := readDeployment(ctx, db, n.table)
		if err != nil || it == nil {
			t.Fatalf("reading the deployment item: %v %v", it, err)
		}
		return it.AllowedInstanceTypes
	}
	inPolicy := func() allowLists {
		t.Helper()
		out, err := iam.NewFromConfig(a.cfg).GetRolePolicy(ctx, &iam.GetRolePolicyInput{
			RoleName: aws.String(orchestratorRoleName), PolicyName: aws.String(regionPolicyName("us-east-1"))})
		if err != nil {
			t.Fatal(err)
		}
		return recordedAllowLists(mustJSON(decodePolicy(t, aws.ToString(out.PolicyDocument))))
	}
	check := func(step string, doc resourcesDoc, wantLine string, want []string) {
		t.Helper()
		if got := allowLine(doc); got != wantLine {
			t.Errorf("%s: deploy printed %q, want %q", step, got, wantLine)
		}
		if got := recorded(); strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("%s: the deployment item records %v, want %v", step, got, want)
		}
		if got := inPolicy(); strings.Join(got.InstanceTypes, ",") != strings.Join(want, ",") || got.Regions != nil {
			t.Errorf("%s: the orchestrator policy allows %+v, want types %v", step, got, want)
		}
	}

	doc := runDeployJSON(t, env, n.args(a, "deploy", "--bootstrap", boot, "--allow-instance-types", "t3.micro")...)
	check("first deploy", doc, "instance-types created allows t3.micro", []string{"t3.micro"})

	dir := t.TempDir()
	for _, tt := range []struct{ name, file, want string }{
		{"a type", `{"defaults": {"command": "true", "ttl": "10m"}, "params": [{"lr": 1}, {"lr": 2, "instance_type": "c6i.large"}]}`,
			"spawn: item 1 asks for instance type c6i.large, which this deployment does not allow (it allows t3.micro): use an allowed instance type, " +
				"or ask whoever deploys spawn to add it with 'spawn deploy --allow-instance-types t3.micro,c6i.large'\n"},
		{"a fallback", `{"defaults": {"command": "true", "ttl": "10m", "instance_type": ["t3.micro", "c6i.large"]}, "params": [{"lr": 1}]}`,
			"spawn: item 0 falls back to instance type c6i.large, which this deployment does not allow"},
	} {
		path := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "-")+".json")
		if err := os.WriteFile(path, []byte(tt.file), 0o600); err != nil {
			t.Fatal(err)
		}
		_, errOut, code := runSpawn(t, env, n.args(a, "launch", "--param-file", path, "--yes")...)
		if code != exitUsage || !strings.HasPrefix(errOut, tt.want) {
			t.Errorf("launch with %s outside the list: exit %d, stderr %q; want 2 and %q", tt.name, code, errOut, tt.want)
		}
	}
	nothingLaunched := func(step string) {
		t.Helper()
		if ids := listSweepIDs(t, db, n.table); len(ids) != 0 {
			t.Errorf("%s: a refused launch recorded sweeps %v", step, ids)
		}
		objs, err := newS3Client(a.cfg, "").ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(n.bucket)})
		if err != nil || len(objs.Contents) != 0 {
			t.Errorf("%s: a refused launch left %d objects in the bucket (%v)", step, len(objs.Contents), err)
		}
	}
	nothingLaunched("launch")

	doc = runDeployJSON(t, env, n.args(a, "deploy", "--bootstrap", boot)...)
	check("deploy without the flag", doc, "instance-types unchanged allows t3.micro", []string{"t3.micro"})
	_, errOut, code := runSpawn(t, env, n.args(a, "launch", "--param-file", filepath.Join(dir, "a-type.json"), "--yes")...)
	if code != exitUsage || !strings.Contains(errOut, "c6i.large, which this deployment does not allow") {
		t.Errorf("launch after a deploy without the flag: exit %d, stderr %q", code, errOut)
	}
	nothingLaunched("launch after the second deploy")

	doc = runDeployJSON(t, env, n.args(a, "deploy", "--bootstrap", boot, "--allow-instance-types", "*", "--dry-run")...)
	check("dry run of a removal", doc, "instance-types deleted removed: any instance type may launch", []string{"t3.micro"})
	doc = runDeployJSON(t, env, n.args(a, "deploy", "--bootstrap", boot, "--allow-instance-types", "*")...)
	check("removal", doc, "instance-types deleted removed: any instance type may launch", nil)
	doc = runDeployJSON(t, env, n.args(a, "deploy", "--bootstrap", boot)...)
	check("deploy after the removal", doc, "", nil)
}
