// Command demo runs spawn's main job end to end on an in-process AWS emulator (kumo),
// with no AWS account: deploy, the real binary as the Lambda orchestrator, a sweep
// launched and watched until it completes, then destroy. It is a development tool:
// kumo is imported here only, never by the spawn binary.
//
//	go run ./demo --spawn bin/spawn --bootstrap bin/spawn-linux-amd64
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
	"github.com/sivchari/kumo"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "demo: %v\n", err)
		os.Exit(1)
	}
}

type demo struct {
	spawn     string
	bootstrap string
	params    string
	endpoint  string
	cfg       aws.Config // the emulator's endpoint and credentials
	env       []string
	out       io.Writer
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	spawnBin := fs.String("spawn", "bin/spawn", "the spawn binary to run (CLI and Lambda function)")
	bootstrap := fs.String("bootstrap", "", "a Linux build of spawn to deploy as the function's bootstrap (default: --spawn)")
	params := fs.String("param-file", "testdata/demo-sweep.json", "the sweep to launch")
	failEvery := fs.Int("fail-every", 4, "the simulated workload exits 1 on the items whose index+1 is a multiple of n (0: never)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *bootstrap == "" {
		*bootstrap = *spawnBin
	}
	for _, f := range []string{*spawnBin, *bootstrap, *params} {
		if _, err := os.Stat(f); err != nil {
			return fmt.Errorf("%s: %w (run 'make demo', which builds it first)", f, err)
		}
	}

	start := time.Now()
	srv := kumo.NewServer()
	defer srv.Close()
	front, err := ec2Front(srv.URL) // the instance tags EC2 shows and kumo drops
	if err != nil {
		return err
	}
	defer front.Close()
	d := newDemo(*spawnBin, *bootstrap, *params, front.URL)
	d.say("AWS emulator (kumo) listening on %s — no AWS account is used", front.URL)

	// 1. deploy, and what AWS itself would provide.
	fnProc, err := d.deploy(ctx)
	defer stopProcess(fnProc)
	if err != nil {
		return err
	}
	if err := d.publishAMIs(ctx); err != nil {
		return err
	}

	// 2. the plan, then the launch.
	plan, err := d.plan(ctx)
	if err != nil {
		return err
	}
	sweepID, err := d.launch(ctx)
	if err != nil {
		return err
	}

	// 3. the workload: on real EC2 each instance runs its command, uploads its result and
	//    exit record, tags its exit code and powers off; here a simulator plays every instance.
	sim, err := newSimulator(ctx, d.cfg, sweepID, plan, *failEvery)
	if err != nil {
		return err
	}
	simCtx, stopSim := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); sim.run(simCtx) }()
	defer func() { stopSim(); wg.Wait() }()

	// 4. watch until the sweep ends, then rank its items.
	end, err := d.watch(ctx, sweepID)
	if err != nil {
		return err
	}
	if end.bad() > 0 {
		fmt.Fprintf(d.out, "(spawn status --wait exited %d: %d items failed, as --fail-every %d made them)\n", end.waitCode, end.bad(), *failEvery)
	}
	resultsErr := d.rank(ctx, sweepID, plan)

	// 5. clean up.
	d.say("spawn destroy --yes")
	if err := d.spawnCmd(ctx, "destroy", "--yes"); err != nil {
		return fmt.Errorf("spawn destroy: %w", err)
	}
	d.say("demo finished in %s", time.Since(start).Round(time.Second))
	fmt.Fprint(d.out, realAccountNotes)
	if resultsErr != nil {
		return fmt.Errorf("spawn results: %w", resultsErr)
	}
	return end.check(sim.failed())
}

// newDemo runs spawn and the SDK against the emulator at endpoint, with its test
// credentials only.
func newDemo(spawn, bootstrap, params, endpoint string) *demo {
	d := &demo{spawn: spawn, bootstrap: bootstrap, params: params, endpoint: endpoint, out: os.Stdout}
	d.env = append(cleanEnv(),
		"AWS_ACCESS_KEY_ID=test", "AWS_SECRET_ACCESS_KEY=test", "AWS_REGION=us-east-1",
		"SPAWN_ENDPOINT_URL="+endpoint, "NO_COLOR=",
	)
	d.cfg = aws.Config{
		Region:       "us-east-1",
		Credentials:  credentials.NewStaticCredentialsProvider("test", "test", ""),
		BaseEndpoint: aws.String(endpoint),
	}
	return d
}

