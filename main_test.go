package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strings"
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
	if err != nil && err.Error() != "" {
		errb.WriteString("spawn: " + err.Error() + "\n")
	}
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
