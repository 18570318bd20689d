package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// The GitHub Action (action.yml) is a composite of two bash steps. These tests run
// those steps as the runner does (bash -eo pipefail), on a fake release served from
// file:// and a fake spawn, and hold them to shellcheck where it is installed.

type actionStep struct {
	ID    string            `yaml:"id"`
	Shell string            `yaml:"shell"`
	Env   map[string]string `yaml:"env"`
	Run   string            `yaml:"run"`
}

type actionFile struct {
	Inputs map[string]struct {
		Required bool   `yaml:"required"`
		Default  string `yaml:"default"`
	} `yaml:"inputs"`
	Runs struct {
		Using string       `yaml:"using"`
		Steps []actionStep `yaml:"steps"`
	} `yaml:"runs"`
}

func readAction(t *testing.T) *actionFile {
	t.Helper()
	raw, err := os.ReadFile("action.yml")
	if err != nil {
		t.Fatal(err)
	}
	var a actionFile
	if err := yaml.Unmarshal(raw, &a); err != nil {
		t.Fatalf("action.yml: %v", err)
	}
	return &a
}

func (a *actionFile) step(t *testing.T, id string) actionStep {
	t.Helper()
	for _, s := range a.Runs.Steps {
		if s.ID == id {
			return s
		}
	}
	t.Fatalf("action.yml has no step %q", id)
	return actionStep{}
}

// The inputs the README documents; inputs reach the scripts only through env (an
// expression inside a script would be pasted into it unquoted); the launch has a TTL
// and --yes, and nothing deploys.
func TestActionShape(t *testing.T) {
	a := readAction(t)
	if a.Runs.Using != "composite" {
		t.Errorf("runs.using %q, want composite", a.Runs.Using)
	}
	var inputs []string
	for k := range a.Inputs {
		inputs = append(inputs, k)
	}
	slices.Sort(inputs)
	if want := []string{"args", "max-concurrent", "param-file", "region", "repository", "top", "ttl", "version"}; !slices.Equal(inputs, want) {
		t.Errorf("inputs %v, want %v", inputs, want)
	}
	if !a.Inputs["param-file"].Required || a.Inputs["ttl"].Default == "" {
		t.Errorf("param-file must be required and ttl have a default: %+v", a.Inputs)
	}
	for _, s := range a.Runs.Steps {
		if s.Shell != "bash" || strings.Contains(s.Run, "${{") || strings.Contains(s.Run, "deploy") {
			t.Errorf("step %s: shell %q; a script must take inputs from env and never deploy:\n%s", s.ID, s.Shell, s.Run)
		}
	}
	launch := a.step(t, "launch").Run
	for _, w := range []string{`--ttl "$SPAWN_TTL" --yes --wait`, "status \"$id\" --output markdown", "results \"$id\" --output markdown", "$GITHUB_STEP_SUMMARY", `exit "$rc"`} {
		if !strings.Contains(launch, w) {
			t.Errorf("the launch step lacks %q", w)
		}
	}
}

// shellcheck every step; .ci/run sets SPAWN_TEST_SHELLCHECK=1 after installing it, so
// there a missing shellcheck fails instead of skipping.
func TestActionShellcheck(t *testing.T) {
	if _, err := exec.LookPath("shellcheck"); err != nil {
		if os.Getenv("SPAWN_TEST_SHELLCHECK") == "1" {
			t.Fatal("shellcheck is not installed: apt-get install shellcheck")
		}
		t.Skip("shellcheck is not installed: apt-get install shellcheck runs this test")
	}
	dir := t.TempDir()
	for _, s := range readAction(t).Runs.Steps {
		path := filepath.Join(dir, s.ID+".sh")
		// The runner's bash -e, as a shebang shellcheck reads.
		if err := os.WriteFile(path, []byte("#!/usr/bin/env bash\nset -e\n"+s.Run), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command("shellcheck", "--shell=bash", "--severity=style", path).CombinedOutput()
		if err != nil {
			t.Errorf("shellcheck on step %s: %v\n%s", s.ID, err, out)
		}
	}
}

// runStep runs a step's script as the runner does, with the runner's variables, and
// returns its output and exit code.
func runStep(t *testing.T, s actionStep, env map[string]string) (string, int) {
	t.Helper()
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("bash is not installed")
	}
	script := filepath.Join(t.TempDir(), s.ID+".sh")
	if err := os.WriteFile(script, []byte(s.Run), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("bash", "--noprofile", "--norc", "-eo", "pipefail", script)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return string(out), code
}

// fakeRelease writes a release of a fake spawn as GitHub serves it, under
// root/<owner>/<name>/releases/download/v<version>/ and .../releases/latest/download/.
func fakeRelease(t *testing.T, root, repo, version string) {
	t.Helper()
	var sums strings.Builder
	for _, osArch := range []string{"linux_amd64", "linux_arm64", "darwin_amd64", "darwin_arm64"} {
		name := "spawn_" + version + "_" + osArch + ".tar.gz"
		body := tarGz(t, map[string]string{"spawn": "#!/bin/sh\necho \"spawn " + version + " " + osArch + "\"\n", "README.md": "# spawn\n"})
		sum := sha256.Sum256(body)
		sums.WriteString(hex.EncodeToString(sum[:]) + "  " + name + "\n")
		for _, dir := range []string{"download/v" + version, "latest/download"} {
			writeFile(t, filepath.Join(root, repo, "releases", dir, name), body)
		}
	}
	for _, dir := range []string{"download/v" + version, "latest/download"} {
		writeFile(t, filepath.Join(root, repo, "releases", dir, "checksums.txt"), []byte(sums.String()))
	}
}

func writeFile(t *testing.T, path string, body []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, body, 0o644); err != nil {
		t.Fatal(err)
	}
}

