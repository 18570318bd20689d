package main

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"testing"
	"time"

	lambdatypes "github.com/aws/aws-sdk-go-v2/service/lambda/types"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
)

// functionProcess is this test binary running as the spawn Lambda function on the
// emulator's runtime API (kumo serves one at /_runtime/<function-name>). On a backend
// that runs the deployed function itself (LocalStack) there is no process here: cmd is
// nil and deployedLogs reads what the function printed.
type functionProcess struct {
	cmd          *exec.Cmd
	logs         syncBuffer
	deployedLogs func() string
}

// output is what the function process printed so far (its JSON log lines).
func (p *functionProcess) output() string {
	if p.deployedLogs != nil {
		return p.deployedLogs()
	}
	return p.logs.String()
}

// kill stops the process at once, as a crash would. A deployed function has no
// process here to kill.
func (p *functionProcess) kill() {
	if p.cmd != nil && p.cmd.Process != nil {
		_ = p.cmd.Process.Kill()
		_ = p.cmd.Wait()
	}
}

// startFunctionProcess runs the real binary as the function named functionName. env
// adds what the function's configuration would set (kumo does not pass it on). The
// process is killed when the test ends. On a backend that runs the deployed function
// itself, env goes into the function's configuration instead and no process starts.
func startFunctionProcess(t testing.TB, endpoint, functionName string, env map[string]string) *functionProcess {
	t.Helper()
	if b, err := sharedBackend(); err == nil && b.runsFunctions() && b.endpoint == endpoint {
		return useDeployedFunction(t, b, functionName, env)
	}
	procEnv, err := functionEnv(endpoint, endpoint, functionName, env)
	if err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	p := &functionProcess{cmd: exec.Command(exe)}
	p.cmd.Env = procEnv
	p.cmd.Stdout = &p.logs
	p.cmd.Stderr = &p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting the function process: %v", err)
	}
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("function %s printed:\n%s", functionName, p.output())
		}
	})
	return p
}

// functionEnv is the environment of a function process: this test binary runs main()
// on the runtime API of the emulator at runtimeEndpoint (kumo serves one per function)
// and makes its AWS calls to awsEndpoint; extra adds what the function's configuration
// would set (kumo does not pass it on). Later duplicates in an exec environment win, so
// these override the parent's.
func functionEnv(runtimeEndpoint, awsEndpoint, functionName string, extra map[string]string) ([]string, error) {
	u, err := url.Parse(runtimeEndpoint)
	if err != nil {
		return nil, fmt.Errorf("endpoint %q: %w", runtimeEndpoint, err)
	}
	env := append(os.Environ(),
		"SPAWN_TEST_RUN_AS_SPAWN=1",
		"AWS_LAMBDA_RUNTIME_API="+u.Host+"/_runtime/"+functionName,
		"AWS_LAMBDA_FUNCTION_NAME="+functionName,
		"AWS_ENDPOINT_URL="+awsEndpoint,
		"AWS_ACCESS_KEY_ID=test",
		"AWS_SECRET_ACCESS_KEY=test",
		"AWS_REGION=us-east-1",
		"SPAWN_EC2_CONSISTENCY_WINDOW="+testConsistencyWindow,
	)
	for k, v := range extra {
		env = append(env, k+"="+v)
	}
	return env, nil
}

// waitFunctionReady sends health-check invokes until the process answers: an Event
// sent before the runtime polls would be dropped.
func waitFunctionReady(t testing.TB, cfg aws.Config, functionName string) {
	t.Helper()
	if err := functionReady(lambda.NewFromConfig(cfg), functionName, 30*time.Second); err != nil {
		t.Fatal(err)
	}
}

// functionReady sends health checks for up to within until a process answers.
func functionReady(lc *lambda.Client, functionName string, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		out, err := lc.Invoke(ctx, &lambda.InvokeInput{
			FunctionName: aws.String(functionName),
			Payload:      []byte(`{"health_check": true}`),
		})
		cancel()
		if err == nil && out.FunctionError == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("function %s never answered a health check: %v", functionName, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// createTestFunction registers a function on the emulator (kumo stores the zip, the
// test runs the process itself; a backend that runs functions gets the real bootstrap).
func createTestFunction(t testing.TB, cfg aws.Config, name string, timeoutSeconds int32) {
	t.Helper()
	if b, err := sharedBackend(); err == nil && b.runsFunctions() && b.endpoint == aws.ToString(cfg.BaseEndpoint) {
		createDeployedFunction(t, cfg, name, timeoutSeconds)
		return
	}
	if err := createFunction(context.Background(), lambda.NewFromConfig(cfg), name, timeoutSeconds); err != nil {
		t.Fatalf("CreateFunction %s: %v", name, err)
	}
}

func createFunction(ctx context.Context, lc *lambda.Client, name string, timeoutSeconds int32) error {
	_, err := lc.CreateFunction(ctx, &lambda.CreateFunctionInput{
		FunctionName: aws.String(name),
		Runtime:      lambdatypes.RuntimeProvidedal2023,
		Handler:      aws.String("bootstrap"),
		Role:         aws.String("arn:aws:iam::123456789012:role/SpawnSweepOrchestratorRole"),
		Timeout:      aws.Int32(timeoutSeconds),
		Code:         &lambdatypes.FunctionCode{ZipFile: emptyZip()},
	})
	// The name is this test's own: "already exists" means the SDK retried a create that
	// had landed (a slow answer on a loaded machine).
	var conflict *lambdatypes.ResourceConflictException
	if errors.As(err, &conflict) {
		return nil
	}
	return err
}

func emptyZip() []byte {
	var b bytes.Buffer
	w := zip.NewWriter(&b)
	f, _ := w.Create("bootstrap")
	_, _ = f.Write([]byte("#!/bin/sh\n"))
	_ = w.Close()
	return b.Bytes()
}

func TestFunctionProcessAnswersHealthCheck(t *testing.T) {
	a := newTestAWS(t)
	a.requireFunctions(t)
	name := uniqueName("fn")
	createTestFunction(t, a.cfg, name, 30)
	startFunctionProcess(t, a.backend.endpoint, name, nil)
	waitFunctionReady(t, a.cfg, name)
	out, err := lambda.NewFromConfig(a.cfg).Invoke(context.Background(), &lambda.InvokeInput{
		FunctionName: aws.String(name), Payload: []byte(`{"health_check": true}`),
	})
	if err != nil || out.FunctionError != nil {
		t.Fatalf("invoke: %v %v", err, out)
	}
	var h healthAnswer
	if err := json.Unmarshal(out.Payload, &h); err != nil || !h.OK || h.Version.GoVersion == "" {
		t.Fatalf("health answer %s: %v", out.Payload, err)
	}
}
