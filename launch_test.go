package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
)

// A name of its own: other test files of the package may define their own -update.
var updateLaunchGolden = flag.Bool("update-launch", false, "rewrite the launch golden files under testdata/params")

// launchGolden compares got with testdata/params/name, or rewrites it with -update-launch.
func launchGolden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", "params", name)
	if *updateLaunchGolden {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run %s -update-launch to create it)", err, t.Name())
	}
	if got != string(want) {
		t.Errorf("%s differs from the golden file (go test -run %s -update-launch rewrites it)\n--- got\n%s\n--- want\n%s", path, t.Name(), got, want)
	}
}

func mustParseParamFile(t testing.TB, path string) []item {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	items, err := parseParamFile(path, data)
	if err != nil {
		t.Fatalf("parse %s: %v", path, err)
	}
	return items
}

func TestParseParamFileMergesDefaults(t *testing.T) {
	items := mustParseParamFile(t, "testdata/params/good/grid.json")
	if len(items) != 5 {
		t.Fatalf("got %d items, want 5", len(items))
	}
	cmd := `python3 train.py --lr "$PARAM_lr" --seed "$PARAM_seed"`
	for i, it := range items {
		if it.Index != i || it.Command != cmd || it.IAMInstanceProfile != "spawnd-role" {
			t.Errorf("item %d: index %d, command %q, profile %q", i, it.Index, it.Command, it.IAMInstanceProfile)
		}
	}
	p := func(kv ...string) []param {
		var ps []param
		for i := 0; i < len(kv); i += 2 {
			ps = append(ps, param{kv[i], kv[i+1]})
		}
		return ps
	}
	tests := []struct {
		idx    int
		typ    string
		region string
		spot   bool
		price  string
		ttl    time.Duration
		params []param
	}{
		{0, "t3.micro", "", false, "", 2 * time.Hour, p("lr", "0.1", "model", "resnet50", "seed", "1")},
		{1, "t3.micro", "", false, "", 2 * time.Hour, p("lr", "0.01", "model", "resnet50", "seed", "1")},
		{2, "c7g.large", "", true, "0.05", 2 * time.Hour, p("lr", "0.1", "model", "resnet50", "seed", "2")},
		{3, "c7g.large", "eu-west-1", true, "", 24 * time.Hour, p("lr", "0.01", "model", "resnet50", "seed", "2")},
		{4, "t3.micro", "", false, "", 30 * time.Minute, p("lr", "0.001", "model", "vit-b16", "seed", "3")},
	}
	for _, tt := range tests {
		it := items[tt.idx]
		if it.InstanceType != tt.typ || it.Region != tt.region || it.Spot != tt.spot || it.SpotMaxPrice != tt.price || it.TTL != tt.ttl {
			t.Errorf("item %d: got type %q region %q spot %v price %q ttl %v", tt.idx, it.InstanceType, it.Region, it.Spot, it.SpotMaxPrice, it.TTL)
		}
		if !slices.Equal(it.Params, tt.params) {
			t.Errorf("item %d params: got %v, want %v", tt.idx, it.Params, tt.params)
		}
	}
}