func tarGz(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var b bytes.Buffer
	gz := gzip.NewWriter(&b)
	tw := tar.NewWriter(gz)
	for _, name := range sortedKeys(files) {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o755, Size: int64(len(files[name])), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(files[name])); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// The install step finds the archive of the runner's platform in checksums.txt,
// verifies it, and puts spawn on the PATH; a tampered archive or a missing release
// fails the step, saying what to check.
func TestActionInstall(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl is not installed")
	}
	step := readAction(t).step(t, "install")
	root := t.TempDir()
	fakeRelease(t, root, "acme/spawn", "1.2.3")
	// The releases come from file:// instead of github.com.
	step.Run = strings.ReplaceAll(step.Run, "https://github.com/", "file://"+root+"/")
	if strings.Count(step.Run, "file://") != 2 {
		t.Fatalf("the install step's release URLs changed: update this test\n%s", step.Run)
	}
	for _, tt := range []struct {
		name, version, runnerOS, arch, tamper string
		wantCode                              int
		want                                  string
	}{
		{"pinned", "v1.2.3", "Linux", "X64", "", 0, "spawn 1.2.3 linux_amd64"},
		{"latest", "latest", "macOS", "ARM64", "", 0, "spawn 1.2.3 darwin_arm64"},
		{"tampered", "1.2.3", "Linux", "ARM64", "spawn_1.2.3_linux_arm64.tar.gz", 1, "FAILED"},
		{"no such release", "9.9.9", "Linux", "X64", "", 1, "::error::no checksums.txt at file://" + root + "/acme/spawn/releases/download/v9.9.9: check the version input"},
		{"windows", "1.2.3", "Windows", "X64", "", 1, "::error::spawn is released for Linux and macOS runners, and this one is Windows"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.tamper != "" {
				path := filepath.Join(root, "acme/spawn/releases/download/v1.2.3", tt.tamper)
				good, _ := os.ReadFile(path)
				writeFile(t, path, append(slices.Clone(good), 0))
				t.Cleanup(func() { writeFile(t, path, good) })
			}
			tmp := t.TempDir()
			env := map[string]string{
				"SPAWN_VERSION": tt.version, "SPAWN_REPOSITORY": "", "RUNNER_OS": tt.runnerOS, "RUNNER_ARCH": tt.arch,
				"RUNNER_TEMP": tmp, "GITHUB_ACTION_PATH": "/home/runner/work/_actions/acme/spawn/v1",
				"GITHUB_PATH": filepath.Join(tmp, "path"), "GITHUB_OUTPUT": filepath.Join(tmp, "output"),
			}
			out, code := runStep(t, step, env)
			if code != tt.wantCode || !strings.Contains(out, tt.want) {
				t.Fatalf("exit %d, want %d and output with %q:\n%s", code, tt.wantCode, tt.want, out)
			}
			if code != 0 {
				return
			}
			path, _ := os.ReadFile(env["GITHUB_PATH"])
			output, _ := os.ReadFile(env["GITHUB_OUTPUT"])
			if bin := filepath.Join(tmp, "spawn-install", "bin"); string(path) != bin+"\n" || string(output) != "path="+bin+"/spawn\n" {
				t.Errorf("GITHUB_PATH %q, GITHUB_OUTPUT %q", path, output)
			}
		})
	}
}

