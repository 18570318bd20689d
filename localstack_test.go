package main

// LocalStack as the test backend: SPAWN_TEST_BACKEND=localstack (`make test-localstack`)
// starts it once per test binary with testcontainers-go's localstack module.
//
// This project's machines have the Docker CLI but no Docker engine, so nothing below
// the engine check has run here: every integration test skips there with the one
// reason startLocalStack gives, and TestLocalStackWithoutDockerSkips checks exactly
// that. The rest is written against LocalStack's and testcontainers-go's documented
// behaviour (cited beside the code) and is UNVERIFIED on these machines.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	lambdatypes "github.com/aws/aws-sdk-go-v2/service/lambda/types"
	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/modules/localstack"
)

// localstackImage is pinned, not a floating tag: from release 2026.03.0 (23 March 2026)
// the localstack/localstack image is one unified image that refuses to start without
// LOCALSTACK_AUTH_TOKEN, and `latest` moved to it. 4.14.0 (26 February 2026) is the last
// release before that switch, the last of the semantic versions, and starts without a
// token. Sources: LocalStack's changelog (docs.localstack.cloud/aws/changelog: "Releases
// up to and including v4.14.0 continue to use Semantic Versioning", 2026.03 on 23 March
// 2026); LocalStack's notice to client libraries (e.g. PlaytikaOSS/testcontainers-spring-
// boot#2872: "image tags after 4.14.0 will require auth"); testcontainers-node's LocalStack
// module docs ("Older pinned tags may continue to work without LOCALSTACK_AUTH_TOKEN, but
// newer releases require it. Prefer pinning a specific image tag"). SPAWN_LOCALSTACK_IMAGE
// picks another image; LOCALSTACK_AUTH_TOKEN, when set, is passed to the container.
const localstackImage = "localstack/localstack:4.14.0"

func localstackImageName() string {
	if v := os.Getenv("SPAWN_LOCALSTACK_IMAGE"); v != "" {
		return v
	}
	return localstackImage
}

// needsAuthToken reports whether image is one LocalStack documents as needing
// LOCALSTACK_AUTH_TOKEN: the calendar-versioned releases (2026.03.0 on), the floating
// tags that now point at them, and the localstack-pro image.
func needsAuthToken(image string) bool {
	image, _, _ = strings.Cut(image, "@")
	name, tag := image, "latest"
	if i := strings.LastIndex(image, ":"); i > strings.LastIndex(image, "/") {
		name, tag = image[:i], image[i+1:]
	}
	if strings.HasSuffix(name, "localstack-pro") {
		return true
	}
	switch tag {
	case "latest", "stable":
		return true
	}
	year, _, ok := strings.Cut(tag, ".")
	n, err := strconv.Atoi(year)
	return ok && err == nil && n >= 2026
}

// dockerEngine asks testcontainers-go's provider health check (an Info call to the
// daemon) whether a Docker engine answers. testcontainers-go panics in places when it
// finds none (MustExtractDockerSocket: "rootless Docker not found"); a panic is turned
// into the error it describes.
func dockerEngine(ctx context.Context) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%v", r)
		}
	}()
	p, err := testcontainers.ProviderDefault.GetProvider()
	if err != nil {
		return err
	}
	return p.Health(ctx) // Health closes the provider
}

// startLocalStack checks for a Docker engine and the auth token the image needs, then
// starts LocalStack. A missing engine or token is a backendUnavailable: the tests skip.
func startLocalStack() (testBackend, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := dockerEngine(ctx); err != nil {
		return testBackend{}, &backendUnavailable{reason: "SPAWN_TEST_BACKEND=localstack needs a Docker engine and none answers here (" +
			oneLine(strings.ReplaceAll(err.Error(), "\n", "; ")) + "): start Docker, or run the suite on kumo with `make test`"}
	}
	image := localstackImageName()
	token := os.Getenv("LOCALSTACK_AUTH_TOKEN")
	if token == "" && needsAuthToken(image) {
		return testBackend{}, &backendUnavailable{reason: image + " needs LOCALSTACK_AUTH_TOKEN (LocalStack images from 2026.03.0 on do): " +
			"set it, or leave SPAWN_LOCALSTACK_IMAGE unset to use " + localstackImage}
	}
	env := map[string]string{}
	if token != "" {
		env["LOCALSTACK_AUTH_TOKEN"] = token
	}
	c, err := runLocalStack(ctx, image, testcontainers.WithEnv(env))
	if err != nil {
		return testBackend{}, fmt.Errorf("starting %s: %w", image, err)
	}
	host, err := c.Host(ctx)
	if err != nil {
		return testBackend{}, err
	}
	port, err := c.MappedPort(ctx, "4566/tcp")
	if err != nil {
		return testBackend{}, err
	}
	return testBackend{name: "localstack", endpoint: fmt.Sprintf("http://%s:%s", host, port.Port())}, nil
}