// null takes a key of the defaults back out for one item.
func TestParseParamFileNullUnsetsDefault(t *testing.T) {
	data := `{"defaults": {"command": "run", "instance_type": "c7g.large", "ttl": "1h", "a": 1, "b": 2},
		"params": [{"a": null, "instance_type": null, "ttl": null}, {"command": null, "user_data": "#!/bin/sh"}, {"command": null}]}`
	_, err := parseParamFile("n.json", []byte(data))
	if err == nil || !strings.Contains(err.Error(), "params[2]: nothing to run") {
		t.Fatalf("an item whose command is unset must be refused, got %v", err)
	}
	items, err := parseParamFile("n.json", []byte(strings.Replace(data, `, {"command": null}]`, "]", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if it := items[0]; it.InstanceType != "t3.micro" || it.TTL != 0 || !slices.Equal(it.Params, []param{{"b", "2"}}) {
		t.Errorf("item 0: type %q, ttl %v, params %v", it.InstanceType, it.TTL, it.Params)
	}
	if it := items[1]; it.Command != "" || it.UserData != "#!/bin/sh" || it.InstanceType != "c7g.large" || len(it.Params) != 2 {
		t.Errorf("item 1: %+v", it)
	}
}

func TestParseParamFileDuplicateKeyInBigObject(t *testing.T) {
	var b strings.Builder
	b.WriteString(`{"params": [{"command": "x"`)
	for i := range 40 {
		fmt.Fprintf(&b, `, "k%d": %d`, i, i)
	}
	b.WriteString(`, "k3": 0}]}`)
	_, err := parseParamFile("d.json", []byte(b.String()))
	if err == nil || !strings.Contains(err.Error(), "params[0].k3: the key appears twice") {
		t.Errorf("got %v", err)
	}
}

func TestParseParamFileValues(t *testing.T) {
	data := "\xef\xbb\xbf" + `{"params": [{"command": "x", "s": "a\"b\u00e9", "n": -1.5e3, "b": false, "t": true,
		"security_group_ids": ["sg-0123456789abcdef0", "sg-01234567"], "ami": "resolve:ssm:/my/ami",
		"idle_timeout": "1d2h", "iam_instance_profile": "arn:aws:iam::123456789012:instance-profile/p"}]}`
	items, err := parseParamFile("v.json", []byte(data))
	if err != nil {
		t.Fatal(err)
	}
	it := items[0]
	want := []param{{"b", "false"}, {"n", "-1.5e3"}, {"s", `a"bé`}, {"t", "true"}}
	if !slices.Equal(it.Params, want) {
		t.Errorf("params: got %v, want %v", it.Params, want)
	}
	if it.IdleTimeout != 26*time.Hour || len(it.SecurityGroupIDs) != 2 || it.AMI != "resolve:ssm:/my/ami" {
		t.Errorf("got idle %v, groups %v, ami %q", it.IdleTimeout, it.SecurityGroupIDs, it.AMI)
	}
}

// badFiles pairs every file in testdata/params/bad with the place and fix its message names.
var badFiles = map[string]string{
	"missing-comma.json":             `missing-comma.json line 4, column 5: expected "," or "]" but found '{': a comma may be missing between two items`,
	"trailing-data.json":             `trailing-data.json line 2, column 1: extra data after the JSON object: the file must hold exactly one {...}`,
	"truncated.json":                 `truncated.json line 5, column 1: the file ends in the middle of the JSON: a closing } or ] or a quote is missing`,
	"raw-tab.json":                   `raw-tab.json line 4, column 18: a control character (a raw tab or line break?) inside a string: write it as \t or \n`,
	"empty-file.json":                `empty-file.json: the file is empty: write {"defaults": {...}, "params": [{...}, ...]}`,
	"not-an-object.json":             `not-an-object.json line 1: expected a JSON object {"defaults": {...}, "params": [...]}, found an array`,
	"unknown-top-key.json":           `unknown-top-key.json line 2: unknown top-level key "param": did you mean "params"?`,
	"missing-params.json":            `missing-params.json line 1: no "params": add "params": [{...}, ...]`,
	"empty-params.json":              `empty-params.json line 3, params: the list is empty: add one object per instance`,
	"item-not-object.json":           `item-not-object.json line 5, params[1]: expected an object of keys, found a string`,
	"command-and-user-data.json":     `command-and-user-data.json line 5, params[1]: both command (from defaults) and user_data are set: give command`,
	"no-command.json":                `no-command.json line 3, params[0]: nothing to run: give "command" (a shell line) or "user_data"`,
	"bad-duration.json":              `bad-duration.json line 7, params[3].ttl: "2 hours" is not a duration: use a Go duration like 90m or 2h30m, or days like 2d`,
	"defaults-bad-ttl.json":          `defaults-bad-ttl.json line 2, defaults.ttl: "soon" is not a duration`,
	"duration-as-number.json":        `duration-as-number.json line 4, params[0].idle_timeout: expected a duration string like "90m", "2h" or "1d", found a number`,
	"zero-ttl.json":                  `zero-ttl.json line 4, params[0].ttl: "0s" must be more than zero: give how long the instance may run`,
	"bad-instance-type.json":         `bad-instance-type.json line 5, params[1].instance_type: "t3micro" is not an instance type: use family.size, e.g. t3.micro`,
	"bad-region.json":                `bad-region.json line 2, defaults.region: "us-est-1" is not an AWS region: did you mean "us-east-1"?`,
	"spot-not-bool.json":             `spot-not-bool.json line 4, params[0].spot: expected true or false, found a string`,
	"price-without-spot.json":        `price-without-spot.json line 4, params[0]: spot_max_price is set but spot is not true: add "spot": true`,
	"security-groups-not-array.json": `security-groups-not-array.json line 4, params[0].security_group_ids: expected an array of strings like ["sg-0123456789abcdef0"], found a string`,
	"security-group-bad-id.json":     `security-group-bad-id.json line 4, params[0].security_group_ids[1]: "default" is not a security group id`,
	"bad-param-key.json":             `bad-param-key.json line 4, params[0].learning-rate: a param's key may hold only letters, digits and _ (it becomes env var PARAM_<key>)`,
	"case-of-known-key.json":         `case-of-known-key.json line 4, params[0].TTL: keys are case-sensitive: did you mean "ttl"?`,
	"duplicate-key.json":             `duplicate-key.json line 4, params[0].lr: the key appears twice in one object: keep one`,
	"param-object-value.json":        `param-object-value.json line 4, params[0].grid: a param's value must be a string, number or boolean, found an object`,
	"param-value-too-long.json":      `param-value-too-long.json line 5, params[1].note: the value is 300 characters, over EC2's tag value limit of 256`,
	"too-many-tags.json":             `too-many-tags.json line 10, params[1]: 45 params make 51 tags, over EC2's limit of 50 per instance: use at most 44 params per item`,
}

func TestLaunchRefusesBadFiles(t *testing.T) {
	files, err := filepath.Glob("testdata/params/bad/*.json")
	if err != nil || len(files) < 14 {
		t.Fatalf("want at least 14 broken files, got %d (%v)", len(files), err)
	}
	for _, path := range files {
		want, ok := badFiles[filepath.Base(path)]
		if !ok {
			t.Errorf("%s has no expected message in badFiles", path)
			continue
		}
		t.Run(filepath.Base(path), func(t *testing.T) {
			out, errOut, code := runSpawn(t, nil, "launch", "--dry-run", "--param-file", path)
			if code != exitUsage {
				t.Errorf("exit code %d, want %d", code, exitUsage)
			}
			if out != "" {
				t.Errorf("stdout should be empty, got %q", out)
			}
			if strings.Count(errOut, "\n") != 1 || !strings.HasPrefix(errOut, "spawn: testdata/params/bad/") {
				t.Errorf("want one line naming the file, got %q", errOut)
			}
			if !strings.Contains(errOut, want) {
				t.Errorf("stderr %q\nlacks %q", errOut, want)
			}
		})
	}
}

func TestLaunchRefusesBadFlags(t *testing.T) {
	good := "testdata/params/good/grid.json"
	tests := []struct {
		args []string
		want string
	}{
		{[]string{}, "--param-file is required"},
		{[]string{"--param-file", "testdata/params/nope.json"}, "--param-file testdata/params/nope.json does not exist: check the path"},
		{[]string{"--param-file", good, "extra"}, `unexpected argument "extra": give the file with --param-file`},
		{[]string{"--param-file", good, "--max-concurrent", "0"}, "--max-concurrent 0: must be at least 1"},
		{[]string{"--param-file", good, "--launch-delay", "-1s"}, "--launch-delay -1s: must not be negative"},
		{[]string{"--param-file", good, "--poll-interval", "0s"}, "--poll-interval 0s: must be at least 1s"},
		{[]string{"--param-file", good, "--ttl", "soon"}, `invalid value "soon" for flag -ttl: not a duration: use 90m, 2h30m or 2d`},
		{[]string{"--param-file", good, "--ttl", "0s"}, "--ttl 0s is not more than zero"},
		{[]string{"--param-file", good, "--idle-timeout", "30s"}, "--idle-timeout 30s is under 1m"},
		{[]string{"--param-file", good, "--no-detach"}, "--no-detach needs --ttl or --idle-timeout: give one"},
		{[]string{"--param-file", good, "--detach", "--no-detach", "--ttl", "1h"}, "--detach and --no-detach contradict each other"},
		{[]string{"--param-file", good, "--name", " "}, "--name is empty"},
		{[]string{"--param-file", good, "--name", strings.Repeat("n", 129)}, "--name is over 128 characters"},
		{[]string{"--param-file", "testdata/params/good/max-tags.json", "--ttl", "1h"}, "max-tags.json, params[1]: with --ttl the instance also gets tag spawn:ttl, making 51 tags, over EC2's limit of 50"},
	}
	for _, tt := range tests {
		args := append([]string{"launch", "--dry-run"}, tt.args...)
		_, errOut, code := runSpawn(t, nil, args...)
		// A value the flag package refuses is followed by the command's usage text.
		oneLine := strings.Count(errOut, "\n") == 1 || strings.HasPrefix(tt.want, "invalid value")
		if code != exitUsage || !strings.Contains(errOut, tt.want) || !oneLine {
			t.Errorf("%v: exit %d, stderr %q; want exit 2 and %q", tt.args, code, errOut, tt.want)
		}
	}
	// Without --ttl the same file is fine: the limit counts spawn:ttl only when there is one.
	if _, errOut, code := runSpawn(t, nil, "launch", "--dry-run", "--param-file", "testdata/params/good/max-tags.json"); code != 0 {
		t.Errorf("max-tags.json without --ttl: exit %d, %s", code, errOut)
	}
}

func TestLaunchDryRunPlanGolden(t *testing.T) {
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	for _, tt := range []struct {
		name string
		args []string
	}{
		{"grid", []string{"--max-concurrent", "3"}},
		{"grid-no-detach", []string{"--no-detach", "--ttl", "90m", "--name", "lr-search"}},
		{"max-tags", nil},
		{"mixed", []string{"--output", "text"}},
	} {
		file := strings.TrimSuffix(tt.name, "-no-detach")
		args := append([]string{"launch", "--dry-run", "--region", "us-east-1", "--param-file", "testdata/params/good/" + file + ".json"}, tt.args...)
		out, errOut, code := runSpawn(t, nil, args...)
		if code != 0 {
			t.Fatalf("%s: exit %d, %s", tt.name, code, errOut)
		}
		launchGolden(t, "good/"+tt.name+".plan.golden", out)
		out, errOut, code = runSpawn(t, nil, append(args, "--output", "json")...)
		if code != 0 {
			t.Fatalf("%s json: exit %d, %s", tt.name, code, errOut)
		}
		launchGolden(t, "good/"+tt.name+".plan.json.golden", out)
	}
}

func TestClientToken(t *testing.T) {
	seen := map[string]string{}
	for _, id := range []string{"sweep-1", "sweep-11", "sweep-1\x001", strings.Repeat("s", 200)} {
		for index := range 300 {
			for attempt := 1; attempt <= 3; attempt++ {
				tok := clientToken(id, index, attempt)
				if len(tok) == 0 || len(tok) > 64 {
					t.Fatalf("token %q is %d characters; EC2 takes 1 to 64", tok, len(tok))
				}
				if tok != clientToken(id, index, attempt) {
					t.Fatalf("token of (%q, %d, %d) is not stable", id, index, attempt)
				}
				key := fmt.Sprintf("%q/%d/%d", id, index, attempt)
				if prev, dup := seen[tok]; dup {
					t.Fatalf("%s and %s share token %s", prev, key, tok)
				}
				seen[tok] = key
			}
		}
	}
}

func tagsByKey(tags []ec2types.Tag) map[string]string {
	m := map[string]string{}
	for _, tg := range tags {
		m[aws.ToString(tg.Key)] = aws.ToString(tg.Value)
	}
	return m
}

func TestRunInstancesInput(t *testing.T) {
	items := mustParseParamFile(t, "testdata/params/good/grid.json")
	sw := &sweep{SweepID: "sw-123", SweepName: "grid", S3Bucket: "bkt", Region: "us-east-1", TTL: "3h"}

	it := items[2] // spot with a price, own ttl 2h from defaults
	it.AMI = "ami-0123456789abcdef0"
	in := runInstancesInput(sw, it, 2)
	if aws.ToInt32(in.MinCount) != 1 || aws.ToInt32(in.MaxCount) != 1 || aws.ToString(in.ImageId) != it.AMI ||
		in.InstanceType != "c7g.large" || in.InstanceInitiatedShutdownBehavior != ec2types.ShutdownBehaviorTerminate {
		t.Errorf("basic fields: %+v", in)
	}
	if aws.ToString(in.ClientToken) != clientToken("sw-123", 2, 2) {
		t.Errorf("client token %q", aws.ToString(in.ClientToken))
	}
	if in.IamInstanceProfile == nil || aws.ToString(in.IamInstanceProfile.Name) != "spawnd-role" {
		t.Errorf("instance profile %+v", in.IamInstanceProfile)
	}
	mo := in.InstanceMarketOptions
	if mo == nil || mo.MarketType != ec2types.MarketTypeSpot || mo.SpotOptions.SpotInstanceType != ec2types.SpotInstanceTypeOneTime ||
		mo.SpotOptions.InstanceInterruptionBehavior != ec2types.InstanceInterruptionBehaviorTerminate || aws.ToString(mo.SpotOptions.MaxPrice) != "0.05" {
		t.Errorf("spot options %+v", mo)
	}
	if len(in.TagSpecifications) != 2 || in.TagSpecifications[0].ResourceType != ec2types.ResourceTypeInstance ||
		in.TagSpecifications[1].ResourceType != ec2types.ResourceTypeVolume {
		t.Fatalf("tag specifications %+v", in.TagSpecifications)
	}
	got := tagsByKey(in.TagSpecifications[0].Tags)
	want := map[string]string{
		"spawn:sweep-id": "sw-123", "spawn:sweep-index": "2", "spawn:attempt": "2", "spawn:managed": "true",
		"Name": "grid-2", "spawn:ttl": "2h",
		"spawn:param:lr": "0.1", "spawn:param:model": "resnet50", "spawn:param:seed": "2",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("tags:\n got %v\nwant %v", got, want)
	}
	ud, err := base64.StdEncoding.DecodeString(aws.ToString(in.UserData))
	if err != nil || string(ud) != userDataScript(sw, it, 2, 2*time.Hour) {
		t.Errorf("user data is not the base64 of the script (%v)", err)
	}

	// An on-demand item without its own TTL takes the sweep's.
	it = items[0]
	it.TTL = 0
	in = runInstancesInput(sw, it, 1)
	if in.InstanceMarketOptions != nil {
		t.Errorf("on-demand item has market options %+v", in.InstanceMarketOptions)
	}
	if got := tagsByKey(in.TagSpecifications[0].Tags)["spawn:ttl"]; got != "3h" {
		t.Errorf("sweep-wide ttl tag: got %q, want 3h", got)
	}
	// No TTL anywhere: no spawn:ttl tag and no shutdown timer.
	in = runInstancesInput(&sweep{SweepID: "s", SweepName: "n", S3Bucket: "b"}, it, 1)
	if _, ok := tagsByKey(in.TagSpecifications[0].Tags)["spawn:ttl"]; ok {
		t.Errorf("spawn:ttl tag without any TTL")
	}
}

// The file's tag count and the real tags come from the same list: an item at the limit
// is accepted and really gets 50 tags, one more param is refused.
func TestTagLimitMatchesRealTags(t *testing.T) {
	mk := func(n int) []byte {
		var b strings.Builder
		b.WriteString(`{"defaults": {"command": "run", "ttl": "1h"}, "params": [{`)
		for i := range n {
			if i > 0 {
				b.WriteString(",")
			}
			fmt.Fprintf(&b, `"p%02d": %d`, i, i)
		}
		b.WriteString("}]}")
		return []byte(b.String())
	}
	n := maxTagsPerResource - len(fixedTags("", "", 0, 0, time.Hour))
	items, err := parseParamFile("limit.json", mk(n))
	if err != nil {
		t.Fatalf("%d params with a TTL should fit: %v", n, err)
	}
	sw := &sweep{SweepID: "s", SweepName: "limit", S3Bucket: "b"}
	if got := len(runInstancesInput(sw, items[0], 1).TagSpecifications[0].Tags); got != maxTagsPerResource {
		t.Errorf("an item at the limit got %d tags, want %d", got, maxTagsPerResource)
	}
	if _, err := parseParamFile("limit.json", mk(n+1)); err == nil || exitCode(err) != exitUsage {
		t.Errorf("%d params should be refused with a usage error, got %v", n+1, err)
	}
}

func testSweepAndItem() (*sweep, item) {
	sw := &sweep{SweepID: "sw-20250101-abcd", SweepName: "grid", S3Bucket: "spawn-sweeps-123456789012-us-east-1", Region: "us-east-1"}
	it := item{Index: 7, InstanceType: "t3.micro", Command: `python3 train.py --lr "$PARAM_lr" > out.txt && echo 'done'`,
		Params: []param{{"lr", "0.1"}, {"note", "it's $HOME"}}}
	return sw, it
}

func TestUserDataScriptGolden(t *testing.T) {
	sw, it := testSweepAndItem()
	script := userDataScript(sw, it, 1, 90*time.Second+2*time.Hour)
	launchGolden(t, "userdata.golden", script)
	lines := strings.Split(script, "\n")
	first := ""
	for _, l := range lines[1:] {
		if l != "" && !strings.HasPrefix(l, "#") {
			first = l
			break
		}
	}
	// 2h1m30s rounds up to 122 minutes, and the timer comes before anything else runs.
	if !strings.HasPrefix(first, "shutdown -h +122 ") {
		t.Errorf("first command is %q; the TTL must be armed first", first)
	}
	if out, err := exec.Command("bash", "-n", "-c", script).CombinedOutput(); err != nil {
		t.Errorf("bash -n: %v: %s", err, out)
	}
	it.UserData, it.Command = "#cloud-config\n", ""
	if got := userDataScript(sw, it, 1, time.Hour); got != it.UserData {
		t.Errorf("user_data must be used verbatim, got %q", got)
	}
}

// hostile values must reach the command byte for byte and never run.
var hostileValues = []string{
	`'; touch pwned; echo '`,
	`$(touch pwned)`,
	"`touch pwned`",
	`"; touch pwned; "`,
	"a\nb\ntouch pwned",
	`\'; touch pwned #`,
	`'\''`,
	`${IFS}touch${IFS}pwned`,
	`!! $PATH * ? [a] ~ & | ; < > ( ) { }`,
	"ünïcödé ✓ \t tab",
	"",
}

func TestUserDataExportsResistInjection(t *testing.T) {
	sw, it := testSweepAndItem()
	sw.SweepID = `x'; touch pwned; '`
	it.Params = nil
	for i, v := range hostileValues {
		it.Params = append(it.Params, param{"v" + strconv.Itoa(i), v})
	}
	exports := envExports(sw, it, 1)
	if out, err := exec.Command("bash", "-n", "-c", exports).CombinedOutput(); err != nil {
		t.Fatalf("bash -n: %v: %s", err, out)
	}
	dir := t.TempDir()
	var printer strings.Builder
	printer.WriteString(exports)
	printer.WriteString(`printf '%s\0' "$SPAWN_SWEEP_ID"`)
	for _, p := range it.Params {
		fmt.Fprintf(&printer, ` "$PARAM_%s"`, p.Key)
	}
	cmd := exec.Command("bash", "-c", printer.String())
	cmd.Dir = dir
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("bash: %v", err)
	}
	got := strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
	want := append([]string{sw.SweepID}, hostileValues...)
	if !slices.Equal(got, want) {
		t.Errorf("values changed on the way:\n got %q\nwant %q", got, want)
	}
	if _, err := os.Stat(filepath.Join(dir, "pwned")); err == nil {
		t.Fatal("a value ran a command")
	}
}

// The whole script runs with stand-ins for shutdown, curl, aws and systemd-run that
// record their arguments: the order of its steps and what reaches AWS are checked.
func TestUserDataScriptRuns(t *testing.T) {
	sw, it := testSweepAndItem()
	it.Command = `echo "lr=$PARAM_lr note=$PARAM_note index=$SPAWN_SWEEP_INDEX"; echo oops >&2; exit 3`
	it.Params[1].Value = "it's $HOME\n$(touch pwned)`touch pwned`'"
	script := userDataScript(sw, it, 2, 30*time.Minute)

	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	work := filepath.Join(dir, "work")
	calls := filepath.Join(dir, "calls")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	stub := func(name, body string) {
		s := "#!/bin/bash\nprintf '%s\\n' \"" + name + " $*\" >> " + shellQuote(calls) + "\n" + body + "\n"
		if err := os.WriteFile(filepath.Join(bin, name), []byte(s), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	stub("shutdown", "")
	stub("systemd-run", "")
	stub("curl", `case "$*" in *api/token*) echo TOKEN;; *instance-id*) echo i-0abc;; *region*) echo eu-west-1;; esac`)
	// aws s3 cp keeps a copy of the log it would upload.
	stub("aws", `if [ "$1" = s3 ]; then cp "$3" `+shellQuote(filepath.Join(dir, "uploaded.log"))+`; fi`)
	scriptPath := filepath.Join(dir, "user-data")
	if err := os.WriteFile(scriptPath, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("bash", scriptPath)
	cmd.Env = []string{"PATH=" + bin + ":" + os.Getenv("PATH"), "SPAWN_DIR=" + work}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("script: %v: %s", err, out)
	}
	rec, err := os.ReadFile(calls)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, l := range strings.Split(strings.TrimSpace(string(rec)), "\n") {
		if !strings.HasPrefix(l, "curl ") {
			got = append(got, l)
		}
	}
	want := []string{
		"shutdown -h +30",
		"aws s3 cp " + work + "/item.log s3://spawn-sweeps-123456789012-us-east-1/sweeps/sw-20250101-abcd/logs/7.log --region=us-east-1 --only-show-errors",
		"aws ec2 create-tags --region eu-west-1 --resources i-0abc --tags Key=spawn:exit-code,Value=3",
		"shutdown -h now",
	}
	if !slices.Equal(got, want) {
		t.Errorf("steps:\n got %q\nwant %q", got, want)
	}
	log, err := os.ReadFile(filepath.Join(dir, "uploaded.log"))
	if err != nil {
		t.Fatal(err)
	}
	if string(log) != "lr=0.1 note="+it.Params[1].Value+" index=7\noops\n" {
		t.Errorf("uploaded log %q", log)
	}
	if _, err := os.Stat(filepath.Join(work, "pwned")); err == nil {
		t.Error("a param value ran a command")
	}
}

func TestInstanceArch(t *testing.T) {
	for typ, want := range map[string]string{
		"t3.micro": "x86_64", "m7g.large": "arm64", "c7gn.16xlarge": "arm64", "t4g.nano": "arm64",
		"r8g.xlarge": "arm64", "x2gd.metal": "arm64", "im4gn.large": "arm64", "is4gen.xlarge": "arm64",
		"a1.medium": "arm64", "hpc7g.4xlarge": "arm64", "g5g.xlarge": "arm64", "g4dn.xlarge": "x86_64",
		"m7i-flex.large": "x86_64", "u-6tb1.metal": "x86_64", "c7a.large": "x86_64", "p5.48xlarge": "x86_64",
		"m7gd.large": "arm64", "inf2.xlarge": "x86_64", "trn1.2xlarge": "x86_64",
	} {
		if got := instanceArch(typ); got != want {
			t.Errorf("instanceArch(%q) = %s, want %s", typ, got, want)
		}
	}
}

func TestValidInstanceType(t *testing.T) {
	for _, s := range []string{"t3.micro", "c7gn.16xlarge", "u-6tb1.metal", "mac2-m2pro.metal", "c6i.metal-24xl",
		"u7i-12tb.224xlarge", "m7i-flex.large", "p4de.24xlarge", "x2iedn.xlarge"} {
		if !validInstanceType(s) {
			t.Errorf("%q refused", s)
		}
	}
	for _, s := range []string{"", "t3", "t3micro", "t3.", ".micro", "T3.micro", "t3.micro.x", "t3.huge", "t.micro",
		"t3.0xlarge", "-t3.micro", "t3-.micro", "t3.metal-xl", "t3 .micro"} {
		if validInstanceType(s) {
			t.Errorf("%q accepted", s)
		}
	}
}

func TestParseDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"90m": 90 * time.Minute, "2h30m": 150 * time.Minute, "2d": 48 * time.Hour, "1d12h": 36 * time.Hour,
		"1.5d": 36 * time.Hour, "0.5h": 30 * time.Minute, "3660d": 3660 * 24 * time.Hour,
	} {
		if got, err := parseDuration(in); err != nil || got != want {
			t.Errorf("parseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "d", "2", "2 hours", "d2", "1e3d", "1d-2h", "-d", "2dd", "1d2", "3661d", "3660d1h", "87841h"} {
		if _, err := parseDuration(in); err == nil {
			t.Errorf("parseDuration(%q) accepted", in)
		}
	}
}

type fakeSSMParameters struct {
	values map[string]string
	asked  []string
}

func (f *fakeSSMParameters) GetParameter(_ context.Context, in *ssm.GetParameterInput, _ ...func(*ssm.Options)) (*ssm.GetParameterOutput, error) {
	name := aws.ToString(in.Name)
	f.asked = append(f.asked, name)
	v, ok := f.values[name]
	if !ok {
		return nil, errors.New("ParameterNotFound")
	}
	return &ssm.GetParameterOutput{Parameter: &ssmtypes.Parameter{Name: in.Name, Value: aws.String(v)}}, nil
}

func TestResolveAMIErrors(t *testing.T) {
	f := &fakeSSMParameters{values: map[string]string{al2023Parameter + "x86_64": "not-an-ami"}}
	if _, err := resolveAMI(context.Background(), f, "t3.micro"); err == nil || !strings.Contains(err.Error(), `holds no AMI id: set "ami"`) {
		t.Errorf("bad value: %v", err)
	}
	_, err := resolveAMI(context.Background(), f, "m7g.large")
	if err == nil || !strings.Contains(err.Error(), al2023Parameter+"arm64") || !strings.Contains(err.Error(), `set "ami" in the parameter file`) {
		t.Errorf("missing parameter: %v", err)
	}
}

// resolveAMI reads the real SSM parameter names on the emulator. kumo lets the test put
// them; moto, like AWS, refuses writes under /aws/ and ships them pre-filled, so there the
// test reads what they hold and expects resolveAMI to pick the right one.
func TestResolveAMIFromSSM(t *testing.T) {
	a := newTestAWS(t)
	ctx := context.Background()
	api := ssm.NewFromConfig(a.cfg)
	want := map[string]string{"x86_64": "ami-0123456789abcdef0", "arm64": "ami-0fedcba9876543210"}
	for arch, ami := range want {
		name := al2023Parameter + arch
		_, err := api.PutParameter(ctx, &ssm.PutParameterInput{
			Name: aws.String(name), Value: aws.String(ami), Type: ssmtypes.ParameterTypeString, Overwrite: aws.Bool(true),
		})
		if err != nil && strings.Contains(err.Error(), "reserved parameter name") {
			out, gerr := api.GetParameter(ctx, &ssm.GetParameterInput{Name: aws.String(name)})
			if gerr != nil {
				t.Skipf("%s refuses to write %s and does not hold it: %v", a.backend.name, name, gerr)
			}
			want[arch] = aws.ToString(out.Parameter.Value)
			continue
		}
		if err != nil {
			t.Fatalf("%s: put %s: %v", a.backend.name, name, err)
		}
	}
	if want["x86_64"] == want["arm64"] {
		t.Fatalf("both architectures hold %s: the test could not tell them apart", want["arm64"])
	}
	for typ, arch := range map[string]string{"t3.micro": "x86_64", "c7g.large": "arm64"} {
		got, err := resolveAMI(ctx, api, typ)
		if err != nil || got != want[arch] {
			t.Errorf("%s: resolveAMI(%s) = %q, %v; want %q", a.backend.name, typ, got, err, want[arch])
		}
	}
}

// A broken file is refused before the CLI touches anything: the tables and the bucket
// named by the flags stay empty.
func TestLaunchBrokenFileCreatesNothing(t *testing.T) {
	a := newTestAWS(t)
	ctx := context.Background()
	ddb := dynamodb.NewFromConfig(a.cfg)
	s3c := s3.NewFromConfig(a.cfg, func(o *s3.Options) { o.UsePathStyle = true })
	table, itable, bucket := uniqueName("sweeps"), uniqueName("instances"), uniqueName("spawn-launch")
	if _, err := ddb.CreateTable(ctx, sweepTableInput(table)); err != nil {
		t.Fatal(err)
	}
	if _, err := ddb.CreateTable(ctx, instancesTableInput(itable)); err != nil {
		t.Fatal(err)
	}
	if _, err := s3c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(bucket)}); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_SESSION_TOKEN": "",
		"AWS_PROFILE": "", "AWS_CONFIG_FILE": filepath.Join(t.TempDir(), "none")}
	for _, f := range []string{"command-and-user-data.json", "bad-region.json", "missing-comma.json", "too-many-tags.json"} {
		_, errOut, code := runSpawn(t, env, "launch", "--param-file", "testdata/params/bad/"+f,
			"--endpoint-url", a.backend.endpoint, "--region", "us-east-1",
			"--table", table, "--instances-table", itable, "--bucket", bucket)
		if code != exitUsage || !strings.Contains(errOut, badFiles[f]) {
			t.Errorf("%s: exit %d, stderr %q", f, code, errOut)
		}
	}
	for _, tb := range []string{table, itable} {
		out, err := ddb.Scan(ctx, &dynamodb.ScanInput{TableName: aws.String(tb)})
		if err != nil {
			t.Fatal(err)
		}
		if len(out.Items) != 0 {
			t.Errorf("table %s has %d items after refused launches", tb, len(out.Items))
		}
	}
	objs, err := s3c.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(bucket)})
	if err != nil {
		t.Fatal(err)
	}
	if len(objs.Contents) != 0 {
		t.Errorf("bucket %s has %d objects after refused launches", bucket, len(objs.Contents))
	}
}