// fakeSpawn is a spawn that records its arguments and answers launch, status and
// results as the real one does in text and Markdown.
const fakeSpawn = `#!/bin/sh
echo "$* region=${SPAWN_REGION:-}" >>"$FAKE_SPAWN_CALLS"
case "$1" in
launch)
  if [ "$FAKE_LAUNCH_CODE" = 2 ]; then
    echo "spawn: sweep.json line 3, column 9: expected ',': check the JSON" >&2
    exit 2
  fi
  echo "sweep sw-20261206-101010-abc123 launched: 3 items, at most 2 at a time"
  echo "sweep sw-20261206-101010-abc123 COMPLETED: 2 succeeded, 1 failed, 0 expired, 0 cancelled, 0 unknown"
  exit "$FAKE_LAUNCH_CODE" ;;
status) echo "### status of $2" ;;
results) echo "### results of $2" ;;
esac
`

// The launch step passes the inputs to spawn launch with a TTL and --yes, writes the
// Markdown status and results to the job summary, and exits with spawn's code.
func TestActionLaunch(t *testing.T) {
	step := readAction(t).step(t, "launch")
	for _, tt := range []struct {
		name        string
		code        int
		args        string
		wantSummary string
	}{
		{"succeeded", 0, "--name nightly  --idle-timeout 30m", "### status of sw-20261206-101010-abc123\n\n### results of sw-20261206-101010-abc123\n"},
		{"items failed", 3, "--name nightly  --idle-timeout 30m", "### status of sw-20261206-101010-abc123\n\n### results of sw-20261206-101010-abc123\n"},
		{"bad file", 2, "  ", "### ❌ spawn launch failed (exit 2) before a sweep was created\n\n````text\nspawn: sweep.json line 3, column 9: expected ',': check the JSON\n````\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tmp := t.TempDir()
			bin := filepath.Join(tmp, "spawn")
			writeFile(t, bin, []byte(fakeSpawn))
			if err := os.Chmod(bin, 0o755); err != nil {
				t.Fatal(err)
			}
			env := map[string]string{
				"SPAWN_BIN": bin, "SPAWN_PARAM_FILE": "sweeps/lr grid.json", "SPAWN_MAX_CONCURRENT": "2", "SPAWN_REGION_INPUT": "eu-west-1",
				"SPAWN_TTL": "2h", "SPAWN_ARGS": tt.args, "SPAWN_TOP": "5",
				"RUNNER_TEMP": tmp, "GITHUB_STEP_SUMMARY": filepath.Join(tmp, "summary"), "GITHUB_OUTPUT": filepath.Join(tmp, "output"),
				"FAKE_SPAWN_CALLS": filepath.Join(tmp, "calls"), "FAKE_LAUNCH_CODE": string(rune('0' + tt.code)),
			}
			out, code := runStep(t, step, env)
			if code != tt.code {
				t.Fatalf("exit %d, want spawn's %d:\n%s", code, tt.code, out)
			}
			summary, _ := os.ReadFile(env["GITHUB_STEP_SUMMARY"])
			if string(summary) != tt.wantSummary {
				t.Errorf("summary:\n%s\nwant:\n%s", summary, tt.wantSummary)
			}
			calls, _ := os.ReadFile(env["FAKE_SPAWN_CALLS"])
			want := "launch --param-file sweeps/lr grid.json --ttl 2h --yes --wait --max-concurrent 2 " + strings.Join(strings.Fields(tt.args+" --output text"), " ") + " region=eu-west-1\n"
			id := ""
			if tt.code != 2 {
				id = "sw-20261206-101010-abc123"
				want += "status " + id + " --output markdown region=eu-west-1\nresults " + id + " --output markdown --top 5 region=eu-west-1\n"
			}
			if string(calls) != want {
				t.Errorf("spawn ran as:\n%s\nwant:\n%s", calls, want)
			}
			output, _ := os.ReadFile(env["GITHUB_OUTPUT"])
			if wantOut := "sweep-id=" + id + "\nexit-code=" + string(rune('0'+tt.code)) + "\n"; string(output) != wantOut {
				t.Errorf("GITHUB_OUTPUT %q, want %q", output, wantOut)
			}
		})
	}
}