// deploy runs spawn deploy, starting the function's process as soon as the function
// exists (deploy ends with a health-check invoke that the process must answer).
func (d *demo) deploy(ctx context.Context) (*exec.Cmd, error) {
	const fn = "spawn-sweep-orchestrator"
	deployDone := make(chan error, 1)
	go func() { deployDone <- d.spawnCmd(ctx, "deploy", "--bootstrap", d.bootstrap) }()
	d.say("spawn deploy")
	lc := lambda.NewFromConfig(d.cfg)
	var fnProc *exec.Cmd
	for fnProc == nil {
		select {
		case err := <-deployDone:
			return nil, fmt.Errorf("spawn deploy: %w", err)
		case <-time.After(100 * time.Millisecond):
		}
		if _, err := lc.GetFunction(ctx, &lambda.GetFunctionInput{FunctionName: aws.String(fn)}); err == nil {
			p, err := d.startFunction(fn)
			if err != nil {
				return nil, err
			}
			fnProc = p
		}
	}
	if err := <-deployDone; err != nil {
		return fnProc, fmt.Errorf("spawn deploy: %w", err)
	}
	return fnProc, nil
}

// publishAMIs: AWS publishes the latest Amazon Linux 2023 AMI ids as public SSM
// parameters; the emulator starts empty, so the demo publishes them as AWS would.
func (d *demo) publishAMIs(ctx context.Context) error {
	sc := ssm.NewFromConfig(d.cfg)
	for _, arch := range []string{"x86_64", "arm64"} {
		if _, err := sc.PutParameter(ctx, &ssm.PutParameterInput{
			Name:  aws.String("/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-" + arch),
			Value: aws.String("ami-0demo" + strings.ReplaceAll(arch, "_", "")), Type: ssmtypes.ParameterTypeString,
		}); err != nil {
			return fmt.Errorf("publishing the AMI parameter: %w", err)
		}
	}
	return nil
}

// plan shows the dry run (the grid expanded into items) and reads its JSON. A real
// instance gets its item's params in its user data; kumo keeps no user data, so the
// simulator takes them from here.
func (d *demo) plan(ctx context.Context) (demoPlan, error) {
	var plan demoPlan
	d.say("spawn launch --dry-run --param-file %s", d.params)
	if err := d.spawnCmd(ctx, "launch", "--dry-run", "--param-file", d.params); err != nil {
		return plan, fmt.Errorf("spawn launch --dry-run: %w", err)
	}
	doc, err := d.spawnOut(ctx, "launch", "--dry-run", "--param-file", d.params, "--output", "json")
	if err != nil {
		return plan, fmt.Errorf("spawn launch --dry-run --output json: %w", err)
	}
	if err := json.Unmarshal([]byte(doc), &plan); err != nil {
		return plan, fmt.Errorf("reading the dry run's plan: %w", err)
	}
	return plan, nil
}

// launch starts the sweep and returns its id.
func (d *demo) launch(ctx context.Context) (string, error) {
	d.say("spawn launch --param-file %s --max-concurrent 3 --poll-interval 2s", d.params)
	out, err := d.spawnOut(ctx, "launch", "--param-file", d.params, "--name", "demo", "--max-concurrent", "3", "--poll-interval", "2s", "--output", "json")
	if err != nil {
		return "", fmt.Errorf("spawn launch: %w", err)
	}
	id := jsonField(out, "sweep_id")
	if id == "" {
		return "", fmt.Errorf("spawn launch printed no sweep id: %s", out)
	}
	return id, nil
}

// sweepEnd is how the sweep ended, by spawn status.
type sweepEnd struct {
	Status string `json:"status"`
	Counts struct {
		Succeeded, Failed, Expired, Unknown, Cancelled int
	} `json:"counts"`
	waitCode int // status --wait's exit code
}

func (e *sweepEnd) bad() int { return e.Counts.Failed + e.Counts.Expired + e.Counts.Unknown }

