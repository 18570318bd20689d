package main

import (
	"context"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
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
		members := make([]string, n)
		for i := range members {
			members[i] = fmt.Sprintf(`"p%02d": %d`, i, i)
		}
		return paramJSON(`"command": "run", "ttl": "1h"`, strings.Join(members, ", "))
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
	it.Command = `echo "lr=$PARAM_lr note=$PARAM_note index=$SPAWN_SWEEP_INDEX"; echo oops >&2; echo '{"loss": 0.25}' >"$SPAWN_RESULT_FILE"; exit 3`
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
	// aws s3 cp keeps a copy of what it would upload (the log, the result, then the exit record);
	// sts answers the instance role's user id.
	stub("aws", `case "$1 $2" in
"s3 cp") cp "$3" `+shellQuote(dir)+`/"uploaded.$(basename "$3")";;
"sts get-caller-identity") echo AROAEXAMPLE:i-0abc;;
esac`)
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
		"aws sts get-caller-identity --region eu-west-1 --query UserId --output text",
		"aws s3 cp " + work + "/item.log s3://spawn-sweeps-123456789012-us-east-1/logs/sw-20250101-abcd/7/AROAEXAMPLE:i-0abc.log --region=us-east-1 --only-show-errors",
		"aws s3 cp " + work + "/result.json s3://spawn-sweeps-123456789012-us-east-1/sweeps/sw-20250101-abcd/results/7/AROAEXAMPLE:i-0abc.json --region=us-east-1 --only-show-errors",
		"aws s3 cp " + work + "/exit.json s3://spawn-sweeps-123456789012-us-east-1/sweeps/sw-20250101-abcd/exit/7/2/AROAEXAMPLE:i-0abc.json --region=us-east-1 --only-show-errors",
		"aws ec2 create-tags --region eu-west-1 --resources i-0abc --tags Key=spawn:exit-code,Value=3",
		"shutdown -h now",
	}
	if !slices.Equal(got, want) {
		t.Errorf("steps:\n got %q\nwant %q", got, want)
	}
	// The exit record is what the engine reads when EC2 no longer shows the tag.
	exit, err := os.ReadFile(filepath.Join(dir, "uploaded.exit.json"))
	if err != nil {
		t.Fatal(err)
	}
	if rep := parseExitReport(exit); rep.ExitCode == nil || *rep.ExitCode != 3 || rep.RanSeconds <= 0 {
		t.Errorf("exit record %q, want exit code 3 and the uptime", exit)
	}
	// The result is what the command wrote, as written.
	if res, err := os.ReadFile(filepath.Join(dir, "uploaded.result.json")); err != nil || string(res) != "{\"loss\": 0.25}\n" {
		t.Errorf("uploaded result %q (%v)", res, err)
	}
	log, err := os.ReadFile(filepath.Join(dir, "uploaded.item.log"))
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

// TestResolveAMIsStable: items without an AMI get the current Amazon Linux image once per
// region and type; the sweep keeps it, so a newer image published mid-sweep does not
// change a retried launch's parameters (its ClientToken would no longer match them).
func TestResolveAMIsStable(t *testing.T) {
	var mu sync.Mutex
	current, calls := "ami-11111111", 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		fmt.Fprintf(w, `{"Parameter": {"Name": "al2023", "Type": "String", "Value": %q}}`, current)
	}))
	defer srv.Close()
	d := &engineDeps{cfg: aws.Config{Region: "us-east-1", BaseEndpoint: aws.String(srv.URL),
		Credentials: credentials.NewStaticCredentialsProvider("a", "b", "")}}
	sw := &sweep{SweepID: "sw-ami", Region: "us-east-1"}
	items := []item{{Index: 0, InstanceType: "t3.micro"}, {Index: 1, InstanceType: "t3.micro"},
		{Index: 2, InstanceType: "t3.micro", AMI: "ami-99999999"}, {Index: 3, InstanceType: "t3.micro", Region: "eu-west-1"}}
	ctx := context.Background()
	if err := d.resolveAMIs(ctx, sw, items); err != nil {
		t.Fatal(err)
	}
	if items[0].AMI != "ami-11111111" || items[1].AMI != "ami-11111111" || items[2].AMI != "ami-99999999" || calls != 2 {
		t.Fatalf("items %+v after %d lookups", items, calls)
	}
	if sw.AMIs["us-east-1/t3.micro"] != "ami-11111111" || sw.AMIs["eu-west-1/t3.micro"] != "ami-11111111" {
		t.Fatalf("sweep keeps %v", sw.AMIs)
	}
	mu.Lock()
	current = "ami-22222222"
	mu.Unlock()
	again := []item{{Index: 0, InstanceType: "t3.micro"}}
	if err := d.resolveAMIs(ctx, sw, again); err != nil || again[0].AMI != "ami-11111111" {
		t.Errorf("a later invocation resolved %q (%v), want the sweep's ami-11111111", again[0].AMI, err)
	}
}
