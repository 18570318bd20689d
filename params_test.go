package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func mustParseParamFile(t testing.TB, path string) []item {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	items, err := parseParamFile(path, data)
	if err != nil {
		t.Fatalf("parse %s: %v", path, err)
	}
	return items
}

func TestParseParamFileMergesDefaults(t *testing.T) {
	items := mustParseParamFile(t, "testdata/params/good/grid.json")
	if len(items) != 5 {
		t.Fatalf("got %d items, want 5", len(items))
	}
	cmd := `python3 train.py --lr "$PARAM_lr" --seed "$PARAM_seed"`
	for i, it := range items {
		if it.Index != i || it.Command != cmd || it.IAMInstanceProfile != "spawnd-role" {
			t.Errorf("item %d: index %d, command %q, profile %q", i, it.Index, it.Command, it.IAMInstanceProfile)
		}
	}
	p := func(kv ...string) []param {
		var ps []param
		for i := 0; i < len(kv); i += 2 {
			ps = append(ps, param{kv[i], kv[i+1]})
		}
		return ps
	}
	tests := []struct {
		idx    int
		typ    string
		region string
		spot   bool
		price  string
		ttl    time.Duration
		params []param
	}{
		{0, "t3.micro", "", false, "", 2 * time.Hour, p("lr", "0.1", "model", "resnet50", "seed", "1")},
		{1, "t3.micro", "", false, "", 2 * time.Hour, p("lr", "0.01", "model", "resnet50", "seed", "1")},
		{2, "c7g.large", "", true, "0.05", 2 * time.Hour, p("lr", "0.1", "model", "resnet50", "seed", "2")},
		{3, "c7g.large", "eu-west-1", true, "", 24 * time.Hour, p("lr", "0.01", "model", "resnet50", "seed", "2")},
		{4, "t3.micro", "", false, "", 30 * time.Minute, p("lr", "0.001", "model", "vit-b16", "seed", "3")},
	}
	for _, tt := range tests {
		it := items[tt.idx]
		if it.InstanceType != tt.typ || it.Region != tt.region || it.Spot != tt.spot || it.SpotMaxPrice != tt.price || it.TTL != tt.ttl {
			t.Errorf("item %d: got type %q region %q spot %v price %q ttl %v", tt.idx, it.InstanceType, it.Region, it.Spot, it.SpotMaxPrice, it.TTL)
		}
		if !slices.Equal(it.Params, tt.params) {
			t.Errorf("item %d params: got %v, want %v", tt.idx, it.Params, tt.params)
		}
	}
}