// check holds the end to what the simulator did: COMPLETED, the items it failed failed,
// and status --wait's exit code 3 exactly when some did (README, Exit codes).
func (e *sweepEnd) check(simFailed int) error {
	want := 0
	if e.bad() > 0 {
		want = 3
	}
	switch {
	case e.Status != "COMPLETED":
		return fmt.Errorf("the sweep ended %s, not COMPLETED (the function's log above says why)", e.Status)
	case e.bad() != simFailed:
		return fmt.Errorf("%d items failed, expired or ended unknown; the simulator failed %d", e.bad(), simFailed)
	case e.waitCode != want:
		return fmt.Errorf("spawn status --wait exited %d, not %d, with %d items failed", e.waitCode, want, e.bad())
	}
	return nil
}

// watch shows status --watch --wait until the sweep ends, then reads how it ended.
func (d *demo) watch(ctx context.Context, sweepID string) (*sweepEnd, error) {
	d.say("spawn status --watch --wait %s", sweepID)
	code := exitCodeOf(d.spawnCmd(ctx, "status", "--watch", "--wait", "--interval", "1s", sweepID))
	doc, err := d.spawnOut(ctx, "status", "--output", "json", sweepID)
	if err != nil {
		return nil, fmt.Errorf("spawn status: %w", err)
	}
	end := &sweepEnd{waitCode: code}
	if err := json.Unmarshal([]byte(doc), end); err != nil {
		return nil, fmt.Errorf("reading spawn status's document: %w", err)
	}
	return end, nil
}

// rank shows the best five items by the sweep's objective (by index without one).
func (d *demo) rank(ctx context.Context, sweepID string, plan demoPlan) error {
	args := []string{"results", sweepID}
	if o := plan.Objective; o != nil {
		key := o.Metric
		if o.Goal == "max" {
			key = "-" + key
		}
		args = append(args, "--sort", key)
	}
	args = append(args, "--top", "5")
	d.say("spawn %s", strings.Join(args, " "))
	return d.spawnCmd(ctx, args...)
}

const realAccountNotes = `
Where a real AWS account differs from this demo:
  - instances are real EC2 instances: they boot Amazon Linux 2023, run each item's command
    with PARAM_* in the environment, upload the log, the result the command wrote to
    $SPAWN_RESULT_FILE and an exit record to S3 under the instance role's own name
    (<role id>:<instance id>), tag spawn:exit-code and power off; here a simulator does
    the uploads with the demo's credentials, makes the metrics up from the params (a
    formula whose acc is highest near lr 0.02 and batch 48: nothing trains) and finds
    each instance's item in the engine's instance table, as the emulator keeps no user
    data; on AWS the ranking is whatever your command measured;
  - the orchestrator runs in AWS Lambda and re-invokes itself before its 15-minute limit;
    here the same binary serves the emulator's Lambda runtime API;
  - 'spawn deploy' needs the IAM permissions listed in the README; costs are real
    (EC2 time, plus about a cent of Lambda and DynamoDB per sweep-hour).
`

// demoPlan is what the demo reads of 'spawn launch --dry-run --output json'.
type demoPlan struct {
	Objective *struct {
		Metric string `json:"metric"`
		Goal   string `json:"goal"`
	} `json:"objective"`
	Items []struct {
		Index  int               `json:"index"`
		Params map[string]string `json:"params"`
	} `json:"items"`
}

// exitCodeOf is a command's exit code: 0 for no error, -1 when it did not exit by itself.
func exitCodeOf(err error) int {
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.ExitCode()
	}
	return -1
}

func (d *demo) say(format string, args ...any) {
	fmt.Fprintf(d.out, "\n==> "+format+"\n", args...)
}

func (d *demo) spawnCmd(ctx context.Context, args ...string) error {
	cmd := exec.CommandContext(ctx, d.spawn, args...)
	cmd.Env = d.env
	cmd.Stdout, cmd.Stderr, cmd.Stdin = os.Stdout, os.Stderr, os.Stdin
	return cmd.Run()
}

func (d *demo) spawnOut(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, d.spawn, args...)
	cmd.Env = d.env
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	return string(out), err
}

// startFunction runs the spawn binary as the Lambda function on kumo's runtime API.
func (d *demo) startFunction(fn string) (*exec.Cmd, error) {
	u, err := url.Parse(d.endpoint)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(d.spawn)
	cmd.Env = append(d.env,
		"AWS_LAMBDA_RUNTIME_API="+u.Host+"/_runtime/"+fn,
		"AWS_LAMBDA_FUNCTION_NAME="+fn,
		"AWS_ENDPOINT_URL="+d.endpoint,
	)
	logf, err := os.CreateTemp("", "spawn-demo-function-*.log")
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the function process: %w", err)
	}
	d.say("the orchestrator function is running (its log: %s)", logf.Name())
	return cmd, nil
}