// runLocalStack is localstack.Run with its panics turned into errors. The module
// mounts the Docker socket into the container, which LocalStack's Lambda needs to run
// functions in containers of their own (docs.localstack.cloud/aws/services/lambda,
// "Docker not available").
func runLocalStack(ctx context.Context, image string, opts ...testcontainers.ContainerCustomizer) (c *localstack.LocalStackContainer, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("testcontainers-go: %v", r)
		}
	}()
	return localstack.Run(ctx, image, opts...)
}

// The skip path, run for real: the test binary re-executed with LocalStack asked for
// and DOCKER_HOST pointing nowhere must report its integration tests skipped, for one
// reason, without a failure or a panic.
func TestLocalStackWithoutDockerSkips(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if dockerEngine(ctx) == nil {
		// testcontainers-go falls back from a dead DOCKER_HOST to the default socket,
		// so with an engine here the child would start LocalStack for real.
		t.Skip("a Docker engine answers here: the no-engine path is checked where there is none")
	}
	integration := []string{"TestStoreCreateLoadSave", "TestFunctionProcessAnswersHealthCheck", "TestEndToEndSweepOnKumo"}
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^("+strings.Join(integration, "|")+")$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), "SPAWN_TEST_RUN_AS_SPAWN=", "SPAWN_LOCALSTACK_IMAGE=",
		"SPAWN_TEST_BACKEND=localstack", "DOCKER_HOST=unix:///nonexistent.sock")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the test binary with SPAWN_TEST_BACKEND=localstack and no Docker engine: %v\n%s", err, out)
	}
	text := string(out)
	if strings.Contains(text, "panic:") || strings.Contains(text, "--- FAIL") {
		t.Fatalf("a failure or a panic instead of skips:\n%s", text)
	}
	reasons := map[string]bool{}
	skipped := 0
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "--- SKIP: ") {
			skipped++
		}
		if m := testLogLine.FindStringSubmatch(line); m != nil {
			reasons[m[1]] = true
		}
	}
	if skipped != len(integration) {
		t.Errorf("%d tests skipped, want %d:\n%s", skipped, len(integration), text)
	}
	if len(reasons) != 1 {
		t.Errorf("want one reason for every skip, got %d:\n%s", len(reasons), text)
	}
	for r := range reasons {
		if !strings.Contains(r, "needs a Docker engine") {
			t.Errorf("the reason does not say what is missing: %q", r)
		}
	}
}

// testLogLine is a t.Log or t.Skip line in `go test -v` output: file:line: message.
var testLogLine = regexp.MustCompile(`^\S+_test\.go:\d+: (.*)$`)

func TestNeedsAuthToken(t *testing.T) {
	for image, want := range map[string]bool{
		localstackImage:                        false,
		"localstack/localstack:4.12":           false,
		"localstack/localstack:2026.03.0":      true,
		"localstack/localstack:2026.04":        true,
		"localstack/localstack":                true,
		"localstack/localstack:latest":         true,
		"localstack/localstack-pro:4.14.0":     true,
		"localhost:5000/localstack:4.14.0":     false,
		"localstack/localstack:4.14.0@sha256:": false,
	} {
		if got := needsAuthToken(image); got != want {
			t.Errorf("needsAuthToken(%q) = %v, want %v", image, got, want)
		}
	}
}

// On LocalStack the function is the deployed zip, run by LocalStack's Lambda in a
// container of its own (the provided.al2023 runtime image from public.ecr.aws/lambda;
// docs.localstack.cloud/aws/services/lambda). LocalStack sets AWS_ENDPOINT_URL in the
// function's environment so the SDK calls LocalStack (configuration option
// LAMBDA_DISABLE_AWS_ENDPOINT_URL, default 0), and the function's configured environment
// is passed on, as on AWS. UNVERIFIED here: no Docker engine.

var (
	deployedZipOnce sync.Once
	deployedZip     *bootstrapPackage
	deployedZipErr  error
)

// deployedBootstrap builds spawn for Linux on this machine's architecture, as `make
// build` does, once per test binary, and zips it as the function's bootstrap.
func deployedBootstrap(t testing.TB) *bootstrapPackage {
	t.Helper()
	deployedZipOnce.Do(func() {
		dir, err := os.MkdirTemp("", "spawn-bootstrap-")
		if err != nil {
			deployedZipErr = err
			return
		}
		bin := filepath.Join(dir, "bootstrap")
		cmd := exec.Command("go", append(releaseFlags, "-o", bin, ".")...)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH)
		if out, err := cmd.CombinedOutput(); err != nil {
			deployedZipErr = fmt.Errorf("go build: %v\n%s", err, out)
			return
		}
		deployedZip, deployedZipErr = zipBootstrap(bin)
	})
	if deployedZipErr != nil {
		t.Fatal(deployedZipErr)
	}
	return deployedZip
}

