package main

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// readSweep reads a parameter file as launch does: any format, canonical JSON asked for,
// a CSV file's defaults from testdata/params/good/defaults/<name>.yaml when there is one.
func readSweep(t testing.TB, path string) *paramSet {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	o := paramFileOptions{Canonical: true}
	if paramFormat(path) == formatCSV {
		name := strings.TrimSuffix(filepath.Base(path), ".csv")
		def := filepath.Join(filepath.Dir(path), "defaults", name+".yaml")
		if o.Defaults, err = os.ReadFile(def); err == nil {
			o.DefaultsFile = def
		}
	}
	ps, err := readParamFile(path, data, o)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return ps
}

// goodParamFiles are the parameter files under testdata/params/good, every format.
func goodParamFiles(t testing.TB) []string {
	var files []string
	for _, ext := range []string{"json", "yaml", "csv"} {
		fs, err := filepath.Glob("testdata/params/good/*." + ext)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, fs...)
	}
	if len(files) < 8 {
		t.Fatalf("found %d good parameter files: run the test from the package directory", len(files))
	}
	return files
}

// renderItems is one line per item with everything a launch takes from it, the params
// as the instance sees them (PARAM_<key>=<value>).
func renderItems(items []item) string {
	var b strings.Builder
	for _, it := range items {
		fmt.Fprintf(&b, "%d type=%s region=%s spot=%v", it.Index, it.InstanceType, it.Region, it.Spot)
		for _, kv := range []struct{ k, v string }{{"name", it.Name}, {"ami", it.AMI}, {"price", it.SpotMaxPrice},
			{"subnet", it.SubnetID}, {"key", it.KeyName}, {"sg", strings.Join(it.SecurityGroupIDs, ",")}} {
			if kv.v != "" {
				fmt.Fprintf(&b, " %s=%s", kv.k, kv.v)
			}
		}
		if it.TTL > 0 {
			fmt.Fprintf(&b, " ttl=%s", shortDuration(it.TTL))
		}
		if it.IdleTimeout > 0 {
			fmt.Fprintf(&b, " idle=%s", shortDuration(it.IdleTimeout))
		}
		fmt.Fprintf(&b, " profile=%s command=%q user_data=%q\n", it.IAMInstanceProfile, it.Command, it.UserData)
		if fb := it.Fallback; fb != nil {
			var cands []string
			for _, c := range candidatesOf(it) {
				cands = append(cands, c.String())
			}
			fmt.Fprintf(&b, "    candidates: %s\n", strings.Join(cands, ", "))
			for _, per := range []struct {
				k string
				m any
			}{{"amis", fb.AMIs}, {"subnets", fb.Subnets}, {"security groups", fb.SecurityGroups}} {
				if fmt.Sprint(per.m) != "map[]" {
					fmt.Fprintf(&b, "    %s: %v\n", per.k, per.m)
				}
			}
		}
		for _, p := range it.Params {
			fmt.Fprintf(&b, "    %s%s=%s\n", paramEnvPrefix, p.Key, strconv.Quote(p.Value))
		}
	}
	return b.String()
}

// The expansion of a grid (hand-written params first), a linked grid (YAML) and a random
// search, item by item, against golden files (go test -run TestParamExpansionGolden
// -update-launch rewrites them).
func TestParamExpansionGolden(t *testing.T) {
	for _, name := range []string{"sweep-grid.json", "sweep-linked.yaml", "sweep-random.json", "fallback.json", "fallback-per-region.yaml", "fallback-rows.csv"} {
		t.Run(name, func(t *testing.T) {
			ps := readSweep(t, filepath.Join("testdata/params/good", name))
			got := fmt.Sprintf("items %d: params %d, grid %d, random %d; objective %+v\n%s",
				len(ps.Items), ps.FromParams, ps.FromGrid, ps.FromRandom, ps.Objective, renderItems(ps.Items))
			launchGolden(t, "good/"+strings.TrimSuffix(name, filepath.Ext(name))+".items.golden", got)
		})
	}
}