// Names spawn gives what it deploys (state.go's defaultTable and defaultInstancesTable,
// deploy.go's instanceRoleName).
const (
	sweepTable     = "spawn-sweep-orchestration"
	instancesTable = "spawn-sweep-instances"
	instanceRole   = "spawnd-role"
)

// simulator plays the part of every instance of one sweep, as the generated user-data
// script would run it (launch.go): a few seconds after an instance starts running it
// uploads the item's result and its exit record to S3, tags its exit code and terminates.
type simulator struct {
	ec2     *ec2.Client
	s3      *s3.Client
	db      *dynamodb.Client
	sweepID string
	bucket  string
	// roleID is the instance role's id: an instance's credentials are a session of the
	// role, whose aws:userid is "<role id>:<instance id>", the name of its objects.
	roleID    string
	params    map[int]map[string]string // by item index, from the dry run
	failEvery int
	rng       *rand.Rand

	mu      sync.Mutex
	nFailed int
}

// simItem is what the simulator reads of the engine's instance item (state.go's
// instanceRecord): which item and attempt an instance runs.
type simItem struct {
	Index      int    `dynamodbav:"index"`
	Attempt    int    `dynamodbav:"attempt"`
	InstanceID string `dynamodbav:"instance_id"`
}

func newSimulator(ctx context.Context, cfg aws.Config, sweepID string, plan demoPlan, failEvery int) (*simulator, error) {
	s := &simulator{
		ec2: ec2.NewFromConfig(cfg), db: dynamodb.NewFromConfig(cfg),
		s3:      s3.NewFromConfig(cfg, func(o *s3.Options) { o.UsePathStyle = true }),
		sweepID: sweepID, params: map[int]map[string]string{}, failEvery: failEvery,
		rng: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7)),
	}
	for _, it := range plan.Items {
		s.params[it.Index] = it.Params
	}
	// The bucket is the one the sweep record names.
	out, err := s.db.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(sweepTable),
		Key: map[string]ddbtypes.AttributeValue{"sweep_id": &ddbtypes.AttributeValueMemberS{Value: sweepID}}})
	if err != nil {
		return nil, fmt.Errorf("reading sweep %s: %w", sweepID, err)
	}
	var rec struct {
		Bucket string `dynamodbav:"s3_bucket"`
	}
	if err := attributevalue.UnmarshalMap(out.Item, &rec); err != nil || rec.Bucket == "" {
		return nil, fmt.Errorf("sweep %s names no bucket (%v)", sweepID, err)
	}
	s.bucket = rec.Bucket
	role, err := iam.NewFromConfig(cfg).GetRole(ctx, &iam.GetRoleInput{RoleName: aws.String(instanceRole)})
	if err != nil {
		return nil, fmt.Errorf("reading the instance role: %w", err)
	}
	s.roleID = aws.ToString(role.Role.RoleId)
	return s, nil
}

// failed is how many items the simulator made fail.
func (s *simulator) failed() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nFailed
}

func (s *simulator) run(ctx context.Context) {
	started := map[string]time.Time{}
	endAt := map[string]time.Time{}
	items := map[string]simItem{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(300 * time.Millisecond):
		}
		out, err := s.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{})
		if err != nil {
			continue
		}
		for _, r := range out.Reservations {
			for _, in := range r.Instances {
				id := aws.ToString(in.InstanceId)
				if in.State == nil || in.State.Name != ec2types.InstanceStateNameRunning {
					continue
				}
				t, ok := endAt[id]
				if !ok {
					started[id] = time.Now()
					endAt[id] = time.Now().Add(time.Duration(2000+s.rng.IntN(4000)) * time.Millisecond)
					continue
				}
				if time.Now().Before(t) {
					continue
				}
				it, ok := items[id]
				if !ok {
					// The engine records an instance's item when it launches it.
					if err := s.readItems(ctx, items); err != nil {
						continue
					}
					if it, ok = items[id]; !ok {
						continue // not recorded yet: next round
					}
				}
				if s.finish(ctx, id, it, time.Since(started[id])) {
					endAt[id] = time.Now().Add(time.Hour) // ended: never again
				}
			}
		}
	}
}