// null takes a key of the defaults back out for one item.
func TestParseParamFileNullUnsetsDefault(t *testing.T) {
	data := `{"defaults": {"command": "run", "instance_type": "c7g.large", "ttl": "1h", "a": 1, "b": 2},
		"params": [{"a": null, "instance_type": null, "ttl": null}, {"command": null, "user_data": "#!/bin/sh"}, {"command": null}]}`
	_, err := parseParamFile("n.json", []byte(data))
	if err == nil || !strings.Contains(err.Error(), "params[2]: nothing to run") {
		t.Fatalf("an item whose command is unset must be refused, got %v", err)
	}
	items, err := parseParamFile("n.json", []byte(strings.Replace(data, `, {"command": null}]`, "]", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if it := items[0]; it.InstanceType != "t3.micro" || it.TTL != 0 || !slices.Equal(it.Params, []param{{"b", "2"}}) {
		t.Errorf("item 0: type %q, ttl %v, params %v", it.InstanceType, it.TTL, it.Params)
	}
	if it := items[1]; it.Command != "" || it.UserData != "#!/bin/sh" || it.InstanceType != "c7g.large" || len(it.Params) != 2 {
		t.Errorf("item 1: %+v", it)
	}
}

func TestParseParamFileDuplicateKeyInBigObject(t *testing.T) {
	members := `"command": "x"`
	for i := range 40 {
		members += fmt.Sprintf(`, "k%d": %d`, i, i)
	}
	_, err := parseParamFile("d.json", paramJSON("", members+`, "k3": 0`))
	if err == nil || !strings.Contains(err.Error(), "params[0].k3: the key appears twice") {
		t.Errorf("got %v", err)
	}
}

func TestParseParamFileValues(t *testing.T) {
	data := "\xef\xbb\xbf" + `{"params": [{"command": "x", "s": "a\"b\u00e9", "n": -1.5e3, "b": false, "t": true,
		"security_group_ids": ["sg-0123456789abcdef0", "sg-01234567"], "ami": "resolve:ssm:/spawn/my/ami",
		"idle_timeout": "1d2h", "iam_instance_profile": "arn:aws:iam::123456789012:instance-profile/p"}]}`
	items, err := parseParamFile("v.json", []byte(data))
	if err != nil {
		t.Fatal(err)
	}
	it := items[0]
	want := []param{{"b", "false"}, {"n", "-1.5e3"}, {"s", `a"bé`}, {"t", "true"}}
	if !slices.Equal(it.Params, want) {
		t.Errorf("params: got %v, want %v", it.Params, want)
	}
	if it.IdleTimeout != 26*time.Hour || len(it.SecurityGroupIDs) != 2 || it.AMI != "resolve:ssm:/spawn/my/ami" {
		t.Errorf("got idle %v, groups %v, ami %q", it.IdleTimeout, it.SecurityGroupIDs, it.AMI)
	}
}

// badFiles pairs every file in testdata/params/bad with the place and fix its message names.
var badFiles = map[string]string{
	"missing-comma.json":             `missing-comma.json line 4, column 5: expected "," or "]" but found '{': a comma may be missing between two items`,
	"trailing-data.json":             `trailing-data.json line 2, column 1: extra data after the JSON object: the file must hold exactly one {...}`,
	"truncated.json":                 `truncated.json line 5, column 1: the file ends in the middle of the JSON: a closing } or ] or a quote is missing`,
	"raw-tab.json":                   `raw-tab.json line 4, column 18: a control character (a raw tab or line break?) inside a string: write it as \t or \n`,
	"empty-file.json":                `empty-file.json: the file is empty: write {"defaults": {...}, "params": [{...}, ...]}`,
	"not-an-object.json":             `not-an-object.json line 1: expected a JSON object {"defaults": {...}, "params": [...]}, found an array`,
	"unknown-top-key.json":           `unknown-top-key.json line 2: unknown top-level key "param": did you mean "params"?`,
	"missing-params.json":            `missing-params.json line 1: no items: add "params": [{...}, ...] with one object per instance, a "grid" or a "random" search`,
	"empty-params.json":              `empty-params.json line 3, params: the list is empty: add one object per instance`,
	"item-not-object.json":           `item-not-object.json line 5, params[1]: expected an object of keys, found a string`,
	"command-and-user-data.json":     `command-and-user-data.json line 5, params[1]: both command (from defaults) and user_data are set: give command`,
	"no-command.json":                `no-command.json line 3, params[0]: nothing to run: give "command" (a shell line) or "user_data"`,
	"bad-duration.json":              `bad-duration.json line 7, params[3].ttl: "2 hours" is not a duration: use a Go duration like 90m or 2h30m, or days like 2d`,
	"defaults-bad-ttl.json":          `defaults-bad-ttl.json line 2, defaults.ttl: "soon" is not a duration`,
	"duration-as-number.json":        `duration-as-number.json line 4, params[0].idle_timeout: expected a duration string like "90m", "2h" or "1d", found a number`,
	"zero-ttl.json":                  `zero-ttl.json line 4, params[0].ttl: "0s" must be more than zero: give how long the instance may run`,
	"bad-instance-type.json":         `bad-instance-type.json line 5, params[1].instance_type: "t3micro" is not an instance type: use family.size, e.g. t3.micro`,
	"bad-region.json":                `bad-region.json line 2, defaults.region: "us-est-1" is not an AWS region: did you mean "us-east-1"?`,
	"spot-not-bool.json":             `spot-not-bool.json line 4, params[0].spot: expected true, false or "prefer", found a string`,
	"price-without-spot.json":        `price-without-spot.json line 4, params[0]: spot_max_price is set but spot is not true: add "spot": true`,
	"security-groups-not-array.json": `security-groups-not-array.json line 4, params[0].security_group_ids: expected an array of strings like ["sg-0123456789abcdef0"], found a string`,
	"security-group-bad-id.json":     `security-group-bad-id.json line 4, params[0].security_group_ids[1]: "default" is not a security group id`,
	"bad-param-key.json":             `bad-param-key.json line 4, params[0].learning-rate: a param's key may hold only letters, digits and _ (it becomes env var PARAM_<key>)`,
	"case-of-known-key.json":         `case-of-known-key.json line 4, params[0].TTL: keys are case-sensitive: did you mean "ttl"?`,
	"duplicate-key.json":             `duplicate-key.json line 4, params[0].lr: the key appears twice in one object: keep one`,
	"param-object-value.json":        `param-object-value.json line 4, params[0].grid: a param's value must be a string, number or boolean, found an object`,
	"param-value-too-long.json":      `param-value-too-long.json line 5, params[1].note: the value is 300 characters, over EC2's tag value limit of 256`,
	"too-many-tags.json":             `too-many-tags.json line 10, params[1]: 45 params make 51 tags, over EC2's limit of 50 per instance: use at most 44 params per item`,
	"fallback-one-ami.json":          `fallback-one-ami.json line 4, params[0]: ami "ami-0123456789abcdef0" (from defaults) is one region's image, and the item may launch in us-east-1, us-west-2: give one per region, e.g. "ami": {"us-east-1": "ami-…", "us-west-2": "ami-…"}`,
	"fallback-one-subnet.json":       `fallback-one-subnet.json line 5, params[1]: subnet_id "subnet-0123456789abcdef0" is in one region, and the item may launch in us-east-1, eu-west-1: give one per region`,
	"fallback-duplicate-type.json":   `fallback-duplicate-type.json line 4, params[0].instance_type[2]: "c5.large" is listed twice: keep one`,

	"grid-bad-value.json":              `grid-bad-value.json line 5, grid.ttl[1]: "2 hours" is not a duration`,
	"grid-empty-axis.json":             `grid-empty-axis.json line 5, grid.batch: the list is empty: give at least one value, or remove the axis`,
	"grid-key-in-two-axes.json":        `grid-key-in-two-axes.json line 7, grid.model[1].batch: "batch" is also set by the axis "batch": set each key in one axis`,
	"grid-mixed-axis.json":             `grid-mixed-axis.json line 4, grid.model[1]: the axis mixes objects and single values`,
	"grid-not-a-list.json":             `grid-not-a-list.json line 4, grid.lr: expected an array of values, one item each, found a number: write a single value as [value], or put the key in defaults`,
	"fallback-mixed-arch.json":         `fallback-mixed-arch.json line 3, item 0 (grid): ami (from defaults) is an image of one architecture, and instance types c7g.large (arm64) and c6i.large (x86_64) are listed: list types of one architecture, or remove "ami"`,
	"fallback-region-missing.yaml":     `fallback-region-missing.yaml line 9, params[1]: ami (from defaults) has no value for region eu-west-1, where the item may launch: add "eu-west-1" to it`,
	"grid-too-big.json":                `grid-too-big.json line 5, grid: the sweep would have 1,000,000,000,000 items (grid 1,000,000,000,000), over spawn's limit of 100,000 per sweep: split it into several sweeps`,
	"random-bounds-swapped.json":       `random-bounds-swapped.json line 7, random.space.dropout.uniform: the low bound 0.5 is above the high bound 0: swap them`,
	"random-empty-choice.json":         `random-empty-choice.json line 7, random.space.opt.choice: the list is empty: give at least one value to pick from`,
	"random-loguniform-zero.json":      `random-loguniform-zero.json line 7, random.space.lr.loguniform: the low bound 0 must be above 0, as a log scale has no zero`,
	"random-no-seed.json":              `random-no-seed.json line 3, random: no "seed": give a whole number, e.g. "seed": 1`,
	"random-randint-fraction.json":     `random-randint-fraction.json line 7, random.space.layers.randint: [2, 8.5]: randint's bounds are whole numbers`,
	"random-too-many.json":             `random-too-many.json line 3, params: the sweep would have 100,001 items (params 1, random 100,000), over spawn's limit of 100,000 per sweep`,
	"random-unknown-distribution.json": `random-unknown-distribution.json line 7, random.space.lr.log_uniform: unknown distribution: did you mean "loguniform"?`,
	"random-zero-samples.json":         `random-zero-samples.json line 4, random.samples: 0 samples make no item: give at least 1`,
	"objective-bad-goal.json":          `objective-bad-goal.json line 4, objective.goal: "minimize" is not a goal: use "min" (lower is better) or "max"`,

	"yaml-bad-duration.yaml":    `yaml-bad-duration.yaml line 9, grid.ttl[1]: "2 hours" is not a duration`,
	"yaml-duplicate-key.yaml":   `yaml-duplicate-key.yaml line 6, params[0].lr: the key appears twice in one mapping: keep one`,
	"yaml-syntax.yaml":          `yaml-syntax.yaml line 4: did not find expected ',' or ']': check the YAML`,
	"yaml-two-documents.yaml":   `yaml-two-documents.yaml line 4: a second YAML document: a parameter file is one document`,
	"yaml-unknown-top-key.yaml": `yaml-unknown-top-key.yaml line 3: unknown top-level key "grids": did you mean "grid"?`,

	"csv-bad-spot.csv":          `csv-bad-spot.csv line 3, column spot: expected true, false or "prefer", found a string`,
	"csv-bare-quote.csv":        `csv-bare-quote.csv line 2, column 14: a quote inside a field that does not start with one: quote the whole field`,
	"csv-duplicate-column.csv":  `csv-duplicate-column.csv line 1, column 3: "lr" names columns 1 and 3: keep one`,
	"csv-no-command.csv":        `csv-no-command.csv line 2: nothing to run: give "command" (a shell line) or "user_data" as a column or in the --defaults file's defaults`,
	"csv-no-rows.csv":           `csv-no-rows.csv line 1: a header and no rows: add one row per instance under it`,
	"csv-fallback-bad-type.csv": `csv-fallback-bad-type.csv line 3, column instance_type[1]: "m5large" is not an instance type: use family.size`,
	"csv-wrong-field-count.csv": `csv-wrong-field-count.csv line 3: 2 fields where the header has 3: give every column`,
}

func TestLaunchRefusesBadFiles(t *testing.T) {
	files, err := filepath.Glob("testdata/params/bad/*")
	if err != nil || len(files) < 50 {
		t.Fatalf("want at least 50 broken files, got %d (%v)", len(files), err)
	}
	for _, path := range files {
		want, ok := badFiles[filepath.Base(path)]
		if !ok {
			t.Errorf("%s has no expected message in badFiles", path)
			continue
		}
		t.Run(filepath.Base(path), func(t *testing.T) {
			out, errOut, code := runSpawn(t, nil, "launch", "--dry-run", "--param-file", path)
			if code != exitUsage {
				t.Errorf("exit code %d, want %d", code, exitUsage)
			}
			if out != "" {
				t.Errorf("stdout should be empty, got %q", out)
			}
			if strings.Count(errOut, "\n") != 1 || !strings.HasPrefix(errOut, "spawn: testdata/params/bad/") {
				t.Errorf("want one line naming the file, got %q", errOut)
			}
			if !strings.Contains(errOut, want) {
				t.Errorf("stderr %q\nlacks %q", errOut, want)
			}
		})
	}
}

func TestValidInstanceType(t *testing.T) {
	for _, s := range []string{"t3.micro", "c7gn.16xlarge", "u-6tb1.metal", "mac2-m2pro.metal", "c6i.metal-24xl",
		"u7i-12tb.224xlarge", "m7i-flex.large", "p4de.24xlarge", "x2iedn.xlarge"} {
		if !validInstanceType(s) {
			t.Errorf("%q refused", s)
		}
	}
	for _, s := range []string{"", "t3", "t3micro", "t3.", ".micro", "T3.micro", "t3.micro.x", "t3.huge", "t.micro",
		"t3.0xlarge", "-t3.micro", "t3-.micro", "t3.metal-xl", "t3 .micro"} {
		if validInstanceType(s) {
			t.Errorf("%q accepted", s)
		}
	}
}

func TestParseDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"90m": 90 * time.Minute, "2h30m": 150 * time.Minute, "2d": 48 * time.Hour, "1d12h": 36 * time.Hour,
		"1.5d": 36 * time.Hour, "0.5h": 30 * time.Minute, "3660d": 3660 * 24 * time.Hour,
	} {
		if got, err := parseDuration(in); err != nil || got != want {
			t.Errorf("parseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "d", "2", "2 hours", "d2", "1e3d", "1d-2h", "-d", "2dd", "1d2", "3661d", "3660d1h", "87841h"} {
		if _, err := parseDuration(in); err == nil {
			t.Errorf("parseDuration(%q) accepted", in)
		}
	}
}

// paramJSON is the one builder of parameter files in the command layer's tests: the
// defaults' members (JSON without the braces; "" for no defaults) and one object's
// members per item.
func paramJSON(defaults string, items ...string) []byte {
	var b bytes.Buffer
	b.WriteString("{")
	if defaults != "" {
		b.WriteString(`"defaults": {` + defaults + "},\n")
	}
	b.WriteString(`"params": [` + "\n")
	for i, it := range items {
		if i > 0 {
			b.WriteString(",\n")
		}
		b.WriteString("  {" + it + "}")
	}
	b.WriteString("\n]}\n")
	return b.Bytes()
}

// writeParamFile writes a parameter file into the test's directory and returns its path.
func writeParamFile(t testing.TB, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "params.json")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// paramFile is a file of n items with defaults, a few params each, and an override
// every tenth item.
func paramFile(n int) []byte {
	items := make([]string, n)
	for i := range items {
		items[i] = fmt.Sprintf(`"lr": 0.%03d, "seed": %d, "tag": "run-%d"`, i%1000, i, i)
		if i%10 == 0 {
			items[i] += `, "instance_type": "c7g.large", "spot": true`
		}
	}
	return paramJSON(`"instance_type": "t3.micro", "ttl": "2h", "command": "python3 train.py", "model": "resnet50"`, items...)
}

func BenchmarkParseParamFile100k(b *testing.B) {
	const n = 100_000
	data := paramFile(n)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		items, err := parseParamFile("bench.json", data)
		if err != nil || len(items) != n {
			b.Fatalf("%d items, %v", len(items), err)
		}
	}
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "items/s")
}

// FuzzParseParamFile: any input either parses into consistent items or is refused with
// one usage-error line that names the file; nothing panics; an accepted file expands the
// same way twice, and its canonical upload reads back to the same items.
func FuzzParseParamFile(f *testing.F) {
	for _, dir := range []string{"testdata/params/good", "testdata/params/bad"} {
		files, _ := filepath.Glob(filepath.Join(dir, "*.json"))
		for _, p := range files {
			if data, err := os.ReadFile(p); err == nil {
				f.Add(data)
			}
		}
	}
	f.Add(paramFile(3))
	f.Fuzz(func(t *testing.T, data []byte) {
		checkParamFile(t, "fuzz.json", data, paramFileOptions{})
	})
}

// FuzzParseParamYAML is FuzzParseParamFile for YAML files.
func FuzzParseParamYAML(f *testing.F) {
	for _, dir := range []string{"testdata/params/good", "testdata/params/good/defaults", "testdata/params/bad"} {
		files, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
		for _, p := range files {
			if data, err := os.ReadFile(p); err == nil {
				f.Add(data)
			}
		}
	}
	f.Add([]byte("defaults: {command: x}\nparams: [{a: &v 1}, {a: *v, b: 0x1f, c: .5, d: ~, e: !!str 7}]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		checkParamFile(t, "fuzz.yaml", data, paramFileOptions{})
	})
}

// FuzzParseParamCSV is FuzzParseParamFile for CSV files with a --defaults file (YAML; none
// when empty).
func FuzzParseParamCSV(f *testing.F) {
	defaults, _ := os.ReadFile("testdata/params/good/defaults/same.yaml")
	files, _ := filepath.Glob("testdata/params/*/*.csv")
	for _, p := range files {
		if data, err := os.ReadFile(p); err == nil {
			f.Add(data, defaults)
			f.Add(data, []byte{})
		}
	}
	f.Add([]byte("command,spot,security_group_ids\nx,TRUE,sg-01234567;sg-0123456789abcdef0\n\"y\nz\",false,\n"), []byte{})
	f.Fuzz(func(t *testing.T, data, defaults []byte) {
		o := paramFileOptions{}
		if len(defaults) > 0 {
			o.DefaultsFile, o.Defaults = "fuzz-defaults.yaml", defaults
		}
		checkParamFile(t, "fuzz.csv", data, o)
	})
}

// checkParamFile holds a fuzzed file to the parser's promises.
func checkParamFile(t *testing.T, file string, data []byte, o paramFileOptions) {
	o.Canonical = true
	ps, err := readParamFile(file, data, o)
	if err != nil {
		msg := err.Error()
		named := strings.HasPrefix(msg, file) || (o.DefaultsFile != "" && strings.HasPrefix(msg, o.DefaultsFile))
		if exitCode(err) != exitUsage || strings.Contains(msg, "\n") || !named {
			t.Fatalf("want a one-line usage error naming the file, got exit %d: %q", exitCode(err), msg)
		}
		return
	}
	items := ps.Items
	if len(items) == 0 || len(items) > maxSweepItems || len(items) != ps.FromParams+ps.FromGrid+ps.FromRandom {
		t.Fatalf("%d items (params %d, grid %d, random %d) and no error", len(items), ps.FromParams, ps.FromGrid, ps.FromRandom)
	}
	sw := &sweep{SweepID: "s", SweepName: "f", S3Bucket: "b", Region: "us-east-1"}
	for i, it := range items {
		if it.Index != i || (it.Command == "") == (it.UserData == "") || !validInstanceType(it.InstanceType) {
			t.Fatalf("item %d inconsistent: %+v", i, it)
		}
		if !slices.IsSortedFunc(it.Params, func(a, b param) int { return strings.Compare(a.Key, b.Key) }) {
			t.Fatalf("item %d params not sorted: %v", i, it.Params)
		}
		if n := len(runInstancesInput(sw, it, 1).TagSpecifications[0].Tags); n > maxTagsPerResource {
			t.Fatalf("item %d has %d tags", i, n)
		}
	}
	again, err := readParamFile(file, data, o)
	if err != nil || !reflect.DeepEqual(again.Items, items) || !bytes.Equal(again.Canonical, ps.Canonical) {
		t.Fatalf("a second read differs (%v)", err)
	}
	back, err := parseParamFile("params.json", ps.Canonical)
	if err != nil || !reflect.DeepEqual(back, items) {
		t.Fatalf("the canonical file reads back to other items (%v):\n%s", err, ps.Canonical)
	}
}
