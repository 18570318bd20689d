package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// TestMain lets end-to-end tests run this test binary as the spawn binary itself
// (the CLI, or the Lambda function on an emulator's runtime API): with
// SPAWN_TEST_RUN_AS_SPAWN=1 it runs main() instead of the tests.
func TestMain(m *testing.M) {
	if os.Getenv("SPAWN_TEST_RUN_AS_SPAWN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// runSpawn runs the CLI in-process and returns stdout, stderr and the exit code.
func runSpawn(t testing.TB, env map[string]string, args ...string) (string, string, int) {
	t.Helper()
	for k, v := range env {
		t.Setenv(k, v)
	}
	var out, errb bytes.Buffer
	err := runCLI(context.Background(), args, strings.NewReader(""), &out, &errb)
	printError(&errb, err)
	return out.String(), errb.String(), exitCode(err)
}

func TestVersion(t *testing.T) {
	out, _, code := runSpawn(t, nil, "version")
	if code != 0 || !strings.HasPrefix(out, "spawn dev") {
		t.Fatalf("version: code %d, out %q", code, out)
	}
	out, _, code = runSpawn(t, nil, "version", "--output", "json")
	var v versionDoc
	if code != 0 || json.Unmarshal([]byte(out), &v) != nil || v.GoVersion == "" {
		t.Fatalf("version json: code %d, out %q", code, out)
	}
}

func TestGlobalFlagsBeforeOrAfterAndEnv(t *testing.T) {
	for _, args := range [][]string{
		{"--output", "yaml", "version"},
		{"version", "--output", "yaml"},
	} {
		_, errOut, code := runSpawn(t, nil, args...)
		if code != exitUsage || !strings.Contains(errOut, `--output "yaml"`) {
			t.Errorf("%v: code %d, stderr %q", args, code, errOut)
		}
	}
	_, errOut, code := runSpawn(t, map[string]string{"SPAWN_OUTPUT": "yaml"}, "version")
	if code != exitUsage || !strings.Contains(errOut, "yaml") {
		t.Errorf("SPAWN_OUTPUT=yaml: code %d, stderr %q", code, errOut)
	}
	// A flag on the command line wins over the environment.
	out, _, code := runSpawn(t, map[string]string{"SPAWN_OUTPUT": "yaml"}, "version", "--output", "json")
	if code != 0 || !strings.HasPrefix(out, "{") {
		t.Errorf("flag over env: code %d, out %q", code, out)
	}
	_, _, code = runSpawn(t, nil, "no-such-command")
	if code != exitUsage {
		t.Errorf("unknown command: code %d", code)
	}
}

// releaseFlags are the Makefile's: a static, stripped build without aws-lambda-go's
// net/rpc runtime.
var releaseFlags = []string{"build", "-tags", "lambda.norpc", "-trimpath", "-ldflags", "-s -w"}

var (
	releaseOnce sync.Once
	releaseBin  string
	releaseErr  error
)

// buildRelease builds spawn once per test process as `make build` does and returns the
// binary's path.
func buildRelease(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the release binary: skipped with -short")
	}
	releaseOnce.Do(func() {
		dir, err := os.MkdirTemp("", "spawn-release-")
		if err != nil {
			releaseErr = err
			return
		}
		releaseBin = filepath.Join(dir, "spawn")
		cmd := exec.Command("go", append(releaseFlags, "-o", releaseBin, ".")...)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			releaseErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if releaseErr != nil {
		t.Fatal(releaseErr)
	}
	return releaseBin
}

// The emulator and the test libraries are development tools: they never enter the
// binary users run, and neither does aws-lambda-go's net/rpc runtime.
func TestReleaseBinaryHasNoEmulator(t *testing.T) {
	bin := buildRelease(t)
	out, err := exec.Command("go", "version", "-m", bin).CombinedOutput()
	if err != nil {
		t.Fatalf("go version -m: %v\n%s", err, out)
	}
	info := string(out)
	for _, banned := range []string{"sivchari/kumo", "testcontainers", "docker", "stretchr/testify"} {
		if strings.Contains(info, banned) {
			t.Errorf("the release binary contains %s:\n%s", banned, info)
		}
	}
	for _, want := range []string{"-tags=lambda.norpc", "CGO_ENABLED=0", "-trimpath=true"} {
		if !strings.Contains(info, want) {
			t.Errorf("the release binary was not built with %s:\n%s", want, info)
		}
	}
	// With net/rpc linked the binary triples (every SDK method is kept): the zipped
	// bootstrap's 10 MB budget catches it.
	pkg, err := zipBootstrap(bin)
	if err != nil {
		t.Fatal(err)
	}
	if len(pkg.zip) > 10<<20 {
		t.Errorf("the zipped bootstrap is %.1f MB, over its 10 MB budget", float64(len(pkg.zip))/(1<<20))
	}
}
