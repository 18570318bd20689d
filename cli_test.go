package main

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// parenthesisedHints are the openings of a what-to-do written in parentheses, which the
// rule replaced by ": what to do" (a parenthesis may hold a cause, never a hint).
var parenthesisedHints = []string{"(run '", "(check ", "(pass ", "(see ", "(set ", "(is spawn", "(then ", "(choose "}

// TestMessagesUseOneSeparator holds every non-test file to cli.go's rule: a string
// literal never joins what was wrong and what to do with " — " or a parenthesised hint.
// Comments may; only literals reach a user.
func TestMessagesUseOneSeparator(t *testing.T) {
	names, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	checked := 0
	for _, name := range names {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		checked++
		ast.Inspect(f, func(n ast.Node) bool {
			lit, ok := n.(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				return true
			}
			s, err := strconv.Unquote(lit.Value)
			if err != nil {
				t.Fatalf("%s: %v", fset.Position(lit.Pos()), err)
			}
			if strings.Contains(s, " — ") {
				t.Errorf("%s: %q uses \" — \": join what was wrong and what to do with \": \"", fset.Position(lit.Pos()), s)
			}
			for _, h := range parenthesisedHints {
				if strings.Contains(s, h) {
					t.Errorf("%s: %q gives a hint in parentheses: write it after \": \"", fset.Position(lit.Pos()), s)
				}
			}
			return true
		})
	}
	if checked < 10 {
		t.Fatalf("checked %d files: run the test from the package directory", checked)
	}
}

// usageError splits stderr into the message line and the help line that follows a
// usage error; ok is false when stderr is not exactly those two lines.
func usageError(stderr string) (msg, help string, ok bool) {
	lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "spawn: ") || !strings.HasPrefix(lines[1], "run 'spawn") {
		return "", "", false
	}
	return lines[0], lines[1], true
}

// A flag value the flag package refuses is said once, then the help command: no usage
// text, whether the flag comes before or after a positional sweep id.
func TestBadFlagValueOneLineAndHelp(t *testing.T) {
	tests := []struct {
		args     []string
		msg      string
		wantHelp string
	}{
		{[]string{"launch", "--launch-delay", "2x"}, `spawn: invalid value "2x" for flag -launch-delay: not a duration: use 90m, 2h30m or 2d`, "run 'spawn launch --help'"},
		{[]string{"status", "sw-1", "--interval", "soon"}, `spawn: invalid value "soon" for flag -interval: parse error`, "run 'spawn status --help'"},
		{[]string{"resume", "sw-1", "--no-such-flag"}, "spawn: flag provided but not defined: -no-such-flag", "run 'spawn resume --help'"},
		{[]string{"--no-such-flag", "version"}, "spawn: flag provided but not defined: -no-such-flag", "run 'spawn --help'"},
		{[]string{"no-such-command"}, `spawn: unknown command "no-such-command": use one of deploy, launch,`, "run 'spawn --help'"},
	}
	for _, tt := range tests {
		out, errOut, code := runSpawn(t, nil, tt.args...)
		msg, help, ok := usageError(errOut)
		if code != exitUsage || out != "" || !ok || !strings.HasPrefix(msg, tt.msg) || help != tt.wantHelp {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit 2 and\n%s\n%s", tt.args, code, out, errOut, tt.msg, tt.wantHelp)
		}
	}
}

