package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	dynamotypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	"github.com/mattn/go-isatty"
	"github.com/peterbourgon/ff/v3/ffcli"
)

// screenWidth is the width every text line of status and list fits in.
const screenWidth = 80

// maxTableRows keeps a live view on one screen; --output json has every instance.
const maxTableRows = 15

// statusInstance is one instance of the sweep as status shows it (SPEC.md `instances`),
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
	PriceHourly  float64 `json:"price_hourly"`
	PriceSource  string  `json:"price_source"`
	CostUSD      float64 `json:"cost_usd"`

	alive        bool
	launchedAt   time.Time
	terminatedAt time.Time
}

// statusDoc is `spawn status --output json`: the record's fields under their attribute
// names, with counts and cost as of now and every instance the sweep ever launched.
type statusDoc struct {
	*sweep
	Counts           counts           `json:"counts"`
	EstimatedCostUSD float64          `json:"estimated_cost_usd"` // ended instances + running ones so far
	PriceSources     map[string]int   `json:"price_sources"`      // instances priced from each source
	Instances        []statusInstance `json:"instances"`
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
}

// buildStatus merges the record's alive slots with the instance items, prices every
// instance and computes the counts and the cost as of now.
func buildStatus(ctx context.Context, s *sweep, recs []instanceRecord, p *pricer, now time.Time) *statusView {
	v := &statusView{s: s, now: now, sources: map[string]int{}}
	byIndex := map[int]int{}
	for _, rec := range recs {
		si := statusInstance{
			Index: rec.Index, InstanceID: rec.InstanceID, Region: rec.Region, InstanceType: rec.InstanceType,
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
	// An alive slot is newer than any item of its index, and may have no item yet
	// (reserved, or RunInstances answered but the item not yet written).
	for _, a := range s.Alive {
		si := statusInstance{
			Index: a.Index, InstanceID: a.InstanceID, Region: a.Region, InstanceType: a.InstanceType,
			Attempt: a.Attempt, Spot: a.Spot, PriceHourly: a.PriceHourly, launchedAt: a.LaunchedAt,
		}
		if si.PriceSource = a.PriceSource; si.PriceHourly > 0 && si.PriceSource == "" {
			si.PriceSource = "recorded"
		}
		si.State = "running"
		if a.InstanceID == "" {
			si.State = "launching"
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
	sort.Slice(v.instances, func(i, j int) bool { return v.instances[i].Index < v.instances[j].Index })

	regions := map[string]bool{}
	if s.Region != "" {
		regions[s.Region] = true
	}
	var endedCost, runningCost float64
	for i := range v.instances {
		si := &v.instances[i]
		if si.Region == "" {
			si.Region = s.Region
		}
		regions[si.Region] = true
		if si.PriceHourly == 0 && p != nil && si.InstanceType != "" {
			si.PriceHourly, si.PriceSource = p.priceFor(ctx, si.Region, si.InstanceType, si.Spot)
		}
		if si.PriceSource == "" {
			si.PriceSource = priceSourceUnknown
		}
		v.sources[si.PriceSource]++
		if si.alive {
			si.CostUSD = roundUSD(runCost(si.launchedAt, now, si.PriceHourly))
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
	for r := range regions {
		v.regions = append(v.regions, r)
	}
	sort.Strings(v.regions)
	if s.Region != "" {
		// The sweep's own region first.
		v.regions = slices.DeleteFunc(v.regions, func(r string) bool { return r == s.Region })
		v.regions = append([]string{s.Region}, v.regions...)
	}

	c := s.Counts
	c.Running = len(s.Alive)
	c.Pending = max(0, s.TotalParams-c.Succeeded-c.Failed-c.Expired-c.Cancelled-c.Unknown-c.Running)
	v.counts = c
	return v
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
	return statusDoc{sweep: v.s, Counts: v.counts, EstimatedCostUSD: v.costUSD, PriceSources: v.sources, Instances: inst}
}

// done is the number of items with an outcome.
func (c counts) done() int { return c.Succeeded + c.Failed + c.Expired + c.Cancelled + c.Unknown }

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
	var parts []string
	for _, src := range sortedMapKeys(v.sources) {
		parts = append(parts, fmt.Sprintf("%d %s", v.sources[src], src))
	}
	line := fmt.Sprintf("est. cost $%.2f so far", v.costUSD)
	if len(parts) > 0 {
		line += " (prices: " + strings.Join(parts, ", ") + ")"
	}
	return ellipsize(line, screenWidth)
}

// renderStatus writes the full text view; every line fits screenWidth columns.
func renderStatus(w io.Writer, v *statusView, st textStyle) error {
	var b strings.Builder
	line := func(s string) { b.WriteString(s); b.WriteByte('\n') }
	line(v.summaryLine(st))
	line(v.progressLine())
	line(ellipsize(v.counts.line(), screenWidth))
	line(v.costLine())
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
			age := "-"
			if !si.launchedAt.IsZero() {
				age = fmtAge(v.now.Sub(si.launchedAt))
			}
			price := fmt.Sprintf("%.4f", si.PriceHourly)
			if si.Spot {
				price += " spot"
			}
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

// explainedError is one line for the user that still wraps the error it explains.
type explainedError struct {
	msg string
	err error
}

func (e *explainedError) Error() string { return e.msg }
func (e *explainedError) Unwrap() error { return e.err }

// explainStoreError turns the store's errors into what the user can act on. An unknown
// sweep id is a runtime error (exit 1): the id is well formed, it just is not there.
func explainStoreError(err error, d *deployment, table, sweepID string) error {
	var rnf *dynamotypes.ResourceNotFoundException
	switch {
	case errors.As(err, &rnf):
		return &explainedError{fmt.Sprintf("no spawn deployment found in %s (table %s does not exist): run 'spawn deploy', or pass the --region or --table it used", d.region, table), err}
	case errors.Is(err, errSweepNotFound):
		return &explainedError{fmt.Sprintf("sweep %s not found in table %s (%s): check the id with 'spawn list'", sweepID, d.table, d.region), err}
	}
	return err
}

// errOtherUser: the record's user_id is not the caller.
var errOtherUser = errors.New("sweep belongs to another identity")

// sweepSource is what status, logs and list read through: the store, the identity
// that may read it, and prices for instances the engine has not priced.
type sweepSource struct {
	d     *deployment
	store sweepStore
	price *pricer
	now   func() time.Time
}

func (r *rootConfig) openSweepSource(ctx context.Context) (*sweepSource, error) {
	d, err := r.openDeployment(ctx)
	if err != nil {
		return nil, err
	}
	return &sweepSource{
		d:     d,
		store: newDynamoStore(dynamodb.NewFromConfig(d.cfg), d.table, d.instancesTable),
		price: newPricer(d.cfg),
		now:   time.Now,
	}, nil
}

// load reads the record of a sweep the caller owns.
func (src *sweepSource) load(ctx context.Context, id string) (*sweep, error) {
	s, err := src.store.loadSweep(ctx, id)
	if err != nil {
		return nil, explainStoreError(err, src.d, src.d.table, id)
	}
	if s.UserID != "" && s.UserID != src.d.userID {
		return nil, &explainedError{fmt.Sprintf("sweep %s belongs to %s; you are %s: use that identity's credentials (--profile)", id, s.UserID, src.d.userID), errOtherUser}
	}
	return s, nil
}

// view reads the record and every instance item and computes the status as of now.
func (src *sweepSource) view(ctx context.Context, id string) (*statusView, error) {
	s, err := src.load(ctx, id)
	if err != nil {
		return nil, err
	}
	recs, err := src.store.listInstances(ctx, id)
	if err != nil {
		return nil, explainStoreError(err, src.d, src.d.instancesTable, id)
	}
	return buildStatus(ctx, s, recs, src.price, src.now()), nil
}

// sweepIDAndFlags takes the id from --sweep-id or the first argument, and parses the flags
// that follow a positional id (the flag package stops at the first non-flag).
func sweepIDAndFlags(fs *flag.FlagSet, flagID string, args []string) (string, error) {
	if len(args) > 0 {
		if flagID != "" {
			return "", usageErrorf("give the sweep id once: --sweep-id %s or %s, not both", flagID, args[0])
		}
		flagID = args[0]
		if err := fs.Parse(args[1:]); err != nil {
			return "", usageErrorf("%v", err)
		}
		if fs.NArg() > 0 {
			return "", usageErrorf("unexpected argument %q: give one sweep id", fs.Arg(0))
		}
	}
	if flagID == "" {
		return "", usageErrorf("which sweep? pass --sweep-id ID (or the id as argument; 'spawn list' shows them)")
	}
	return flagID, nil
}

func isTerminalWriter(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && (isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd()))
}

func newStatusCmd(r *rootConfig) *ffcli.Command {
	fs := r.newFlagSet("status")
	var (
		sweepID     string
		watch, wait bool
		interval    time.Duration
	)
	fs.StringVar(&sweepID, "sweep-id", "", "the sweep to show (or give it as the argument)")
	fs.BoolVar(&watch, "watch", false, "refresh the view every --interval until the sweep ends")
	fs.BoolVar(&wait, "wait", false, "block until the sweep ends; exit 3 if it ended FAILED, CANCELLED or with failed items")
	fs.DurationVar(&interval, "interval", 5*time.Second, "how often --watch and --wait read the sweep")
	return r.command("status", "spawn status [--sweep-id ID | ID] [--watch] [--wait] [--interval D]",
		"show a sweep: progress, item counts, instances and estimated cost", fs,
		func(ctx context.Context, args []string) error {
			id, err := sweepIDAndFlags(fs, sweepID, args)
			if err != nil {
				return err
			}
			if interval <= 0 {
				return usageErrorf("--interval %v must be positive, e.g. 5s", interval)
			}
			if watch && r.jsonOutput() {
				return usageErrorf("--watch draws a live text view: use --wait with --output json for the final document")
			}
			src, err := r.openSweepSource(ctx)
			if err != nil {
				return err
			}
			return r.runStatus(ctx, src, id, watch, wait, interval)
		})
}

func (r *rootConfig) runStatus(ctx context.Context, src *sweepSource, id string, watch, wait bool, interval time.Duration) error {
	tty := isTerminalWriter(r.stdout)
	style := textStyle{color: tty && os.Getenv("NO_COLOR") == ""}
	var v *statusView
	var err error
	switch {
	case watch:
		v, err = r.watchStatus(ctx, src, id, interval, tty, style)
	case wait:
		v, err = pollUntilEnded(ctx, src, id, interval)
	default:
		v, err = src.view(ctx, id)
	}
	if err != nil {
		return err
	}
	if !(watch && tty) {
		if r.jsonOutput() {
			if err := r.printJSON(v.doc()); err != nil {
				return err
			}
		} else if err := renderStatus(r.stdout, v, style); err != nil {
			return err
		}
	}
	if wait {
		return waitOutcome(v)
	}
	return nil
}

// waitOutcome is --wait's exit code: 0 only for COMPLETED with every item succeeded.
func waitOutcome(v *statusView) error { return sweepEndError(v.s, v.counts) }

// sweepEndError is what `status --wait` and `launch --wait` exit with once the sweep is
// terminal: nil only for COMPLETED with every item succeeded, else exit code 3.
func sweepEndError(s *sweep, c counts) error {
	switch {
	case s.Status == statusFailed || s.Status == statusCancelled:
		return withExitCode(exitSweep, fmt.Errorf("sweep %s ended %s", s.SweepID, s.Status))
	case c.Failed+c.Expired+c.Unknown > 0:
		return withExitCode(exitSweep, fmt.Errorf("sweep %s ended %s with %d failed, %d expired and %d unknown items: 'spawn status %s' lists them",
			s.SweepID, s.Status, c.Failed, c.Expired, c.Unknown, s.SweepID))
	}
	return nil
}

// pollUntilEnded checks that the caller may read the sweep, waits (the engine's
// waitSweep) until its status is terminal, then reads every instance once.
func pollUntilEnded(ctx context.Context, src *sweepSource, id string, interval time.Duration) (*statusView, error) {
	if _, err := src.load(ctx, id); err != nil {
		return nil, err
	}
	if _, err := waitSweep(ctx, src.store, id, interval, realClock{}); err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("stopped waiting for sweep %s (%w): it goes on; 'spawn status %s' shows it", id, err, id)
		}
		return nil, explainStoreError(err, src.d, src.d.table, id)
	}
	return src.view(ctx, id)
}

// Escape sequences of a redraw: cursor home, clear the screen.
const redrawScreen = "\x1b[H\x1b[2J"

// watchItems keeps the instance items a live view needs between refreshes. Reading
// every item of a 100,000-item sweep every few seconds would cost real read capacity;
// the text view only shows the alive instances (the record has them) and the failed
// ones, which change only when the record's failed/expired/unknown counts do.
type watchItems struct {
	bad  int // failed + expired + unknown when recs were read; -1: never read
	recs []instanceRecord
}

func (w *watchItems) refresh(ctx context.Context, src *sweepSource, s *sweep) error {
	bad := s.Counts.Failed + s.Counts.Expired + s.Counts.Unknown
	if bad == w.bad {
		return nil
	}
	recs, err := src.store.listInstances(ctx, s.SweepID)
	if err != nil {
		return explainStoreError(err, src.d, src.d.instancesTable, s.SweepID)
	}
	// Keep the failed ones and the ones alive when read (their EC2 state).
	w.recs = slices.DeleteFunc(recs, func(r instanceRecord) bool { return r.Outcome == outcomeSucceeded || r.Outcome == outcomeCancelled })
	w.bad = bad
	return nil
}

// watchStatus redraws the view in place on a terminal, or appends one line per change
// elsewhere (a log file, a pipe), until the sweep ends or the user interrupts.
func (r *rootConfig) watchStatus(ctx context.Context, src *sweepSource, id string, interval time.Duration, tty bool, style textStyle) (*statusView, error) {
	var last string
	items := &watchItems{bad: -1}
	for {
		s, err := src.load(ctx, id)
		if err != nil {
			return nil, err
		}
		if terminalStatus(s.Status) {
			// The last screen reads the items once more.
			items.bad = -1
		}
		if err := items.refresh(ctx, src, s); err != nil {
			return nil, err
		}
		v := buildStatus(ctx, s, items.recs, src.price, src.now())
		if tty {
			var frame strings.Builder
			frame.WriteString(redrawScreen)
			_ = renderStatus(&frame, v, style)
			if terminalStatus(v.s.Status) {
				frame.WriteString("\nsweep ended " + style.status(v.s.Status) + "\n")
			} else {
				frame.WriteString(fmt.Sprintf("\nrefreshing every %v; Ctrl-C stops watching (the sweep goes on)\n", interval))
			}
			if _, err := io.WriteString(r.stdout, frame.String()); err != nil {
				return nil, err
			}
		} else if line := v.progressSummary(); line != last {
			fmt.Fprintf(r.stdout, "%s  %s\n", src.now().UTC().Format("15:04:05"), line)
			last = line
		}
		if terminalStatus(v.s.Status) {
			return v, nil
		}
		if err := (realClock{}).Sleep(ctx, interval); err != nil {
			return nil, fmt.Errorf("stopped watching sweep %s (%w): it goes on; 'spawn status %s' shows it", id, err, id)
		}
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

func newListCmd(r *rootConfig) *ffcli.Command {
	fs := r.newFlagSet("list")
	var (
		status, token string
		limit         int
	)
	fs.StringVar(&status, "status", "", "only sweeps with this status: "+strings.Join(sweepStatuses, ", "))
	fs.IntVar(&limit, "limit", 50, "sweeps per page (1-1000)")
	fs.StringVar(&token, "next-token", "", "continue from where the previous page ended")
	return r.command("list", "spawn list [--status S] [--limit N] [--next-token T]",
		"list your sweeps, newest first", fs,
		func(ctx context.Context, args []string) error {
			if len(args) > 0 {
				return usageErrorf("unexpected argument %q: list takes only flags", args[0])
			}
			status = strings.ToUpper(status)
			if status != "" && !slices.Contains(sweepStatuses, status) {
				return usageErrorf("--status %q is not a sweep status: use one of %s", status, strings.Join(sweepStatuses, ", "))
			}
			if limit < 1 || limit > 1000 {
				return usageErrorf("--limit %d is out of range: use 1 to 1000", limit)
			}
			src, err := r.openSweepSource(ctx)
			if err != nil {
				return err
			}
			doc, err := listPage(ctx, src, status, limit, token)
			if err != nil {
				return err
			}
			if r.jsonOutput() {
				return r.printJSON(doc)
			}
			return renderList(r.stdout, doc)
		})
}

func listPage(ctx context.Context, src *sweepSource, status string, limit int, token string) (*listDoc, error) {
	if _, err := decodePageToken(token); err != nil {
		return nil, withExitCode(exitUsage, err)
	}
	sweeps, next, err := src.store.listSweeps(ctx, src.d.userID, status, limit, token)
	if err != nil {
		return nil, explainStoreError(err, src.d, src.d.table, "")
	}
	doc := &listDoc{Sweeps: make([]listEntry, 0, len(sweeps)), NextToken: next}
	now := src.now()
	for i := range sweeps {
		doc.Sweeps = append(doc.Sweeps, newListEntry(&sweeps[i], now))
	}
	return doc, nil
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

type logObjectAPI interface {
	GetObject(ctx context.Context, in *s3.GetObjectInput, opts ...func(*s3.Options)) (*s3.GetObjectOutput, error)
}

func newLogsCmd(r *rootConfig) *ffcli.Command {
	fs := r.newFlagSet("logs")
	var (
		sweepID string
		index   int
	)
	fs.StringVar(&sweepID, "sweep-id", "", "the sweep (or give it as the argument)")
	fs.IntVar(&index, "index", -1, "the item whose log to print (numbered from 0 in file order)")
	return r.command("logs", "spawn logs --sweep-id ID --index I",
		"print the log that the instance of item I uploaded", fs,
		func(ctx context.Context, args []string) error {
			id, err := sweepIDAndFlags(fs, sweepID, args)
			if err != nil {
				return err
			}
			if index < 0 {
				return usageErrorf("which item? pass --index I (0 is the first item of the parameter file)")
			}
			src, err := r.openSweepSource(ctx)
			if err != nil {
				return err
			}
			s, err := src.load(ctx, id)
			if err != nil {
				return err
			}
			if index >= s.TotalParams {
				return usageErrorf("--index %d is out of range: sweep %s has items 0 to %d", index, id, s.TotalParams-1)
			}
			bucket := s.S3Bucket
			if bucket == "" {
				bucket = src.d.bucket
			}
			return r.printLog(ctx, newS3Client(src.d.cfg), bucket, id, index)
		})
}

func (r *rootConfig) printLog(ctx context.Context, client logObjectAPI, bucket, id string, index int) error {
	key := logKey(id, index)
	out, err := client.GetObject(ctx, &s3.GetObjectInput{Bucket: &bucket, Key: &key})
	if err != nil {
		// GetObject models only NoSuchKey; a missing bucket comes back as a generic API error.
		var apiErr smithy.APIError
		code := ""
		if errors.As(err, &apiErr) {
			code = apiErr.ErrorCode()
		}
		var nsk *s3types.NoSuchKey
		switch {
		case errors.As(err, &nsk) || code == "NoSuchKey" || code == "NotFound":
			return &explainedError{fmt.Sprintf("no log for item %d of sweep %s yet: the instance uploads it when its command ends", index, id), err}
		case code == "NoSuchBucket":
			return &explainedError{fmt.Sprintf("bucket %s does not exist: pass the --bucket that 'spawn deploy' used", bucket), err}
		}
		return fmt.Errorf("reading s3://%s/%s: %w", bucket, key, err)
	}
	defer out.Body.Close()
	if r.jsonOutput() {
		body, err := io.ReadAll(out.Body)
		if err != nil {
			return fmt.Errorf("reading s3://%s/%s: %w", bucket, key, err)
		}
		return r.printJSON(map[string]any{"sweep_id": id, "index": index, "bucket": bucket, "key": key, "log": string(body)})
	}
	if _, err := io.Copy(r.stdout, out.Body); err != nil {
		return fmt.Errorf("reading s3://%s/%s: %w", bucket, key, err)
	}
	return nil
}