// readItems adds the sweep's instance items to items, by instance id.
func (s *simulator) readItems(ctx context.Context, items map[string]simItem) error {
	p := dynamodb.NewQueryPaginator(s.db, &dynamodb.QueryInput{
		TableName:                 aws.String(instancesTable),
		KeyConditionExpression:    aws.String("sweep_id = :s"),
		ExpressionAttributeValues: map[string]ddbtypes.AttributeValue{":s": &ddbtypes.AttributeValueMemberS{Value: s.sweepID}},
		ConsistentRead:            aws.Bool(true),
	})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return err
		}
		var recs []simItem
		if err := attributevalue.UnmarshalListOfMaps(page.Items, &recs); err != nil {
			return err
		}
		for _, r := range recs {
			if r.InstanceID != "" {
				items[r.InstanceID] = r
			}
		}
	}
	return nil
}

// finish ends instance id running item it, in the generated script's order: the result
// (when the command succeeded), the exit record, the exit-code tag, then power off.
// Items whose index+1 is a multiple of failEvery fail. false: retry next round.
func (s *simulator) finish(ctx context.Context, id string, it simItem, ran time.Duration) bool {
	code := 0
	if s.failEvery > 0 && (it.Index+1)%s.failEvery == 0 {
		code = 1
	}
	name := s.roleID + ":" + id + ".json"
	if code == 0 {
		body, _ := json.Marshal(metrics(s.params[it.Index]))
		if !s.put(ctx, fmt.Sprintf("sweeps/%s/results/%d/%s", s.sweepID, it.Index, name), body) { // report.go's resultPrefix
			return false
		}
	}
	exit := fmt.Sprintf(`{"exit_code":%d,"ran_seconds":%.1f}`, code, ran.Seconds())
	if !s.put(ctx, fmt.Sprintf("sweeps/%s/exit/%d/%d/%s", s.sweepID, it.Index, it.Attempt, name), []byte(exit)) { // exitReportPrefix
		return false
	}
	if _, err := s.ec2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{id},
		Tags: []ec2types.Tag{{Key: aws.String("spawn:exit-code"), Value: aws.String(strconv.Itoa(code))}}}); err != nil {
		return false
	}
	if _, err := s.ec2.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{id}}); err != nil {
		return false
	}
	if code != 0 {
		s.mu.Lock()
		s.nFailed++
		s.mu.Unlock()
	}
	return true
}

func (s *simulator) put(ctx context.Context, key string, body []byte) bool {
	_, err := s.s3.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(key),
		Body: strings.NewReader(string(body)), ContentType: aws.String("application/json")})
	return err == nil
}

// metrics is the simulated workload's result, a deterministic function of its params:
// acc peaks at lr 0.02 and batch 48 (between the grid's points, so no two items tie),
// loss is its cross-entropy-like counterpart. A param it does not know adds nothing.
func metrics(params map[string]string) map[string]float64 {
	acc := 0.95
	if lr, err := strconv.ParseFloat(params["lr"], 64); err == nil && lr > 0 {
		acc -= 0.05 * math.Pow(math.Log10(lr/0.02), 2)
	}
	if b, err := strconv.ParseFloat(params["batch"], 64); err == nil && b > 0 {
		acc -= 0.03 * math.Pow(math.Log2(b/48), 2)
	}
	acc = math.Max(acc, 0.1)
	return map[string]float64{"acc": round3(acc), "loss": round3(-math.Log(acc))}
}

func round3(x float64) float64 { return math.Round(x*1000) / 1000 }

// stopProcess ends a process the demo started, if it did.
func stopProcess(cmd *exec.Cmd) {
	if cmd != nil && cmd.Process != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
}

// cleanEnv drops the caller's AWS settings so the demo can never reach a real account.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "AWS_") || strings.HasPrefix(kv, "SPAWN_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// jsonField reads a top-level string field of a JSON document.
func jsonField(doc, field string) string {
	var m map[string]any
	if json.Unmarshal([]byte(doc), &m) != nil {
		return ""
	}
	v, _ := m[field].(string)
	return v
}
