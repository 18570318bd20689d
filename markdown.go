package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
)

// The Markdown views of status and results (`--output markdown`), written for a CI
// job's summary ($GITHUB_STEP_SUMMARY): GitHub-flavoured tables, every value from the
// sweep escaped, so a param or an error message cannot break the table or inject markup.

// maxMarkdownMetrics is how many metric columns the results table has; the CSV and
// JSON outputs have every metric.
const maxMarkdownMetrics = 6

// maxMarkdownCell cuts a long value (a traceback in an error message) in a table cell.
const maxMarkdownCell = 200

// mdEscaper backslash-escapes the characters that would start markup inside a line or
// end a table cell (CommonMark allows a backslash before any ASCII punctuation).
var mdEscaper = strings.NewReplacer(
	`\`, `\\`, "`", "\\`", "*", `\*`, "_", `\_`, "[", `\[`, "]", `\]`,
	"<", `\<`, ">", `\>`, "|", `\|`, "~", `\~`, "&", `\&`,
)

// mdText is s on one line, cut to maxMarkdownCell, escaped.
func mdText(s string) string { return mdEscaper.Replace(ellipsize(oneLine(s), maxMarkdownCell)) }

// mdCode is an identifier (a sweep or instance id) as inline code; "-" when empty.
func mdCode(s string) string {
	if s == "" || strings.Contains(s, "`") {
		return orDash(mdText(s))
	}
	return "`" + oneLine(s) + "`"
}

// mdTable writes a table: head names the columns, right the ones aligned right
// (numbers). Cells are written as given: escape them first.
func mdTable(b *strings.Builder, head []string, right map[int]bool, rows [][]string) {
	b.WriteString("| " + strings.Join(head, " | ") + " |\n|")
	for i := range head {
		if right[i] {
			b.WriteString("--:|")
		} else {
			b.WriteString("---|")
		}
	}
	b.WriteByte('\n')
	for _, r := range rows {
		b.WriteString("| " + strings.Join(r, " | ") + " |\n")
	}
}

// statusMark says at a glance how the sweep stands, as `--wait` exits: a check for
// COMPLETED with no failed, expired or unknown item (exit 0), a cross for any other end
// (exit 3), an hourglass while it runs.
func statusMark(v *statusView) string {
	c := v.counts
	switch {
	case !terminalStatus(v.s.Status):
		return "⏳"
	case v.s.Status == statusCompleted && c.Failed+c.Expired+c.Unknown == 0:
		return "✅"
	}
	return "❌"
}

// renderStatusMarkdown writes the status of a sweep: its name and status, how far it
// got, the item counts, the estimated cost, the best item by the objective, what it
// waits for or why it ended, and the instances alive and those that failed.
func renderStatusMarkdown(w io.Writer, v *statusView) error {
	s := v.s
	var b strings.Builder
	name := s.SweepName
	if name == "" {
		name = "(unnamed)"
	}
	fmt.Fprintf(&b, "### %s Sweep %s: %s\n\n", statusMark(v), mdText(name), s.Status)
	age := "age " + fmtAge(v.now.Sub(parseRecordTime(s.CreatedAt)))
	if t := parseRecordTime(s.CompletedAt); !t.IsZero() && terminalStatus(s.Status) {
		age = "ran " + fmtAge(t.Sub(parseRecordTime(s.CreatedAt)))
	}
	total, done := s.TotalParams, v.counts.done()
	pct := 0
	if total > 0 {
		pct = done * 100 / total
	}
	fmt.Fprintf(&b, "%s · %s · %s · %d/%d items done (%d%%)\n\n", mdCode(s.SweepID), mdText(strings.Join(v.regions, ", ")), age, done, total, pct)
	c := v.counts
	mdTable(&b, []string{"pending", "running", "succeeded", "failed", "expired", "cancelled", "unknown"},
		map[int]bool{0: true, 1: true, 2: true, 3: true, 4: true, 5: true, 6: true},
		[][]string{{strconv.Itoa(c.Pending), strconv.Itoa(c.Running), strconv.Itoa(c.Succeeded), strconv.Itoa(c.Failed),
			strconv.Itoa(c.Expired), strconv.Itoa(c.Cancelled), strconv.Itoa(c.Unknown)}})
	b.WriteByte('\n')
	for _, l := range v.markdownNotes() {
		b.WriteString("- " + l + "\n")
	}
	v.markdownInstances(&b)
	_, err := io.WriteString(w, b.String())
	return err
}

