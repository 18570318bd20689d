package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// screenWidth is the width every text line of status and list fits in.
const screenWidth = 80

// maxTableRows keeps a live view on one screen; --output json has every instance.
const maxTableRows = 15

// statusInstance is one instance of the sweep as status shows it (the `instances` of status --output json),
// with the price it is costed at and where that price came from.
type statusInstance struct {
	Index        int     `json:"index"`
	InstanceID   string  `json:"instance_id"`
	Region       string  `json:"region"`
	InstanceType string  `json:"instance_type"`
	State        string  `json:"state"`
	Outcome      string  `json:"outcome"`
	Attempt      int     `json:"attempt"`
	LaunchedAt   *string `json:"launched_at"`   // RFC 3339; null before RunInstances answered
	TerminatedAt *string `json:"terminated_at"` // null while alive
	ErrorMessage string  `json:"error_message"`
	ExitCode     *int    `json:"exit_code,omitempty"`
	Spot         bool    `json:"spot,omitempty"`
	Market       string  `json:"market"` // spot or on-demand: what it ran in
	PriceHourly  float64 `json:"price_hourly"`
	PriceSource  string  `json:"price_source"`
	CostUSD      float64 `json:"cost_usd"`

	alive        bool
	launchedAt   time.Time
	terminatedAt time.Time
}

// ageAndPrice are an alive instance's AGE and $/HOUR cells.
func (si *statusInstance) ageAndPrice(now time.Time) (age, price string) {
	age = "-"
	if !si.launchedAt.IsZero() {
		age = fmtAge(now.Sub(si.launchedAt))
	}
	price = fmt.Sprintf("%.4f", si.PriceHourly)
	if si.Spot {
		price += " spot"
	}
	return age, price
}

// statusDoc is `spawn status --output json`: the record's fields under their attribute
// names, with counts and cost as of now and every instance the sweep ever launched.
type statusDoc struct {
	*sweep
	Counts           counts           `json:"counts"`
	EstimatedCostUSD float64          `json:"estimated_cost_usd"` // ended instances + running ones so far
	PriceSources     map[string]int   `json:"price_sources"`      // instances priced from each source
	Instances        []statusInstance `json:"instances"`
	Orchestrator     orchestratorDoc  `json:"orchestrator"`
	Best             *bestResult      `json:"best,omitempty"`
}

// orchestratorDoc is who drives the sweep and when it last stepped (the holder's clock).
type orchestratorDoc struct {
	Owner          string     `json:"owner"`
	LeaseExpiresAt *time.Time `json:"lease_expires_at"`
	LastStepAt     *time.Time `json:"last_step_at"`
}