// paramFile100k is a file of n items with defaults, a few params each, and an override
// every tenth item.
func paramFile(n int) []byte {
	var b bytes.Buffer
	b.WriteString(`{"defaults": {"instance_type": "t3.micro", "ttl": "2h", "command": "python3 train.py", "model": "resnet50"},` + "\n" + `"params": [` + "\n")
	for i := range n {
		if i > 0 {
			b.WriteString(",\n")
		}
		fmt.Fprintf(&b, `  {"lr": 0.%03d, "seed": %d, "tag": "run-%d"`, i%1000, i, i)
		if i%10 == 0 {
			b.WriteString(`, "instance_type": "c7g.large", "spot": true`)
		}
		b.WriteString("}")
	}
	b.WriteString("\n]}\n")
	return b.Bytes()
}

func BenchmarkParseParamFile100k(b *testing.B) {
	const n = 100_000
	data := paramFile(n)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		items, err := parseParamFile("bench.json", data)
		if err != nil || len(items) != n {
			b.Fatalf("%d items, %v", len(items), err)
		}
	}
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "items/s")
}

// FuzzParseParamFile: any input either parses into consistent items or is refused with
// one usage-error line that names the file; nothing panics.
func FuzzParseParamFile(f *testing.F) {
	for _, dir := range []string{"testdata/params/good", "testdata/params/bad"} {
		files, _ := filepath.Glob(filepath.Join(dir, "*.json"))
		for _, p := range files {
			if data, err := os.ReadFile(p); err == nil {
				f.Add(data)
			}
		}
	}
	f.Add(paramFile(3))
	f.Fuzz(func(t *testing.T, data []byte) {
		items, err := parseParamFile("fuzz.json", data)
		if err != nil {
			msg := err.Error()
			if exitCode(err) != exitUsage || strings.Contains(msg, "\n") || !strings.HasPrefix(msg, "fuzz.json") {
				t.Fatalf("want a one-line usage error naming the file, got exit %d: %q", exitCode(err), msg)
			}
			return
		}
		if len(items) == 0 {
			t.Fatal("no items and no error")
		}
		sw := &sweep{SweepID: "s", SweepName: "f", S3Bucket: "b", Region: "us-east-1"}
		for i, it := range items {
			if it.Index != i || (it.Command == "") == (it.UserData == "") || !validInstanceType(it.InstanceType) {
				t.Fatalf("item %d inconsistent: %+v", i, it)
			}
			if !slices.IsSortedFunc(it.Params, func(a, b param) int { return strings.Compare(a.Key, b.Key) }) {
				t.Fatalf("item %d params not sorted: %v", i, it.Params)
			}
			if n := len(runInstancesInput(sw, it, 1).TagSpecifications[0].Tags); n > maxTagsPerResource {
				t.Fatalf("item %d has %d tags", i, n)
			}
		}
	})
}