// markdownNotes are the status view's lines under the counts, as list items.
func (v *statusView) markdownNotes() []string {
	s := v.s
	cost := fmt.Sprintf("**estimated cost** $%.2f", v.costUSD)
	if !terminalStatus(s.Status) {
		cost += " so far"
	}
	if len(v.sources) > 0 {
		cost += " (prices: " + mdText(priceSourceCounts(v.sources)) + ")"
	}
	notes := []string{cost}
	if b := v.best; b != nil {
		notes = append(notes, fmt.Sprintf("**best** item %d: %s %s (%s)", b.Index, mdText(b.Metric), strconv.FormatFloat(b.Value, 'g', 6, 64), b.goal))
	}
	for _, l := range v.orchestratorLines() {
		notes = append(notes, "**orchestrator** "+mdText(strings.TrimPrefix(l, "orchestrator  ")))
	}
	if w := v.waitingLine(); w != "" {
		notes = append(notes, "**waiting** "+mdText(strings.TrimPrefix(w, "waiting  ")))
	}
	if s.ErrorMessage != "" {
		notes = append(notes, "**error** "+mdText(s.ErrorMessage))
	}
	if s.CancelRequested && s.Status != statusCancelled {
		notes = append(notes, "**cancel requested**: instances are being terminated")
	}
	return notes
}

// markdownInstances writes the alive instances and the failed, expired or unknown
// ones, each table cut at maxTableRows (--output json lists every instance).
func (v *statusView) markdownInstances(b *strings.Builder) {
	var alive, bad [][]string
	for _, si := range v.instances {
		switch {
		case si.alive:
			age, price := si.ageAndPrice(v.now)
			alive = append(alive, []string{strconv.Itoa(si.Index), mdCode(si.InstanceID), mdText(si.Region), mdText(si.InstanceType), mdText(si.State), age, price})
		case si.Outcome == outcomeFailed || si.Outcome == outcomeExpired || si.Outcome == outcomeUnknown:
			ran := "-"
			if !si.launchedAt.IsZero() && !si.terminatedAt.IsZero() {
				ran = fmtAge(si.terminatedAt.Sub(si.launchedAt))
			}
			msg := si.ErrorMessage
			if si.ExitCode != nil && msg == "" {
				msg = fmt.Sprintf("exit code %d", *si.ExitCode)
			}
			bad = append(bad, []string{strconv.Itoa(si.Index), mdCode(si.InstanceID), mdText(si.Region), mdText(si.InstanceType), si.Outcome, ran, orDash(mdText(msg))})
		}
	}
	more := func(n int) {
		if n > 0 {
			fmt.Fprintf(b, "\n%d more: `spawn status %s --output json` lists every instance\n", n, v.s.SweepID)
		}
	}
	if len(alive) > 0 {
		fmt.Fprintf(b, "\n#### Alive now: %d (max %d)\n\n", len(alive), v.s.MaxConcurrent)
		mdTable(b, []string{"index", "instance", "region", "type", "state", "age", "$/hour"}, map[int]bool{0: true, 6: true}, alive[:min(len(alive), maxTableRows)])
		more(len(alive) - maxTableRows)
	}
	if len(bad) > 0 {
		fmt.Fprintf(b, "\n#### Failed, expired or unknown: %d\n\n", len(bad))
		mdTable(b, []string{"index", "instance", "region", "type", "outcome", "ran", "error"}, map[int]bool{0: true}, bad[:min(len(bad), maxTableRows)])
		more(len(bad) - maxTableRows)
	}
}

// renderResultsMarkdown writes the results table: a heading that says which items in
// what order, then one row per item with its outcome, cost, metrics (the sort metric
// and the objective first) and params.
func renderResultsMarkdown(w io.Writer, doc *resultsDoc) error {
	var b strings.Builder
	fmt.Fprintf(&b, "### Results of %s (%s): %s\n\n", mdCode(doc.SweepID), doc.status, mdText(doc.order()))
	if o := doc.Objective; o != nil {
		fmt.Fprintf(&b, "Objective: %s %s.", map[bool]string{true: "maximize", false: "minimize"}[o.Goal == "max"], mdText(o.Metric))
	}
	cols, same := doc.varyingColumns()
	if len(same) > 0 {
		if doc.Objective != nil {
			b.WriteByte(' ')
		}
		b.WriteString("Every item: " + mdText(strings.Join(same, ", ")) + ".")
	}
	if doc.Objective != nil || len(same) > 0 {
		b.WriteString("\n\n")
	}
	metrics := doc.textMetrics(maxMarkdownMetrics)
	head := []string{"index", "outcome"}
	for _, c := range cols {
		head = append(head, c.head)
	}
	head = append(head, "cost $")
	right := map[int]bool{0: true, len(head) - 1: true}
	for _, m := range metrics {
		right[len(head)] = true
		head = append(head, mdText(m))
	}
	head = append(head, "params")
	rows := make([][]string, 0, len(doc.Results))
	for ri := range doc.Results {
		rows = append(rows, tableRow(&doc.Results[ri], cols, metrics, mdText))
	}
	mdTable(&b, head, right, rows)
	if n := len(doc.metricNames()) - len(metrics); n > 0 {
		fmt.Fprintf(&b, "\n%s not shown: `spawn results %s --output csv` has every metric\n", plural(n, "more metric"), doc.SweepID)
	}
	_, err := io.WriteString(w, b.String())
	return err
}