func timeOrNil(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// orchestratorLines says how long ago the last step ran, or, when nobody has stepped for
// two lease periods (a holder renews at every step), that no orchestrator runs and what
// continues the sweep; none once it ended.
func (v *statusView) orchestratorLines() []string {
	s := v.s
	if terminalStatus(s.Status) {
		return nil
	}
	last := s.LastStepAt
	if last.IsZero() {
		last = parseRecordTime(s.CreatedAt)
	}
	silence := max(v.now.Sub(last), 0)
	if silence <= 2*leaseFor(s, defaultLeaseTTL) {
		if s.LastStepAt.IsZero() {
			return []string{"orchestrator  starting"}
		}
		return []string{"orchestrator  last step " + fmtAge(silence) + " ago"}
	}
	if s.Detached {
		return []string{"orchestrator  none for " + fmtAge(silence) + ": the watchdog continues it within 5 min;",
			"              'spawn resume " + s.SweepID + "' does it now"}
	}
	return []string{"orchestrator  none for " + fmtAge(silence) + ": its --no-detach process stopped;",
		"              'spawn resume " + s.SweepID + "' continues it"}
}

// statusView is what one status screen shows, computed once from the record and the
// instance items at a given time.
type statusView struct {
	s         *sweep
	now       time.Time
	counts    counts
	costUSD   float64
	sources   map[string]int
	instances []statusInstance
	regions   []string
	best      *bestResult // by the objective, when the file has one and an item reported it
	// computeAccount is the sweep's account when it is not the orchestrator's.
	computeAccount string
}

// buildStatus merges the record's alive slots with the instance items, prices every
// instance and computes the counts and the cost as of now.
func buildStatus(ctx context.Context, s *sweep, recs []instanceRecord, p *pricer, now time.Time) *statusView {
	v := &statusView{s: s, now: now, sources: map[string]int{}}
	byIndex := v.addRecords(recs)
	v.addAlive(s.Alive, byIndex)
	sort.Slice(v.instances, func(i, j int) bool { return v.instances[i].Index < v.instances[j].Index })
	v.priceInstances(ctx, p)
	v.sortRegions()
	c := s.Counts
	c.Running = slotsUsed(s)
	c.Pending = max(0, s.TotalParams-c.Succeeded-c.Failed-c.Expired-c.Cancelled-c.Unknown-c.Running)
	v.counts = c
	return v
}

// addRecords adds one instance per item and returns where each index's is.
func (v *statusView) addRecords(recs []instanceRecord) map[int]int {
	byIndex := map[int]int{}
	for _, rec := range recs {
		si := statusInstance{
			Index: rec.Index, InstanceID: rec.InstanceID, Region: rec.Region, InstanceType: rec.InstanceType, Spot: rec.Spot,
			State: rec.State, Outcome: rec.Outcome, Attempt: rec.Attempt, ErrorMessage: rec.ErrorMessage,
			ExitCode: rec.ExitCode, PriceHourly: rec.PriceHourly, PriceSource: rec.PriceSource, CostUSD: rec.CostUSD,
			launchedAt: rec.LaunchedAt, terminatedAt: rec.TerminatedAt,
		}
		if si.PriceHourly > 0 && si.PriceSource == "" {
			si.PriceSource = "recorded"
		}
		byIndex[rec.Index] = len(v.instances)
		v.instances = append(v.instances, si)
	}
	return byIndex
}

// addAlive lays the record's alive slots over the items. An alive slot is newer than
// any item of its index, and may have no item yet (reserved, or RunInstances answered
// but the item not yet written).
func (v *statusView) addAlive(alive []aliveInstance, byIndex map[int]int) {
	for _, a := range alive {
		si := statusInstance{
			Index: a.Index, InstanceID: a.InstanceID, Region: a.Region, InstanceType: a.InstanceType,
			Attempt: a.Attempt, Spot: a.Spot, PriceHourly: a.PriceHourly, launchedAt: a.LaunchedAt,
		}
		if si.PriceSource = a.PriceSource; si.PriceHourly > 0 && si.PriceSource == "" {
			si.PriceSource = "recorded"
		}
		switch {
		case a.InstanceID == "":
			si.State = "launching"
		case a.Ended != nil:
			si.State = "ended, awaiting its report"
		default:
			si.State = "running"
		}
		if i, ok := byIndex[a.Index]; ok {
			old := v.instances[i]
			if old.Attempt > a.Attempt {
				continue
			}
			if old.Attempt == a.Attempt && old.Outcome == "" {
				// The item knows the EC2 state and maybe the price source; the slot that it is alive.
				if old.State != "" {
					si.State = old.State
				}
				if si.InstanceID == "" {
					si.InstanceID = old.InstanceID
				}
				if si.launchedAt.IsZero() {
					si.launchedAt = old.launchedAt
				}
				if old.PriceHourly > 0 {
					si.PriceHourly, si.PriceSource = old.PriceHourly, old.PriceSource
				}
			}
			si.alive = true
			v.instances[i] = si
			continue
		}
		si.alive = true
		byIndex[a.Index] = len(v.instances)
		v.instances = append(v.instances, si)
	}
}

// priceInstances prices every instance without a recorded price and sums the cost:
// ended instances at their run time, alive ones up to now.
func (v *statusView) priceInstances(ctx context.Context, p *pricer) {
	s := v.s
	var endedCost, runningCost float64
	for i := range v.instances {
		si := &v.instances[i]
		if si.Region == "" {
			si.Region = s.Region
		}
		si.Market = map[bool]string{true: "spot", false: "on-demand"}[si.Spot]
		if si.PriceHourly == 0 && p != nil && si.InstanceType != "" {
			si.PriceHourly, si.PriceSource = p.priceFor(ctx, si.Region, si.InstanceType, si.Spot)
		}
		if si.PriceSource == "" {
			si.PriceSource = priceSourceUnknown
		}
		v.sources[si.PriceSource]++
		if si.alive {
			si.CostUSD = roundUSD(runCost(si.launchedAt, v.now, si.PriceHourly))
			runningCost += si.CostUSD
		} else {
			if si.CostUSD == 0 {
				si.CostUSD = roundUSD(runCost(si.launchedAt, si.terminatedAt, si.PriceHourly))
			}
			endedCost += si.CostUSD
		}
		si.LaunchedAt = rfc3339OrNil(si.launchedAt)
		si.TerminatedAt = rfc3339OrNil(si.terminatedAt)
	}
	// The record's sum of ended instances is the engine's own figure; the items' sum
	// stands in when the record has none.
	if s.EstimatedCostUSD > 0 {
		endedCost = s.EstimatedCostUSD
	}
	v.costUSD = roundUSD(endedCost + runningCost)
}

// sortRegions lists the regions the sweep's instances run in, the sweep's own first.
func (v *statusView) sortRegions() {
	s := v.s
	regions := map[string]bool{}
	if s.Region != "" {
		regions[s.Region] = true
	}
	for _, si := range v.instances {
		regions[si.Region] = true
	}
	for r := range regions {
		v.regions = append(v.regions, r)
	}
	sort.Strings(v.regions)
	if s.Region != "" {
		v.regions = slices.DeleteFunc(v.regions, func(r string) bool { return r == s.Region })
		v.regions = append([]string{s.Region}, v.regions...)
	}
}

func roundUSD(x float64) float64 { return math.Round(x*1e4) / 1e4 }

func rfc3339OrNil(t time.Time) *string {
	if t.IsZero() {
		return nil
	}
	s := t.UTC().Format(time.RFC3339)
	return &s
}

func (v *statusView) doc() statusDoc {
	inst := v.instances
	if inst == nil {
		inst = []statusInstance{}
	}
	orch := orchestratorDoc{Owner: v.s.LeaseOwner, LeaseExpiresAt: timeOrNil(v.s.LeaseExpiresAt), LastStepAt: timeOrNil(v.s.LastStepAt)}
	return statusDoc{sweep: v.s, Counts: v.counts, EstimatedCostUSD: v.costUSD, PriceSources: v.sources, Instances: inst, Orchestrator: orch, Best: v.best}
}

// textStyle decides colour; colour only on a terminal with NO_COLOR unset.
type textStyle struct{ color bool }

func (st textStyle) status(s string) string {
	if !st.color {
		return s
	}
	code := "36" // cyan: in progress
	switch s {
	case statusCompleted:
		code = "32"
	case statusFailed:
		code = "31"
	case statusCancelled:
		code = "33"
	}
	return "\x1b[" + code + "m" + s + "\x1b[0m"
}

// summaryLine is the one line that names the sweep: name, id, status, age, region(s).
func (v *statusView) summaryLine(st textStyle) string {
	s := v.s
	age := "age " + fmtAge(v.now.Sub(parseRecordTime(s.CreatedAt)))
	if t := parseRecordTime(s.CompletedAt); !t.IsZero() && terminalStatus(s.Status) {
		age = "ran " + fmtAge(t.Sub(parseRecordTime(s.CreatedAt)))
	}
	tail := "  " + ellipsize(s.SweepID, 28) + "  " + s.Status + "  " + age + "  " + ellipsize(strings.Join(v.regions, ","), 24)
	name := s.SweepName
	if name == "" {
		name = "(unnamed)"
	}
	room := screenWidth - utf8.RuneCountInString(tail)
	line := ellipsize(name, max(room, 8)) + tail
	line = ellipsize(line, screenWidth)
	// Colour goes on after the line was cut to width: escape codes take no columns.
	return strings.Replace(line, "  "+s.Status+"  ", "  "+st.status(s.Status)+"  ", 1)
}

// progressLine is `[#####.....]  n/total done  p%` over the items with an outcome.
func (v *statusView) progressLine() string {
	const barWidth = 40
	total, done := v.s.TotalParams, v.counts.done()
	filled, pct := 0, 0
	if total > 0 {
		filled = done * barWidth / total
		pct = done * 100 / total
	}
	return fmt.Sprintf("[%s%s]  %d/%d done  %d%%", strings.Repeat("#", filled), strings.Repeat(".", barWidth-filled), done, total, pct)
}

func (c counts) line() string {
	return fmt.Sprintf("pending %d  running %d  succeeded %d  failed %d  expired %d  cancelled %d  unknown %d",
		c.Pending, c.Running, c.Succeeded, c.Failed, c.Expired, c.Cancelled, c.Unknown)
}

func (v *statusView) costLine() string {
	line := fmt.Sprintf("est. cost $%.2f so far", v.costUSD)
	if len(v.sources) > 0 {
		line += " (prices: " + priceSourceCounts(v.sources) + ")"
	}
	return ellipsize(line, screenWidth)
}

// priceSourceCounts says how many prices came from each source: "3 table, 1 unknown".
func priceSourceCounts(sources map[string]int) string {
	var parts []string
	for _, src := range sortedKeys(sources) {
		parts = append(parts, fmt.Sprintf("%d %s", sources[src], src))
	}
	return strings.Join(parts, ", ")
}

// waitingLine says which launches wait and why ("waiting  12 items: vCPU quota
// (VcpuLimitExceeded)"), the most common reason first; "" when none waits.
func (v *statusView) waitingLine() string {
	n := map[string]int{}
	for _, e := range v.s.Alive {
		if e.InstanceID == "" && e.WaitReason != "" {
			n[e.WaitReason]++
		}
	}
	if len(n) == 0 {
		return ""
	}
	reasons := sortedKeys(n)
	sort.SliceStable(reasons, func(i, j int) bool { return n[reasons[i]] > n[reasons[j]] })
	parts := make([]string, len(reasons))
	for i, r := range reasons {
		parts[i] = plural(n[r], "item") + ": " + r
	}
	return "waiting  " + strings.Join(parts, "; ")
}

// renderStatus writes the full text view; every line fits screenWidth columns.
func renderStatus(w io.Writer, v *statusView, st textStyle) error {
	var b strings.Builder
	line := func(s string) { b.WriteString(s); b.WriteByte('\n') }
	line(v.summaryLine(st))
	line(v.progressLine())
	line(ellipsize(v.counts.line(), screenWidth))
	line(v.costLine())
	if v.computeAccount != "" {
		line(ellipsize("account  "+v.computeAccount+" (instances reached through "+crossAccountRoleName+")", screenWidth))
	}
	if v.best != nil {
		line(ellipsize(v.best.line(), screenWidth))
	}
	for _, l := range v.orchestratorLines() {
		line(ellipsize(l, screenWidth))
	}
	if w := v.waitingLine(); w != "" {
		line(ellipsize(w, screenWidth))
	}
	if v.s.ErrorMessage != "" {
		line(ellipsize("error  "+oneLine(v.s.ErrorMessage), screenWidth))
	}
	if v.s.CancelRequested && v.s.Status != statusCancelled {
		line("cancel requested: instances are being terminated")
	}

	var alive, bad []statusInstance
	for _, si := range v.instances {
		switch {
		case si.alive:
			alive = append(alive, si)
		case si.Outcome == outcomeFailed || si.Outcome == outcomeExpired || si.Outcome == outcomeUnknown:
			bad = append(bad, si)
		}
	}
	if len(alive) > 0 {
		line("")
		line(fmt.Sprintf("alive now: %d (max %d)", len(alive), v.s.MaxConcurrent))
		multiRegion := len(v.regions) > 1
		rows := [][]string{withRegion(multiRegion, []string{"INDEX", "INSTANCE", "REGION", "TYPE", "STATE", "AGE", "$/HOUR"})}
		for _, si := range alive[:min(len(alive), maxTableRows)] {
			age, price := si.ageAndPrice(v.now)
			rows = append(rows, withRegion(multiRegion, []string{fmt.Sprint(si.Index), orDash(si.InstanceID), si.Region, si.InstanceType, si.State, age, price}))
		}
		writeTable(&b, rows, nil)
		if n := len(alive) - maxTableRows; n > 0 {
			line(fmt.Sprintf("... and %d more alive (--output json lists every instance)", n))
		}
	}
	if len(bad) > 0 {
		line("")
		line(fmt.Sprintf("failed, expired or unknown: %d", len(bad)))
		// The error gets its own indented line under its row: it is the widest cell.
		multiRegion := len(v.regions) > 1
		rows := [][]string{withRegion(multiRegion, []string{"INDEX", "INSTANCE", "REGION", "TYPE", "OUTCOME", "RAN"})}
		var notes []string
		for _, si := range bad[:min(len(bad), maxTableRows)] {
			ran := "-"
			if !si.launchedAt.IsZero() && !si.terminatedAt.IsZero() {
				ran = fmtAge(si.terminatedAt.Sub(si.launchedAt))
			}
			msg := oneLine(si.ErrorMessage)
			if si.ExitCode != nil && msg == "" {
				msg = fmt.Sprintf("exit code %d", *si.ExitCode)
			}
			rows = append(rows, withRegion(multiRegion, []string{fmt.Sprint(si.Index), orDash(si.InstanceID), si.Region, si.InstanceType, si.Outcome, ran}))
			notes = append(notes, msg)
		}
		writeTable(&b, rows, notes)
		if n := len(bad) - maxTableRows; n > 0 {
			line(fmt.Sprintf("... and %d more (--output json lists every instance)", n))
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// writeTable aligns rows in columns two spaces apart; an INDEX first column is
// right-aligned, and the last one is cut so the row fits screenWidth.
// A non-empty note i is printed, indented, under data row i. Columns in uncut keep
// their full width (ids a user copies).
func writeTable(b *strings.Builder, rows [][]string, notes []string, uncut ...int) {
	if len(rows) == 0 {
		return
	}
	n := len(rows[0])
	widths := make([]int, n)
	// A column other than the last one never takes more than maxCol: an instance
	// id or a type name is at most about that long.
	const maxCol = 20
	for _, r := range rows {
		for i, c := range r {
			w := utf8.RuneCountInString(c)
			if !slices.Contains(uncut, i) {
				w = min(w, maxCol)
			}
			widths[i] = max(widths[i], w)
		}
	}
	for ri, r := range rows {
		var sb strings.Builder
		for i, c := range r {
			if i > 0 {
				sb.WriteString("  ")
			}
			if i == n-1 {
				sb.WriteString(c)
				break
			}
			c = ellipsize(c, widths[i])
			pad := strings.Repeat(" ", widths[i]-utf8.RuneCountInString(c))
			if i == 0 && rows[0][0] == "INDEX" {
				sb.WriteString(pad + c)
			} else {
				sb.WriteString(c + pad)
			}
		}
		b.WriteString(strings.TrimRight(ellipsize(sb.String(), screenWidth), " "))
		b.WriteByte('\n')
		if ri > 0 && ri-1 < len(notes) && notes[ri-1] != "" {
			indent := strings.Repeat(" ", widths[0]+2)
			b.WriteString(indent + ellipsize(notes[ri-1], screenWidth-len(indent)) + "\n")
		}
	}
}

// withRegion drops the REGION column (the third) when the sweep runs in one region:
// the summary line names it, and the row needs the room.
func withRegion(keep bool, row []string) []string {
	if keep {
		return row
	}
	return append(row[:2:2], row[3:]...)
}

// ellipsize cuts s to at most n columns, ending in "..." when it was cut.
func ellipsize(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	if n <= 3 {
		return string([]rune(s)[:n])
	}
	return string([]rune(s)[:n-3]) + "..."
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// parseRecordTime reads the record's RFC 3339 times; a missing one is the zero time.
func parseRecordTime(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}
	}
	return t
}

// fmtAge is a short duration: 45s, 12m05s, 2h13m, 3d04h.
func fmtAge(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	d = d.Truncate(time.Second)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	default:
		return fmt.Sprintf("%dd%02dh", int(d.Hours())/24, int(d.Hours())%24)
	}
}

// progressSummary is the one line --watch appends when stdout is not a terminal.
func (v *statusView) progressSummary() string {
	c := v.counts
	return ellipsize(fmt.Sprintf("%s  %s  %d/%d done  running %d  failed %d  expired %d  unknown %d",
		v.s.SweepID, v.s.Status, c.done(), v.s.TotalParams, c.Running, c.Failed, c.Expired, c.Unknown), screenWidth-10)
}

var sweepStatuses = []string{statusInitializing, statusRunning, statusCompleted, statusFailed, statusCancelled}

// listEntry is one sweep of `spawn list --output json`.
type listEntry struct {
	SweepID          string  `json:"sweep_id"`
	SweepName        string  `json:"sweep_name"`
	Status           string  `json:"status"`
	CreatedAt        string  `json:"created_at"`
	UpdatedAt        string  `json:"updated_at"`
	CompletedAt      string  `json:"completed_at,omitempty"`
	TotalParams      int     `json:"total_params"`
	MaxConcurrent    int     `json:"max_concurrent"`
	Region           string  `json:"region"`
	Counts           counts  `json:"counts"`
	EstimatedCostUSD float64 `json:"estimated_cost_usd"`
	ErrorMessage     string  `json:"error_message,omitempty"`
}

type listDoc struct {
	Sweeps    []listEntry `json:"sweeps"`
	NextToken string      `json:"next_token,omitempty"`
}

// newListEntry needs no instance items: counts come from the record, and the running
// instances' cost from the prices recorded in their slots.
func newListEntry(s *sweep, now time.Time) listEntry {
	v := buildStatus(context.Background(), &sweep{TotalParams: s.TotalParams, Counts: s.Counts, Alive: s.Alive, EstimatedCostUSD: s.EstimatedCostUSD, Region: s.Region}, nil, nil, now)
	return listEntry{
		SweepID: s.SweepID, SweepName: s.SweepName, Status: s.Status, CreatedAt: s.CreatedAt, UpdatedAt: s.UpdatedAt,
		CompletedAt: s.CompletedAt, TotalParams: s.TotalParams, MaxConcurrent: s.MaxConcurrent, Region: s.Region,
		Counts: v.counts, EstimatedCostUSD: v.costUSD, ErrorMessage: s.ErrorMessage,
	}
}

func renderList(w io.Writer, doc *listDoc) error {
	var b strings.Builder
	if len(doc.Sweeps) == 0 {
		b.WriteString("no sweeps: start one with 'spawn launch --param-file FILE'\n")
	} else {
		rows := [][]string{{"SWEEP ID", "NAME", "STATUS", "DONE", "CREATED", "COST"}}
		for _, e := range doc.Sweeps {
			created := e.CreatedAt
			if t := parseRecordTime(e.CreatedAt); !t.IsZero() {
				created = t.UTC().Format("2006-01-02 15:04")
			}
			rows = append(rows, []string{e.SweepID, ellipsize(e.SweepName, 16), e.Status,
				fmt.Sprintf("%d/%d", e.Counts.done(), e.TotalParams), created, fmt.Sprintf("$%.2f", e.EstimatedCostUSD)})
		}
		writeTable(&b, rows, nil, 0)
	}
	if doc.NextToken != "" {
		// The only line allowed past screenWidth: the token must be copied whole.
		b.WriteString("more: spawn list --next-token " + doc.NextToken + "\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return strconv.Itoa(n) + " " + noun + "s"
}