// createDeployedFunction registers the real bootstrap as the function.
func createDeployedFunction(t testing.TB, cfg aws.Config, name string, timeoutSeconds int32) {
	t.Helper()
	pkg := deployedBootstrap(t)
	_, err := lambda.NewFromConfig(cfg).CreateFunction(context.Background(), &lambda.CreateFunctionInput{
		FunctionName:  aws.String(name),
		Runtime:       lambdatypes.RuntimeProvidedal2023,
		Handler:       aws.String("bootstrap"),
		Architectures: []lambdatypes.Architecture{pkg.arch},
		Role:          aws.String("arn:aws:iam::000000000000:role/SpawnSweepOrchestratorRole"),
		Timeout:       aws.Int32(timeoutSeconds),
		Code:          &lambdatypes.FunctionCode{ZipFile: pkg.zip},
	})
	if err != nil {
		t.Fatalf("CreateFunction %s: %v", name, err)
	}
}

// useDeployedFunction stands in for starting the function process where the backend
// runs the function itself: env goes into the function's configuration, and the
// "process" is the function's log group. It cannot be killed from here.
func useDeployedFunction(t testing.TB, b testBackend, functionName string, env map[string]string) *functionProcess {
	t.Helper()
	cfg := backendConfig(b)
	lc := lambda.NewFromConfig(cfg)
	ctx := context.Background()
	// LocalStack follows Lambda's state model: a new function is Pending, and an
	// update meanwhile is refused (ResourceConflictException).
	if err := lambda.NewFunctionActiveV2Waiter(lc).Wait(ctx, &lambda.GetFunctionInput{FunctionName: aws.String(functionName)}, 5*time.Minute); err != nil {
		t.Fatalf("function %s never became Active: %v", functionName, err)
	}
	if len(env) > 0 {
		if _, err := lc.UpdateFunctionConfiguration(ctx, &lambda.UpdateFunctionConfigurationInput{
			FunctionName: aws.String(functionName),
			Environment:  &lambdatypes.Environment{Variables: env},
		}); err != nil {
			t.Fatalf("UpdateFunctionConfiguration %s: %v", functionName, err)
		}
		if err := lambda.NewFunctionUpdatedV2Waiter(lc).Wait(ctx, &lambda.GetFunctionInput{FunctionName: aws.String(functionName)}, 5*time.Minute); err != nil {
			t.Fatalf("function %s never finished its update: %v", functionName, err)
		}
	}
	// The first invoke pulls the runtime image: give it minutes, not seconds.
	if err := functionReady(lc, functionName, 5*time.Minute); err != nil {
		t.Fatal(err)
	}
	return &functionProcess{deployedLogs: func() string { return functionLogs(cfg, functionName) }}
}

// functionLogs is what the function printed, from its CloudWatch Logs group
// (/aws/lambda/<name>, where Lambda and LocalStack put it). The SDK's CloudWatch Logs
// client is not a dependency of this module: one signed JSON call does.
func functionLogs(cfg aws.Config, functionName string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var b strings.Builder
	next := ""
	for {
		in := map[string]any{"logGroupName": "/aws/lambda/" + functionName}
		if next != "" {
			in["nextToken"] = next
		}
		var out struct {
			Events []struct {
				Message string `json:"message"`
			} `json:"events"`
			NextToken string `json:"nextToken"`
		}
		if err := callLogs(ctx, cfg, "Logs_20140328.FilterLogEvents", in, &out); err != nil {
			fmt.Fprintf(&b, "(reading the function's logs: %v)\n", err)
			return b.String()
		}
		for _, e := range out.Events {
			b.WriteString(strings.TrimSuffix(e.Message, "\n") + "\n")
		}
		if out.NextToken == "" || out.NextToken == next {
			return b.String()
		}
		next = out.NextToken
	}
}

// callLogs makes one CloudWatch Logs call (JSON 1.1 protocol, SigV4-signed) to the
// backend.
func callLogs(ctx context.Context, cfg aws.Config, target string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, aws.ToString(cfg.BaseEndpoint)+"/", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-amz-json-1.1")
	req.Header.Set("X-Amz-Target", target)
	creds, err := cfg.Credentials.Retrieve(ctx)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(body)
	if err := v4.NewSigner().SignHTTP(ctx, creds, req, hex.EncodeToString(sum[:]), "logs", cfg.Region, time.Now()); err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s: %s", target, resp.Status, data)
	}
	return json.Unmarshal(data, out)
}
