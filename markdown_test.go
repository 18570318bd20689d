package main

import (
	"context"
	"maps"
	"path/filepath"
	"strings"
	"testing"
)

// checkMarkdownGolden compares got with testdata/markdown/name; -update rewrites it.
func checkMarkdownGolden(t *testing.T, name, got string) {
	t.Helper()
	checkGolden(t, filepath.Join("testdata", "markdown", name), got)
}

// assertTables checks that every table row has as many cells as its header: an
// unescaped | in a value would add one.
func assertTables(t *testing.T, md string) {
	t.Helper()
	cells := func(l string) int { return strings.Count(strings.ReplaceAll(l, `\|`, ""), "|") }
	want := -1
	for i, l := range strings.Split(md, "\n") {
		switch {
		case !strings.HasPrefix(l, "|"):
			want = -1
		case want < 0:
			want = cells(l)
		case cells(l) != want:
			t.Errorf("line %d has %d cell borders, its header %d: %q", i+1, cells(l), want, l)
		}
	}
}

// status --output markdown of the three status fixtures: the mark agrees with --wait's
// exit code, and a failed item's traceback stays on one escaped line of its table.
func TestStatusMarkdownGolden(t *testing.T) {
	fixtures := maps.Clone(statusFixtures)
	fixtures["completed"] = func() (*sweep, []instanceRecord) {
		s, recs := completedWithFailuresSweep()
		s.SweepName, s.Counts = "ok", counts{Succeeded: 6}
		for i := range recs {
			recs[i].Outcome, recs[i].ErrorMessage, recs[i].ExitCode = outcomeSucceeded, "", intPtr(0)
		}
		return s, recs
	}
	for name, fixture := range fixtures {
		t.Run(name, func(t *testing.T) {
			s, recs := fixture()
			v := buildStatus(context.Background(), s, recs, newTablePricer(s.Region), statusNow)
			if name == "running" {
				v.setBest(&objective{Metric: "val_loss", Goal: "min"}, []instanceRecord{{Index: 3, Metrics: map[string]float64{"val_loss": 0.25}}})
			}
			var b strings.Builder
			if err := renderStatusMarkdown(&b, v); err != nil {
				t.Fatal(err)
			}
			assertTables(t, b.String())
			checkMarkdownGolden(t, "status-"+name+".md", b.String())
			if ok := sweepEndError(v.s, v.counts) == nil; terminalStatus(s.Status) && ok != (statusMark(v) == "✅") {
				t.Errorf("mark %s, but --wait would exit %d", statusMark(v), exitCode(sweepEndError(v.s, v.counts)))
			}
		})
	}
}

// results --output markdown: ranked by the objective, cut by --top, sorted by another
// metric, and a sweep whose file has no objective (rows in index order).
func TestResultsMarkdownGolden(t *testing.T) {
	for _, tt := range []struct {
		file, sort   string
		top          int
		noObjective  bool
		hostileParam bool
	}{
		{file: "results-objective.md"},
		{file: "results-top3.md", top: 3},
		{file: "results-top-acc.md", sort: "-acc", top: 2},
		{file: "results-no-objective.md", noObjective: true, hostileParam: true},
	} {
		t.Run(tt.file, func(t *testing.T) {
			doc := resultsFixture(t)
			if tt.noObjective {
				doc.Objective = nil
			}
			if tt.hostileParam {
				// A value with table and markup characters stays in its cell, as text.
				doc.Results[0].params[0].Value = "a|b <script> *x* `y`"
				doc.Results[1].Region = "eu-west-1"
			}
			rs, err := doc.parseSortKey(tt.sort)
			if err != nil {
				t.Fatal(err)
			}
			doc.sortRows(rs, tt.top)
			var b strings.Builder
			if err := renderResultsMarkdown(&b, doc); err != nil {
				t.Fatal(err)
			}
			assertTables(t, b.String())
			checkMarkdownGolden(t, tt.file, b.String())
		})
	}
}

// Markdown is an output of status and results only, checked before any AWS call
// wherever the flag stands; --watch draws text.
func TestOutputMarkdownOnlyWhereItExists(t *testing.T) {
	for _, tt := range []struct {
		args []string
		msg  string
	}{
		{[]string{"list", "--output", "markdown"}, "spawn: --output markdown is for 'spawn status' and 'spawn results' only: use text or json"},
		{[]string{"version", "--output", "markdown"}, "spawn: --output markdown is for 'spawn status' and 'spawn results' only: use text or json"},
		{[]string{"status", "sw-1", "--watch", "--output", "markdown"}, "spawn: --watch draws a live text view: use --wait with --output markdown for the final document"},
		{[]string{"status", "sw-1", "--output", "yaml"}, `spawn: --output "yaml" is not supported: use text or json (results: also csv; status and results: also markdown)`},
		{[]string{"results", "sw-1", "--output", "html"}, `spawn: --output "html" is not supported: use text or json (results: also csv; status and results: also markdown)`},
	} {
		out, errOut, code := runSpawn(t, nil, tt.args...)
		msg, _, _ := strings.Cut(errOut, "\n")
		if code != exitUsage || out != "" || msg != tt.msg {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit 2 and %q", tt.args, code, out, errOut, tt.msg)
		}
	}
}

// mdText keeps a value on one line and escapes what would end a cell or start markup.
func TestMarkdownEscaping(t *testing.T) {
	for in, want := range map[string]string{
		"plain 0.5":                    "plain 0.5",
		"a|b":                          `a\|b`,
		"line one\n  line two":         "line one line two",
		"<script>alert(1)</script>":    `\<script\>alert(1)\</script\>`,
		"*bold* _it_ `code` [l](u) ~s": "\\*bold\\* \\_it\\_ \\`code\\` \\[l\\](u) \\~s",
		`back\slash & amp`:             `back\\slash \& amp`,
	} {
		if got := mdText(in); got != want {
			t.Errorf("mdText(%q) = %q, want %q", in, got, want)
		}
	}
	if got := mdText(strings.Repeat("x", 500)); len(got) != maxMarkdownCell {
		t.Errorf("a 500-byte value is %d bytes, want %d", len(got), maxMarkdownCell)
	}
}