// Every command words an argument it does not take, and a missing sweep id, the same way.
func TestArgumentErrorsHaveOneWording(t *testing.T) {
	type tc struct {
		args []string
		msg  string
	}
	var tests []tc
	for _, cmd := range []string{"deploy", "destroy", "launch", "list", "version"} {
		tests = append(tests, tc{[]string{cmd, "x"}, `spawn: unexpected argument "x": spawn ` + cmd + " takes no arguments"})
	}
	for _, cmd := range []string{"status", "resume", "cancel", "logs"} {
		tests = append(tests,
			tc{[]string{cmd, "sw-1", "x"}, `spawn: unexpected argument "x": spawn ` + cmd + " takes one sweep id"},
			tc{[]string{cmd}, "spawn: a sweep id is needed: give it as the argument or with --sweep-id"},
			tc{[]string{cmd, "sw-1", "--sweep-id", "sw-2"}, "spawn: the sweep id is given twice, as sw-1 and --sweep-id sw-2: give it once"},
		)
	}
	for _, tt := range tests {
		_, errOut, code := runSpawn(t, nil, tt.args...)
		msg, help, ok := usageError(errOut)
		if code != exitUsage || !ok || !strings.HasPrefix(msg, tt.msg) || help != "run 'spawn "+tt.args[0]+" --help'" {
			t.Errorf("%v: exit %d, stderr %q; want exit 2 and %q with the help line", tt.args, code, errOut, tt.msg)
		}
	}
}

// A command's help shows its own flags and examples, and names the global flags once
// without their help; the root's help describes the global flags.
func TestHelpShowsOwnFlagsThenGlobalsOnce(t *testing.T) {
	const globalHelp = "AWS shared-config profile" // --profile's help line
	_, errOut, code := runSpawn(t, nil, "launch", "--help")
	if code != 0 {
		t.Fatalf("launch --help: exit %d, %s", code, errOut)
	}
	for _, want := range []string{"--param-file string", "--max-concurrent int", "--ttl duration", "EXAMPLES\n  spawn launch --param-file ", "global flags, described by 'spawn --help': "} {
		if !strings.Contains(errOut, want) {
			t.Errorf("launch --help lacks %q:\n%s", want, errOut)
		}
	}
	if strings.Contains(errOut, globalHelp) || strings.Count(errOut, "--profile") != 1 || strings.Count(errOut, "global flags") != 1 {
		t.Errorf("launch --help repeats the global flags:\n%s", errOut)
	}
	// The same help after a positional sweep id, where the flags are parsed again.
	if _, errOut, code := runSpawn(t, nil, "status", "sw-1", "-h"); code != 0 || !strings.Contains(errOut, "--watch") || strings.Contains(errOut, globalHelp) {
		t.Errorf("status sw-1 -h: exit %d:\n%s", code, errOut)
	}
	_, errOut, code = runSpawn(t, nil, "--help")
	if code != 0 || strings.Count(errOut, globalHelp) != 1 || !strings.Contains(errOut, "SPAWN_<FLAG>") {
		t.Errorf("spawn --help: exit %d, want the global flags described once:\n%s", code, errOut)
	}
	for _, cmd := range []string{"deploy", "launch", "status", "list", "logs", "cancel", "resume", "destroy", "version"} {
		if !strings.Contains(errOut, "\n  "+cmd+" ") {
			t.Errorf("spawn --help does not list %s:\n%s", cmd, errOut)
		}
	}
}

// An unknown sweep id is a runtime error (exit 1) in every command that takes one,
// with the id positional or as --sweep-id, before or after the other flags.
func TestUnknownSweepExitsOne(t *testing.T) {
	e := newStatusEnv(t)
	for _, args := range [][]string{
		{"status", "sw-nope", "--output", "json"},
		{"status", "--sweep-id", "sw-nope"},
		{"resume", "sw-nope", "--no-detach"},
		{"resume", "--retry-failed", "--sweep-id", "sw-nope"},
		{"cancel", "sw-nope", "--output", "json"},
		{"cancel", "--sweep-id", "sw-nope"},
		{"logs", "sw-nope", "--index", "0"},
		{"logs", "--index", "0", "--sweep-id", "sw-nope"},
	} {
		out, errOut, code := runSpawn(t, e.env, e.args(args...)...)
		want := "spawn: sweep sw-nope not found in table " + e.table + " (us-east-1): check the id with 'spawn list'\n"
		if code != exitRuntime || errOut != want || out != "" {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit 1 and %q", args, code, out, errOut, want)
		}
	}
}