// The grid's order: keys in file order, the last varying fastest; a linked axis sets its
// object's keys together.
func TestGridOrder(t *testing.T) {
	data := `{"defaults": {"command": "x"}, "grid": {"a": [1, 2], "m": [{"m": "s", "b": 64}, {"m": "l", "b": 16}], "c": ["x", "y", "z"]}}`
	ps, err := readParamFile("g.json", []byte(data), paramFileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, it := range ps.Items {
		var kv []string
		for _, p := range it.Params {
			kv = append(kv, p.Key+"="+p.Value)
		}
		got = append(got, strings.Join(kv, " "))
	}
	want := []string{}
	for _, a := range []string{"1", "2"} {
		for _, m := range []string{"b=64 m=s", "b=16 m=l"} {
			for _, c := range []string{"x", "y", "z"} {
				want = append(want, "a="+a+" "+strings.Replace(m, " m=", " c="+c+" m=", 1))
			}
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("grid order:\n got %q\nwant %q", got, want)
	}
}

// One sweep written as JSON (a linked grid), YAML (the same grid) and CSV (its rows, with
// defaults and objective from a --defaults file) gives the same items, the same PARAM_*
// strings included, and the same objective.
func TestParamFormatsGiveSameItems(t *testing.T) {
	want := readSweep(t, "testdata/params/good/same.json")
	if len(want.Items) != 8 || want.Objective == nil {
		t.Fatalf("same.json: %d items, objective %v", len(want.Items), want.Objective)
	}
	for _, name := range []string{"same.yaml", "same.csv"} {
		got := readSweep(t, "testdata/params/good/"+name)
		if g, w := renderItems(got.Items), renderItems(want.Items); g != w {
			t.Errorf("%s differs from same.json:\n--- %s\n%s\n--- same.json\n%s", name, name, g, w)
		}
		if *got.Objective != *want.Objective {
			t.Errorf("%s: objective %+v, want %+v", name, got.Objective, want.Objective)
		}
	}
}

// What the CLI uploads (canonical JSON, every item expanded) reads back, through the
// engine's own parseParamFile, to exactly the items of the file, whatever its format;
// and reading a file twice gives the same bytes.
func TestCanonicalUploadParsesToSameItems(t *testing.T) {
	for _, path := range goodParamFiles(t) {
		ps := readSweep(t, path)
		items, err := parseParamFile("sweeps/sw-1/params.json", ps.Canonical)
		if err != nil {
			t.Fatalf("%s: the canonical file is refused: %v\n%s", path, err, ps.Canonical)
		}
		if !reflect.DeepEqual(items, ps.Items) {
			t.Errorf("%s: the canonical file gives other items:\n--- canonical\n%s--- file\n%s", path, renderItems(items), renderItems(ps.Items))
		}
		again, err := readParamFile("sweeps/sw-1/params.json", ps.Canonical, paramFileOptions{Canonical: true})
		if err != nil || !reflect.DeepEqual(again.Objective, ps.Objective) {
			t.Errorf("%s: objective %v after the round trip, want %v (%v)", path, again.Objective, ps.Objective, err)
		} else if !bytes.Equal(again.Canonical, ps.Canonical) {
			t.Errorf("%s: the canonical file of the canonical file differs:\n%s\n%s", path, again.Canonical, ps.Canonical)
		}
		if second := readSweep(t, path); !bytes.Equal(second.Canonical, ps.Canonical) {
			t.Errorf("%s: two reads give different canonical files", path)
		}
	}
}

// gridFile is a file whose grid makes n = 10·10·(n/100) items (n a multiple of 100).
func gridFile(n int) []byte {
	many := make([]string, n/100)
	for i := range many {
		many[i] = strconv.Itoa(i)
	}
	return []byte(`{"defaults": {"instance_type": "c7g.large", "ttl": "2h", "command": "python3 train.py", "model": "resnet50"},
  "grid": {"lr": [0.1, 0.05, 0.01, 0.005, 0.001, 0.0005, 0.0001, 5e-5, 1e-5, 5e-6],
           "batch": [8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096],
           "seed": [` + strings.Join(many, ", ") + `]}}`)
}

// The canonical file of a 100,000-item grid stays small: it is what is uploaded, and
// what the orchestrator downloads and parses on every cold start.
func TestCanonicalSize100k(t *testing.T) {
	ps, err := readParamFile("big.json", gridFile(100_000), paramFileOptions{Canonical: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(ps.Items) != 100_000 {
		t.Fatalf("%d items", len(ps.Items))
	}
	perItem := float64(len(ps.Canonical)) / 100_000
	t.Logf("canonical file of a 100,000-item grid (3 params each): %d bytes, %.1f per item", len(ps.Canonical), perItem)
	if perItem > 64 {
		t.Errorf("%.1f bytes per item: the canonical file should hold only each item's own keys", perItem)
	}
	items, err := parseParamFile("params.json", ps.Canonical)
	if err != nil || !reflect.DeepEqual(items, ps.Items) {
		t.Fatalf("the canonical file reads back to other items (%v)", err)
	}
}

// A grid of 10^12 items is refused at once: counted, never made.
func TestHugeGridRefusedWithoutMakingIt(t *testing.T) {
	axes := make([]string, 12)
	for i := range axes {
		axes[i] = fmt.Sprintf(`"k%d": [0,1,2,3,4,5,6,7,8,9]`, i)
	}
	data := []byte(`{"defaults": {"command": "x"}, "grid": {` + strings.Join(axes, ", ") + `}}`)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := parseParamFile("huge.json", data)
	runtime.ReadMemStats(&after)
	if err == nil || !strings.Contains(err.Error(), "the sweep would have 1,000,000,000,000 items (grid 1,000,000,000,000), over spawn's limit of 100,000") {
		t.Fatalf("got %v", err)
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 1<<20 {
		t.Errorf("refusing the grid allocated %d bytes", grew)
	}
}

// A random search draws the same values from the same file: values a golden file pins,
// within their bounds, and log-uniform values spread over the decades.
func TestRandomDrawsWithinBounds(t *testing.T) {
	data := `{"defaults": {"command": "x"}, "random": {"samples": 2000, "seed": 9, "space": {
		"lr": {"loguniform": [1e-6, 1]}, "p": {"uniform": [-1, 1]}, "n": {"randint": [-2, 2]}, "c": {"choice": [1, "two", 3.5]}}}}`
	ps, err := readParamFile("r.json", []byte(data), paramFileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	decades := map[int]int{}
	ints := map[string]int{}
	choices := map[string]int{}
	for _, it := range ps.Items {
		v := map[string]string{}
		for _, p := range it.Params {
			v[p.Key] = p.Value
		}
		lr, _ := strconv.ParseFloat(v["lr"], 64)
		p, _ := strconv.ParseFloat(v["p"], 64)
		if !(lr >= 1e-6 && lr <= 1 && p >= -1 && p <= 1) {
			t.Fatalf("item %d out of bounds: %v", it.Index, v)
		}
		decades[int(math.Floor(math.Log10(lr)))]++
		ints[v["n"]]++
		choices[v["c"]]++
	}
	for d := -6; d < 0; d++ {
		if decades[d] < 200 {
			t.Errorf("decade 1e%d drew %d of 2000 values: loguniform should give each about 333", d, decades[d])
		}
	}
	if len(ints) != 5 || ints["-2"] == 0 || ints["2"] == 0 {
		t.Errorf("randint [-2, 2] drew %v: both bounds are included", ints)
	}
	if len(choices) != 3 || choices["3.5"] == 0 {
		t.Errorf("choice drew %v", choices)
	}
}

// logPortable and expPortable are within a unit in the last place of math's, which may
// run assembly; the draws use them so that every platform draws the same bits.
func TestPortableLogExp(t *testing.T) {
	for _, x := range []float64{1e-300, 1e-5, 0.1, 0.5, 0.7071, 1, 1.5, 2, math.E, 10, 12345.678, 1e300} {
		if got, want := logPortable(x), math.Log(x); math.Abs(got-want) > math.Abs(want)*2e-16+1e-300 {
			t.Errorf("logPortable(%g) = %v, math.Log %v", x, got, want)
		}
	}
	for _, x := range []float64{-700, -11.5, -1, -1e-9, 0, 1e-9, 0.5, 1, 2.302585, 50, 700} {
		if got, want := expPortable(x), math.Exp(x); math.Abs(got-want) > math.Abs(want)*2.3e-16 {
			t.Errorf("expPortable(%g) = %v, math.Exp %v", x, got, want)
		}
	}
}

// A CSV file's defaults come from --defaults; any other file is refused with one, and
// an empty cell keeps the default.
func TestCSVDefaultsFile(t *testing.T) {
	csvData := []byte("lr,ttl\n0.1,\n0.2,4h\n")
	defaults := []byte(`{"defaults": {"command": "run", "ttl": "1h"}, "objective": {"metric": "acc", "goal": "max"}}`)
	ps, err := readParamFile("r.csv", csvData, paramFileOptions{DefaultsFile: "d.json", Defaults: defaults, Canonical: true})
	if err != nil {
		t.Fatal(err)
	}
	if ps.Items[0].TTL.String() != "1h0m0s" || ps.Items[1].TTL.String() != "4h0m0s" || ps.Items[1].Command != "run" ||
		ps.Objective == nil || ps.Objective.Goal != "max" {
		t.Errorf("items %+v, objective %+v", ps.Items, ps.Objective)
	}
	want := "{\"defaults\":{\"command\":\"run\",\"ttl\":\"1h\"},\"objective\":{\"metric\":\"acc\",\"goal\":\"max\"},\"params\":[\n{\"lr\":\"0.1\"},\n{\"lr\":\"0.2\",\"ttl\":\"4h\"}\n]}\n"
	if string(ps.Canonical) != want {
		t.Errorf("canonical:\n got %s\nwant %s", ps.Canonical, want)
	}
	_, err = readParamFile("r.json", []byte(`{"params": [{"command": "x"}]}`), paramFileOptions{DefaultsFile: "d.json", Defaults: defaults})
	if err == nil || !strings.Contains(err.Error(), "r.json: --defaults d.json is for a CSV file") {
		t.Errorf("--defaults with a JSON file: %v", err)
	}
}

// Refusals that need more than one file, or a file name the bad/ directory cannot hold.
func TestParamFileRefusals(t *testing.T) {
	tests := []struct {
		name, data, defaultsName, defaults, want string
	}{
		{"sweep.toml", `{}`, "", "", `sweep.toml: unknown file type ".toml": name the file .json, .yaml, .yml or .csv`},
		{"sweep", `{}`, "", "", `sweep: the name has no extension to tell its format`},
		{"r.csv", "lr\n1\n", "d.yaml", "defaults:\n  command: run\n  ttl: soon\n", `d.yaml line 3, defaults.ttl: "soon" is not a duration`},
		{"r.csv", "lr\n1\n", "d.json", `{"defaults": {"command": "run"}, "params": []}`, `d.json line 1: unknown top-level key "params": a defaults file holds only "defaults" and "objective"`},
		{"r.csv", "lr\n1\n", "d.csv", "command\nrun\n", `d.csv: a defaults file is JSON or YAML`},
		{"r.csv", "lr\n1\n", "d.yaml", "objective: {metric: loss, goal: down}\n", `d.yaml line 1, objective.goal: "down" is not a goal`},
		{"s.yaml", "defaults: {command: x}\ngrid:\n  lr: [1, 2]\n  b:\n    - {lr: 3}\n", "", "", `s.yaml line 5, grid.b[0].lr: "lr" is also set by the axis "lr"`},
		{"s.yaml", "a: &a [*a]\n", "", "", `s.yaml line 1: the alias *a is inside the node it names`},
		{"s.yaml", "defaults:\n  <<: {command: x}\nparams: [{}]\n", "", "", `s.yaml line 2: merge keys (<<) are not supported`},
		{"s.json", `{"defaults": {"command": "x"}, "random": {"samples": 2, "seed": 1, "space": {"instance_type": {"choice": ["t3.micro", "t3micro"]}}}}`, "", "",
			`s.json line 1, random.space.instance_type.choice[1]: "t3micro" is not an instance type`},
		{"s.json", `{"defaults": {"command": "x"}, "random": {"samples": 2, "seed": 1, "space": {"ttl": {"uniform": [1, 2]}}}}`, "", "",
			`s.json line 1, random.space.ttl: expected a duration string`},
		{"s.json", `{"defaults": {"command": "x"}, "random": {"samples": 2, "seed": 1.5, "space": {"a": {"uniform": [1, 2]}}}}`, "", "",
			`s.json line 1, random.seed: expected a whole number, found 1.5`},
		{"s.json", `{"grid": {"lr": [1]}, "objective": {"metric": "loss"}}`, "", "", `s.json line 1, objective: no "goal"`},
		{"s.json", `{"defaults": {"command": "x"}, "grid": {"lr": [1]}, "params": []}`, "", "", ""},
	}
	for _, tt := range tests {
		o := paramFileOptions{DefaultsFile: tt.defaultsName, Defaults: []byte(tt.defaults)}
		_, err := readParamFile(tt.name, []byte(tt.data), o)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%s: %v", tt.data, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%s %q: got %v, want %q", tt.name, tt.data, err, tt.want)
		case err != nil && (exitCode(err) != exitUsage || strings.Contains(err.Error(), "\n")):
			t.Errorf("%s: want one line and exit 2, got exit %d: %q", tt.name, exitCode(err), err)
		}
	}
}

// stdin has no name: JSON when it starts with "{", else YAML.
func TestParamFileFromStdin(t *testing.T) {
	for _, in := range []string{`{"params": [{"command": "x", "a": 1}]}`, "params:\n  - command: x\n    a: 1\n"} {
		out, errOut, code := runSpawnStdin(t, in, "launch", "--dry-run", "--no-ttl", "--region", "us-east-1", "--param-file", "-", "--output", "json")
		if code != 0 || !strings.Contains(out, `"total_params": 1`) || !strings.Contains(out, `"a": "1"`) {
			t.Errorf("%q: exit %d, %s%s", in, code, out, errOut)
		}
	}
}

// BenchmarkExpandGrid10k: reading and expanding a 10,000-item grid, with and without the
// canonical file launch uploads.
func BenchmarkExpandGrid10k(b *testing.B) {
	const n = 10_000
	data := gridFile(n)
	for _, canonical := range []bool{false, true} {
		b.Run(fmt.Sprintf("canonical=%v", canonical), func(b *testing.B) {
			var size int
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			b.ReportAllocs()
			for b.Loop() {
				ps, err := readParamFile("grid.json", data, paramFileOptions{Canonical: canonical})
				if err != nil || len(ps.Items) != n {
					b.Fatalf("%v", err)
				}
				size = len(ps.Canonical)
			}
			runtime.ReadMemStats(&after)
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "items/s")
			b.ReportMetric(float64(after.Mallocs-before.Mallocs)/float64(n*b.N), "allocs/item")
			if canonical {
				b.ReportMetric(float64(size)/n, "canonical-B/item")
			}
		})
	}
}

// runSpawnStdin is runSpawn with stdin.
func runSpawnStdin(t testing.TB, stdin string, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	err := runCLI(context.Background(), args, strings.NewReader(stdin), &out, &errb)
	printError(&errb, err)
	return out.String(), errb.String(), exitCode(err)
}

// TestReadmeSweepExamples runs the README's "Defining a sweep" as written: every file it
// shows (a "`name`:" line before a code block) is written out, every `spawn` command it
// shows runs and succeeds, and every line of the output it shows after a command is a
// line of that command's output (white space aside).
func TestReadmeSweepExamples(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\n## Defining a sweep\n")
	if !ok {
		t.Fatal(`README.md has no "## Defining a sweep" section`)
	}
	section, _, _ = strings.Cut(section, "\n## ")
	dir := t.TempDir()
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "none"))
	t.Setenv("SPAWN_REGION", "us-east-1")
	files := map[string]string{}
	var commands [][]string
	var outputs []string // per command, what the README shows of its output
	lines := strings.Split(section, "\n")
	for i := 0; i < len(lines); i++ {
		fence, ok := strings.CutPrefix(lines[i], "```")
		if !ok || fence == "" {
			continue
		}
		end := i + 1
		for end < len(lines) && lines[end] != "```" {
			end++
		}
		body := strings.Join(lines[i+1:end], "\n") + "\n"
		switch name := caption(lines[:i]); {
		case name != "":
			files[name] = filepath.Join(dir, name)
			if err := os.WriteFile(files[name], []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		case fence == "sh":
			for _, l := range strings.Split(strings.TrimSpace(body), "\n") {
				commands = append(commands, strings.Fields(l))
				outputs = append(outputs, "")
			}
		case fence == "text" && len(outputs) > 0:
			outputs[len(outputs)-1] = body
		}
		i = end
	}
	if len(files) < 4 || len(commands) < 3 {
		t.Fatalf("found %d files and %d commands in the section: the test and README.md are out of step", len(files), len(commands))
	}
	for i, cmd := range commands {
		if cmd[0] != "spawn" {
			t.Fatalf("%q: the section's commands start with spawn", cmd)
		}
		args := slices.Clone(cmd[1:])
		for j, a := range args {
			if p, ok := files[a]; ok {
				args[j] = p
			}
		}
		out, errOut, code := runSpawn(t, nil, args...)
		if code != 0 {
			t.Errorf("%s: exit %d: %s", strings.Join(cmd, " "), code, errOut)
			continue
		}
		got := map[string]bool{}
		for _, l := range strings.Split(out, "\n") {
			got[strings.Join(strings.Fields(l), " ")] = true
		}
		for _, l := range strings.Split(strings.TrimSpace(outputs[i]), "\n") {
			if l = strings.Join(strings.Fields(l), " "); l != "" && !got[l] {
				t.Errorf("%s: README.md shows %q, which the output lacks:\n%s", strings.Join(cmd, " "), l, out)
			}
		}
	}
}

// caption is the file name a "`name`:" line (then a blank line) gives the code block after it.
func caption(before []string) string {
	for i := len(before) - 1; i >= 0; i-- {
		l := strings.TrimSpace(before[i])
		if l == "" {
			continue
		}
		if name, ok := strings.CutSuffix(l, "`:"); ok && strings.HasPrefix(name, "`") && !strings.Contains(name[1:], "`") {
			return name[1:]
		}
		return ""
	}
	return ""
}
