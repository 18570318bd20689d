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
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
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
	env       []string
	out       io.Writer
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	spawnBin := fs.String("spawn", "bin/spawn", "the spawn binary to run (CLI and Lambda function)")
	bootstrap := fs.String("bootstrap", "", "a Linux build of spawn to deploy as the function's bootstrap (default: --spawn)")
	params := fs.String("param-file", "testdata/demo-sweep.json", "the sweep to launch")
	failEvery := fs.Int("fail-every", 5, "the simulated workload exits 1 on every n-th instance (0: never)")
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
	d := &demo{spawn: *spawnBin, bootstrap: *bootstrap, params: *params, endpoint: srv.URL, out: os.Stdout}
	d.env = append(cleanEnv(),
		"AWS_ACCESS_KEY_ID=test", "AWS_SECRET_ACCESS_KEY=test", "AWS_REGION=us-east-1",
		"SPAWN_ENDPOINT_URL="+srv.URL, "NO_COLOR=",
	)
	cfg := aws.Config{
		Region:       "us-east-1",
		Credentials:  credentials.NewStaticCredentialsProvider("test", "test", ""),
		BaseEndpoint: aws.String(srv.URL),
	}
	d.say("AWS emulator (kumo) listening on %s — no AWS account is used", srv.URL)

	// 1. deploy, with the function's process started as soon as the function exists
	//    (deploy ends with a health-check invoke that the process must answer).
	fn := "spawn-sweep-orchestrator"
	var fnProc *exec.Cmd
	defer func() {
		if fnProc != nil && fnProc.Process != nil {
			_ = fnProc.Process.Kill()
			_ = fnProc.Wait()
		}
	}()
	deployDone := make(chan error, 1)
	go func() { deployDone <- d.spawnCmd(ctx, "deploy", "--bootstrap", d.bootstrap) }()
	d.say("spawn deploy")
	lc := lambda.NewFromConfig(cfg)
	for fnProc == nil {
		select {
		case err := <-deployDone:
			return fmt.Errorf("spawn deploy: %w", err)
		case <-time.After(100 * time.Millisecond):
		}
		if _, err := lc.GetFunction(ctx, &lambda.GetFunctionInput{FunctionName: aws.String(fn)}); err == nil {
			p, err := d.startFunction(fn)
			if err != nil {
				return err
			}
			fnProc = p
		}
	}
	if err := <-deployDone; err != nil {
		return fmt.Errorf("spawn deploy: %w", err)
	}

	// 2. the workload: on real EC2 each instance runs its command, tags its exit code
	//    and powers off; here a simulator plays every instance.
	simCtx, stopSim := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); simulateInstances(simCtx, ec2.NewFromConfig(cfg), *failEvery) }()
	defer func() { stopSim(); wg.Wait() }()

	// AWS publishes the latest Amazon Linux 2023 AMI ids as public SSM parameters; the
	// emulator starts empty, so the demo publishes them as AWS would.
	sc := ssm.NewFromConfig(cfg)
	for _, arch := range []string{"x86_64", "arm64"} {
		if _, err := sc.PutParameter(ctx, &ssm.PutParameterInput{
			Name:  aws.String("/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-" + arch),
			Value: aws.String("ami-0demo" + strings.ReplaceAll(arch, "_", "")), Type: ssmtypes.ParameterTypeString,
		}); err != nil {
			return fmt.Errorf("publishing the AMI parameter: %w", err)
		}
	}

	// 3. launch and watch until the sweep ends.
	d.say("spawn launch --param-file %s --max-concurrent 3 --poll-interval 2s", d.params)
	id, err := d.spawnOut(ctx, "launch", "--param-file", d.params, "--name", "demo", "--max-concurrent", "3", "--poll-interval", "2s", "--output", "json")
	if err != nil {
		return fmt.Errorf("spawn launch: %w", err)
	}
	sweepID := jsonField(id, "sweep_id")
	if sweepID == "" {
		return fmt.Errorf("spawn launch printed no sweep id: %s", id)
	}
	d.say("spawn status --watch %s", sweepID)
	_ = d.spawnCmd(ctx, "status", "--watch", "--interval", "1s", sweepID) // exit 3: failed items, checked below
	final, err := d.spawnOut(ctx, "status", "--output", "json", sweepID)
	if err != nil && final == "" {
		return fmt.Errorf("spawn status: %w", err)
	}
	status := jsonField(final, "status")

	// 4. clean up.
	d.say("spawn destroy --yes")
	if err := d.spawnCmd(ctx, "destroy", "--yes"); err != nil {
		return fmt.Errorf("spawn destroy: %w", err)
	}
	d.say("demo finished in %s", time.Since(start).Round(time.Second))
	fmt.Fprint(d.out, realAccountNotes)
	if status != "COMPLETED" {
		return fmt.Errorf("the sweep ended %s, not COMPLETED (the function's log above says why)", status)
	}
	return nil
}

const realAccountNotes = `
Where a real AWS account differs from this demo:
  - instances are real EC2 instances: they boot Amazon Linux 2023, run each item's command
    with PARAM_* in the environment, upload the log to S3, tag spawn:exit-code and power off;
    here a simulator tags and terminates them after a few seconds;
  - the orchestrator runs in AWS Lambda and re-invokes itself before its 15-minute limit;
    here the same binary serves the emulator's Lambda runtime API;
  - 'spawn deploy' needs the IAM permissions listed in the README; costs are real
    (EC2 time, plus about a cent of Lambda and DynamoDB per sweep-hour).
`

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

// simulateInstances plays the part of every instance: a few seconds after it starts
// running it tags its exit code and terminates, as the generated user-data script does.
func simulateInstances(ctx context.Context, c *ec2.Client, failEvery int) {
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	endAt := map[string]time.Time{}
	ordinal := map[string]int{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(300 * time.Millisecond):
		}
		out, err := c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{})
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
					ordinal[id] = len(ordinal) + 1
					endAt[id] = time.Now().Add(time.Duration(2000+rng.IntN(4000)) * time.Millisecond)
					continue
				}
				if time.Now().Before(t) {
					continue
				}
				code := "0"
				if failEvery > 0 && ordinal[id]%failEvery == 0 {
					code = "1"
				}
				_, _ = c.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{id},
					Tags: []ec2types.Tag{{Key: aws.String("spawn:exit-code"), Value: aws.String(code)}}})
				_, _ = c.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{id}})
				endAt[id] = time.Now().Add(time.Hour) // ended: never again
			}
		}
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
