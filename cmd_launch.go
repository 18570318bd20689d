package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	iofs "io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/peterbourgon/ff/v3/ffcli"
)

func newSweepID(now time.Time) string {
	return "sw-" + now.UTC().Format("20060102-150405") + "-" + randomHex(3)
}

// launchDoc is `launch --output json`.
type launchDoc struct {
	SweepID       string `json:"sweep_id"`
	SweepName     string `json:"sweep_name"`
	Status        string `json:"status"`
	TotalParams   int    `json:"total_params"`
	MaxConcurrent int    `json:"max_concurrent"`
	Detached      bool   `json:"detached"`
	Function      string `json:"function,omitempty"`
	// AWSAccountID is the account the instances run in (--compute-profile: that
	// profile's); ComputeProfile the profile that named it.
	AWSAccountID   string `json:"aws_account_id"`
	ComputeProfile string `json:"compute_profile,omitempty"`
	cross          bool   // the account is not the orchestrator's: reached through its role
	ParamsKey      string `json:"s3_params_key"`
	Counts         counts `json:"counts"`
	// The most the sweep can cost if every item runs to its TTL (table prices), said in
	// words, and how many items have no TTL (--no-ttl: no bound).
	CostBound      string  `json:"cost_bound,omitempty"`
	CostBoundUSD   float64 `json:"cost_bound_usd"`
	UnboundedItems int     `json:"unbounded_items"`
}

// startSweep uploads the params, creates the record and starts the orchestrator: the
// function (detached) or the same engine in this process.
func startSweep(ctx context.Context, r *rootConfig, req *launchRequest) error {
	d, deps, account, err := r.openLaunch(ctx, req)
	if err != nil {
		return err
	}
	bound := launchBound(ctx, d.region, req.Items, req.TTL)
	if err := r.confirm(bound, req.Yes); err != nil {
		return err // before anything is created
	}
	now := r.clock.Now()
	id := newSweepID(now)
	name := req.Name
	if name == "" {
		name = id
	}
	key, sum, err := deps.params.uploadParams(ctx, id, req.Raw)
	if err != nil {
		return explainStoreError(err, d, d.table, id)
	}
	poll := req.PollInterval
	if poll <= 0 {
		poll = defaultPollInterval
	}
	sw := &sweep{
		SweepID:        id,
		SweepName:      name,
		UserID:         d.userID,
		CreatedAt:      formatRecordTime(now),
		S3Bucket:       d.bucket,
		S3ParamsKey:    key,
		ParamsChecksum: sum,
		MaxConcurrent:  max(req.MaxConcurrent, 1),
		LaunchDelay:    req.LaunchDelay.String(),
		PollInterval:   poll.String(),
		TotalParams:    len(req.Items),
		Region:         d.region,
		AWSAccountID:   account,
		Status:         statusInitializing,
		Detached:       req.Detach,
	}
	if req.TTL > 0 {
		sw.TTL = req.TTL.String()
	}
	if req.IdleTimeout > 0 {
		sw.IdleTimeout = req.IdleTimeout.String()
	}
	fixCounts(sw)
	if err := deps.store.createSweep(ctx, sw); err != nil {
		return explainStoreError(err, d, d.table, id)
	}
	doc := launchDoc{SweepID: id, SweepName: name, Status: sw.Status, TotalParams: sw.TotalParams,
		MaxConcurrent: sw.MaxConcurrent, Detached: req.Detach, ParamsKey: key, Counts: sw.Counts,
		CostBound: bound.String(), CostBoundUSD: bound.USD, UnboundedItems: bound.Endless,
		AWSAccountID: account, ComputeProfile: req.ComputeProfile, cross: d.crossAccount(account)}
	if req.Detach {
		doc.Function = d.function
		if err := startFunction(ctx, deps, id); err != nil {
			return err
		}
		if !req.Wait {
			return r.printLaunched(doc)
		}
		if !r.jsonOutput() {
			if err := r.printLaunched(doc); err != nil {
				return err
			}
		}
		final, err := waitSweep(ctx, deps.store, id, min(poll, 5*time.Second), r.clock)
		if err != nil {
			return err
		}
		return r.reportEnd(final, &doc)
	}
	if !r.jsonOutput() {
		fmt.Fprintf(r.stdout, "sweep %s running here: %d items, at most %d at a time (Ctrl-C pauses it)\n", id, sw.TotalParams, sw.MaxConcurrent)
	}
	return r.runHere(ctx, deps, id, false, req.Wait, &doc)
}

// launchRequest is what `spawn launch` hands on once flags and the file are valid.
type launchRequest struct {
	ParamFile string // path as given
	// Raw is the sweep as canonical JSON, every item expanded: uploaded, and re-parsed by
	// the orchestrator to exactly Items, whatever the file's format.
	Raw           []byte
	Items         []item
	Params        *paramSet
	Name          string
	MaxConcurrent int
	LaunchDelay   time.Duration
	PollInterval  time.Duration
	TTL           time.Duration // sweep-wide default for items without their own
	IdleTimeout   time.Duration
	Detach        bool
	Wait          bool
	Yes           bool // launch above the confirmation threshold without asking
	// ComputeProfile is --compute-profile: the instances run in its account.
	ComputeProfile string
}

// durationFlag is a flag taking Go durations or days (2d), like the parameter file.
type durationFlag struct {
	d   time.Duration
	set bool
}

func (f *durationFlag) String() string {
	if f == nil || (!f.set && f.d == 0) {
		return ""
	}
	return shortDuration(f.d)
}

func (f *durationFlag) Set(s string) error {
	d, err := parseDuration(s)
	if err != nil {
		return errors.New("not a duration: use 90m, 2h30m or 2d")
	}
	f.d, f.set = d, true
	return nil
}

type launchFlags struct {
	paramFile     string
	defaults      string
	maxConcurrent int
	launchDelay   durationFlag
	pollInterval  durationFlag
	name          string
	detach        bool
	noDetach      bool
	ttl           durationFlag
	idleTimeout   durationFlag
	wait          bool
	dryRun        bool
	noTTL         bool
	yes           bool
	// computeProfile: the profile whose account runs the instances.
	computeProfile string
}

const (
	defaultMaxConcurrent = 10
	maxSweepNameLen      = 128
)

func newLaunchCmd(r *rootConfig) *ffcli.Command {
	fs := r.newFlagSet("launch")
	lf := &launchFlags{maxConcurrent: defaultMaxConcurrent, detach: true, pollInterval: durationFlag{d: defaultPollInterval}}
	fs.StringVar(&lf.paramFile, "param-file", "", "the sweep's parameter file: .json, .yaml, .yml or .csv (- reads JSON or YAML from stdin)")
	fs.StringVar(&lf.defaults, "defaults", "", "a CSV parameter file's defaults and objective (a JSON or YAML file)")
	fs.IntVar(&lf.maxConcurrent, "max-concurrent", lf.maxConcurrent, "most instances alive at once")
	fs.Var(&lf.launchDelay, "launch-delay", "pause between two launches (default 0s)")
	fs.Var(&lf.pollInterval, "poll-interval", "how often running instances are checked")
	fs.StringVar(&lf.name, "name", "", "sweep name (default: the file's name without extension)")
	fs.BoolVar(&lf.detach, "detach", true, "run the sweep in the deployed Lambda orchestrator and return")
	fs.BoolVar(&lf.noDetach, "no-detach", false, "run the sweep in this process (needs --ttl or --idle-timeout)")
	fs.Var(&lf.ttl, "ttl", "default time to live of every instance without its own ttl (e.g. 2h, 1d)")
	fs.Var(&lf.idleTimeout, "idle-timeout", "terminate an instance whose CPU stays under 5% this long")
	fs.BoolVar(&lf.noTTL, "no-ttl", false, "let items with no ttl or idle_timeout run until their command ends (detached only)")
	fs.BoolVar(&lf.yes, "yes", false, "launch even if the cost bound is over SPAWN_CONFIRM_ABOVE (default $100)")
	fs.BoolVar(&lf.wait, "wait", false, "block until the sweep ends; exit 3 if it failed or had failed items")
	fs.BoolVar(&lf.dryRun, "dry-run", false, "validate the file and print the plan; create nothing")
	fs.StringVar(&lf.computeProfile, "compute-profile", "", "run the instances in this profile's account, one 'spawn deploy --compute-profile' set up; detached only")
	return r.command("launch",
		"spawn launch --param-file F [--defaults FILE] [--max-concurrent N] [--launch-delay D] [--poll-interval D] [--name S] [--detach | --no-detach] [--ttl D | --no-ttl] [--idle-timeout D] [--compute-profile P] [--yes] [--wait] [--dry-run]",
		"validate a parameter file and start a sweep",
		[]string{"spawn launch --param-file sweep.json --ttl 2h", "spawn launch --param-file sweep.yaml --dry-run",
			"spawn launch --param-file runs.csv --defaults defaults.yaml --dry-run"}, fs,
		func(ctx context.Context, args []string) error {
			req, err := lf.request(r, fs, args)
			if err != nil {
				return err
			}
			if lf.dryRun {
				return r.printPlan(ctx, req)
			}
			return startSweep(ctx, r, req)
		})
}

// request checks the flags, then reads and validates the file; nothing touches AWS.
func (lf *launchFlags) request(r *rootConfig, fs *flag.FlagSet, args []string) (*launchRequest, error) {
	if err := noArgs(fs, args); err != nil {
		return nil, err
	}
	if lf.paramFile == "" {
		return nil, usageErrorf("--param-file is required: give the sweep's parameter file (JSON, YAML or CSV)")
	}
	detach, err := lf.check(fs)
	if err != nil {
		return nil, err
	}
	name := lf.name
	if name == "" {
		name = defaultSweepName(lf.paramFile)
	}
	if err := checkSweepName(name); err != nil {
		return nil, err
	}
	ps, err := lf.readParams(r.stdin)
	if err != nil {
		return nil, err
	}
	if err := lf.checkEnds(ps.Items, detach); err != nil {
		return nil, err
	}
	return &launchRequest{
		ParamFile:      lf.paramFile,
		Raw:            ps.Canonical,
		Items:          ps.Items,
		Params:         ps,
		Name:           name,
		MaxConcurrent:  lf.maxConcurrent,
		LaunchDelay:    lf.launchDelay.d,
		PollInterval:   lf.pollInterval.d,
		TTL:            lf.ttl.d,
		IdleTimeout:    lf.idleTimeout.d,
		Detach:         detach,
		Wait:           lf.wait,
		Yes:            lf.yes,
		ComputeProfile: lf.computeProfile,
	}, nil
}

// check refuses values out of range and flags that contradict each other, and says
// whether the sweep runs detached.
func (lf *launchFlags) check(fs *flag.FlagSet) (detach bool, err error) {
	detachSet := false
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "detach" {
			detachSet = true
		}
	})
	if detachSet && lf.noDetach && lf.detach {
		return false, usageErrorf("--detach and --no-detach contradict each other: give one")
	}
	detach = lf.detach && !lf.noDetach
	switch {
	case lf.maxConcurrent < 1:
		return false, usageErrorf("--max-concurrent %d: must be at least 1", lf.maxConcurrent)
	case lf.maxConcurrent > maxConcurrentLimit:
		return false, usageErrorf("--max-concurrent %d is over the limit of %d instances alive at once (the sweep record holds each in DynamoDB's 400 KB item): give at most %d, or split the sweep", lf.maxConcurrent, maxConcurrentLimit, maxConcurrentLimit)
	case lf.launchDelay.d < 0:
		return false, usageErrorf("--launch-delay %s: must not be negative", lf.launchDelay.String())
	case lf.pollInterval.d < time.Second:
		return false, usageErrorf("--poll-interval %s: must be at least 1s", lf.pollInterval.d)
	case lf.pollInterval.d > maxPollInterval:
		return false, usageErrorf("--poll-interval %s is over %s: give at most %s (an ended instance frees its slot only at the next poll)", lf.pollInterval.d, maxPollInterval, maxPollInterval)
	case lf.ttl.set && lf.ttl.d <= 0:
		return false, usageErrorf("--ttl %s is not more than zero: give how long an instance may run, e.g. 2h", lf.ttl.d)
	case lf.idleTimeout.set && idleShapeErr(lf.idleTimeout.d) != nil:
		return false, usageErrorf("--idle-timeout %v", idleShapeErr(lf.idleTimeout.d))
	case lf.noTTL && lf.ttl.set:
		return false, usageErrorf("--ttl and --no-ttl contradict each other: give one")
	case lf.computeProfile != "" && !detach:
		return false, usageErrorf("--compute-profile %s runs the instances through %s, which trusts only the orchestrator function, not this process: drop --no-detach", lf.computeProfile, crossAccountRoleName)
	case lf.noTTL && !detach:
		return false, usageErrorf("--no-ttl is only for detached launches: with --no-detach a dead CLI would leave instances with no end: give --ttl or --idle-timeout")
	}
	return detach, nil
}

// readParams reads the file (or stdin for -), and a CSV file's --defaults, and validates
// them, --ttl's tag included.
func (lf *launchFlags) readParams(stdin io.Reader) (*paramSet, error) {
	var data []byte
	var err error
	if lf.paramFile == "-" {
		data, err = io.ReadAll(stdin)
	} else {
		data, err = os.ReadFile(lf.paramFile)
	}
	if err != nil {
		return nil, fileError("--param-file", lf.paramFile, err)
	}
	o := paramFileOptions{Stdin: lf.paramFile == "-", SweepTTL: lf.ttl.d, Canonical: true}
	if lf.defaults != "" {
		if o.Defaults, err = os.ReadFile(lf.defaults); err != nil {
			return nil, fileError("--defaults", lf.defaults, err)
		}
		o.DefaultsFile = lf.defaults
	}
	file := lf.paramFile
	if file == "-" {
		file = "stdin"
	}
	return readParamFile(file, data, o)
}

func fileError(flag, path string, err error) error {
	if errors.Is(err, iofs.ErrNotExist) {
		return usageErrorf("%s %s does not exist: check the path", flag, path)
	}
	if cause := errors.Unwrap(err); cause != nil {
		err = cause
	}
	return usageErrorf("%s %s: %v", flag, path, err)
}

// defaultSweepName is the file's name without directory and extension.
func defaultSweepName(path string) string {
	if path == "-" {
		return "stdin"
	}
	base := filepath.Base(path)
	base = strings.TrimSuffix(base, filepath.Ext(base))
	if base == "" || base == "." || base == string(filepath.Separator) {
		return "sweep"
	}
	if utf8.RuneCountInString(base) > maxSweepNameLen {
		base = string([]rune(base)[:maxSweepNameLen])
	}
	return base
}

func checkSweepName(name string) error {
	if strings.TrimSpace(name) == "" {
		return usageErrorf("--name is empty: give the sweep a short name")
	}
	if utf8.RuneCountInString(name) > maxSweepNameLen {
		return usageErrorf("--name is over %d characters: shorten it", maxSweepNameLen)
	}
	if !utf8.ValidString(name) || strings.IndexFunc(name, unicode.IsControl) >= 0 {
		return usageErrorf("--name %q holds control characters or invalid UTF-8: use plain text", name)
	}
	return nil
}

// launchPlan is what --dry-run prints: what the sweep would launch, and nothing created.
type launchPlan struct {
	DryRun        bool        `json:"dry_run"`
	SweepName     string      `json:"sweep_name"`
	ParamFile     string      `json:"param_file"`
	TotalParams   int         `json:"total_params"`
	SpotItems     int         `json:"spot_items"`
	Sources       planSources `json:"sources"`
	Objective     *objective  `json:"objective,omitempty"`
	MaxConcurrent int         `json:"max_concurrent"`
	LaunchDelay   string      `json:"launch_delay"`
	PollInterval  string      `json:"poll_interval"`
	TTL           string      `json:"ttl,omitempty"`
	IdleTimeout   string      `json:"idle_timeout,omitempty"`
	Detach        bool        `json:"detach"`
	Region        string      `json:"region"`
	// ComputeProfile is --compute-profile: its account runs the instances (a dry run makes
	// no AWS call, so the launch resolves and checks it).
	ComputeProfile string      `json:"compute_profile,omitempty"`
	Groups         []planGroup `json:"groups"`
	// InstanceHoursAtTTL is Σ TTL over the items that have one: the most the sweep can run.
	InstanceHoursAtTTL float64 `json:"instance_hours_at_ttl"`
	ItemsWithoutTTL    int     `json:"items_without_ttl"`
	// CostBoundUSD is the most the items with a TTL can cost, priced from the table
	// embedded in the binary (a dry run makes no AWS call); PriceSources counts items per
	// price source.
	CostBoundUSD float64        `json:"cost_bound_usd"`
	PriceSources map[string]int `json:"price_sources"`
	costBound    costBound
	// Items are every item as the instances will see it, in launch order.
	Items []planItem `json:"items"`
}

// planSources counts the items each section of the file made.
type planSources struct {
	Params int `json:"params"`
	Grid   int `json:"grid"`
	Random int `json:"random"`
}

// planItem is one item of the plan.
type planItem struct {
	Index        int        `json:"index"`
	Name         string     `json:"name,omitempty"`
	Params       planParams `json:"params"`
	InstanceType string     `json:"instance_type"`
	Region       string     `json:"region"`
	Spot         bool       `json:"spot"`
	TTL          string     `json:"ttl,omitempty"`
	IdleTimeout  string     `json:"idle_timeout,omitempty"`
	// Fallback are the candidates tried after the first when EC2 refuses it for capacity
	// or quota, in order; SpotPrefer: spot "prefer".
	Fallback   []planCandidate `json:"fallback,omitempty"`
	SpotPrefer bool            `json:"-"`
}

// planCandidate is one way a fallback may launch an item.
type planCandidate struct {
	InstanceType string `json:"instance_type"`
	Region       string `json:"region"`
	Spot         bool   `json:"spot"`
}

// planParams are an item's params as one JSON object, in key order: what PARAM_<key> holds.
type planParams []param

func (ps planParams) MarshalJSON() ([]byte, error) {
	b := []byte{'{'}
	for i, p := range ps {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(appendJSONString(b, p.Key), ':')
		b = appendJSONString(b, p.Value)
	}
	return append(b, '}'), nil
}

// text is the params as key=value words, a value quoted when it holds a space or a quote.
func (ps planParams) text() string {
	var b strings.Builder
	for i, p := range ps {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(p.Key + "=")
		if p.Value == "" || strings.ContainsAny(p.Value, " \t\n\"'") {
			b.WriteString(strconv.Quote(p.Value))
		} else {
			b.WriteString(p.Value)
		}
	}
	return b.String()
}

type planGroup struct {
	Region       string `json:"region"`
	InstanceType string `json:"instance_type"`
	Items        int    `json:"items"`
	Spot         int    `json:"spot"`
}

func newLaunchPlan(req *launchRequest, region string) *launchPlan {
	pl := &launchPlan{
		DryRun:         true,
		SweepName:      req.Name,
		ParamFile:      req.ParamFile,
		TotalParams:    len(req.Items),
		MaxConcurrent:  req.MaxConcurrent,
		LaunchDelay:    shortDuration(req.LaunchDelay),
		PollInterval:   shortDuration(req.PollInterval),
		Detach:         req.Detach,
		Region:         region,
		ComputeProfile: req.ComputeProfile,
		Groups:         []planGroup{},
		Items:          make([]planItem, 0, len(req.Items)),
	}
	if ps := req.Params; ps != nil {
		pl.Sources = planSources{Params: ps.FromParams, Grid: ps.FromGrid, Random: ps.FromRandom}
		pl.Objective = ps.Objective
	}
	if req.TTL > 0 {
		pl.TTL = shortDuration(req.TTL)
	}
	if req.IdleTimeout > 0 {
		pl.IdleTimeout = shortDuration(req.IdleTimeout)
	}
	type key struct{ region, typ string }
	at := map[key]int{}
	var hours time.Duration
	for i := range req.Items {
		it := &req.Items[i]
		rg := it.Region
		if rg == "" {
			rg = region
		}
		k := key{rg, it.InstanceType}
		g, ok := at[k]
		if !ok {
			g = len(pl.Groups)
			at[k] = g
			pl.Groups = append(pl.Groups, planGroup{Region: rg, InstanceType: it.InstanceType})
		}
		pl.Groups[g].Items++
		if it.Spot {
			pl.Groups[g].Spot++
			pl.SpotItems++
		}
		ttl := it.TTL
		if ttl == 0 {
			ttl = req.TTL
		}
		if ttl == 0 {
			pl.ItemsWithoutTTL++
		}
		hours += ttl
		pl.Items = append(pl.Items, newPlanItem(it, rg, ttl, cmp.Or(it.IdleTimeout, req.IdleTimeout)))
	}
	slices.SortFunc(pl.Groups, func(a, b planGroup) int {
		if c := strings.Compare(a.Region, b.Region); c != 0 {
			return c
		}
		return strings.Compare(a.InstanceType, b.InstanceType)
	})
	pl.InstanceHoursAtTTL = math.Round(hours.Hours()*100) / 100
	return pl
}

func newPlanItem(it *item, region string, ttl, idle time.Duration) planItem {
	pi := planItem{Index: it.Index, Name: it.Name, Params: it.Params, InstanceType: it.InstanceType, Region: region, Spot: it.Spot}
	if ttl > 0 {
		pi.TTL = shortDuration(ttl)
	}
	if idle > 0 {
		pi.IdleTimeout = shortDuration(idle)
	}
	for _, c := range candidatesOf(*it)[1:] {
		pi.Fallback = append(pi.Fallback, planCandidate{InstanceType: c.InstanceType, Region: cmp.Or(c.Region, region), Spot: c.Spot})
	}
	pi.SpotPrefer = it.Fallback != nil && it.Fallback.SpotPrefer
	return pi
}

// printPlan prints the dry run's plan. Only the local AWS configuration is read (for the
// default region): no credentials, no call to AWS.
func (r *rootConfig) printPlan(ctx context.Context, req *launchRequest) error {
	cfg, err := r.awsConfig(ctx)
	if err != nil {
		return err
	}
	pl := newLaunchPlan(req, cfg.Region)
	bound := launchBound(ctx, cfg.Region, req.Items, req.TTL)
	pl.CostBoundUSD, pl.PriceSources, pl.costBound = bound.USD, bound.Sources, bound
	if r.jsonOutput() {
		return r.printJSON(pl)
	}
	return writePlan(r.stdout, pl)
}

func writePlan(w io.Writer, pl *launchPlan) error {
	var b strings.Builder
	fmt.Fprintf(&b, "dry run: nothing was created\n")
	fmt.Fprintf(&b, "sweep:           %s (from %s)\n", pl.SweepName, pl.ParamFile)
	fmt.Fprintf(&b, "items:           %d (%d spot)%s\n", pl.TotalParams, pl.SpotItems, pl.Sources.text())
	if o := pl.Objective; o != nil {
		best := map[string]string{"min": "lower", "max": "higher"}[o.Goal]
		fmt.Fprintf(&b, "objective:       %s, %s is better\n", o.Metric, best)
	}
	fmt.Fprintf(&b, "max concurrent:  %d\n", pl.MaxConcurrent)
	fmt.Fprintf(&b, "launch delay:    %s\n", pl.LaunchDelay)
	fmt.Fprintf(&b, "poll interval:   %s\n", pl.PollInterval)
	fmt.Fprintf(&b, "ttl:             %s\n", orNone(pl.TTL))
	fmt.Fprintf(&b, "idle timeout:    %s\n", orNone(pl.IdleTimeout))
	mode := "detached (the Lambda orchestrator runs it)"
	if !pl.Detach {
		mode = "in this process (--no-detach)"
	}
	fmt.Fprintf(&b, "runs:            %s\n", mode)
	if pl.ComputeProfile != "" {
		fmt.Fprintf(&b, "account:         profile %s's (checked at launch; reached through %s)\n", pl.ComputeProfile, crossAccountRoleName)
	}
	hours := strconv.FormatFloat(pl.InstanceHoursAtTTL, 'f', -1, 64)
	switch withTTL := pl.TotalParams - pl.ItemsWithoutTTL; {
	case pl.ItemsWithoutTTL == 0:
		fmt.Fprintf(&b, "instance-hours:  %s at most (every item running until its TTL)\n", hours)
	case withTTL == 0:
		fmt.Fprintf(&b, "instance-hours:  not bounded: no item has a TTL, each runs until its command ends\n")
	default:
		fmt.Fprintf(&b, "instance-hours:  %s at most (%s with a TTL; %s without one, not counted)\n",
			hours, plural(withTTL, "item"), plural(pl.ItemsWithoutTTL, "item"))
	}
	fmt.Fprintf(&b, "cost bound:      %s (prices: %s)\n", pl.costBound, priceSourceCounts(pl.PriceSources))
	b.WriteString("\n")
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "REGION\tINSTANCE TYPE\tITEMS\tSPOT")
	for _, g := range pl.Groups {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\n", g.Region, g.InstanceType, g.Items, g.Spot)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if err := writePlanItems(&b, pl.Items); err != nil {
		return err
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// planItemsShown is how many items the text plan lists; --output json lists them all.
const planItemsShown = 10

// writePlanItems lists the first items as their instances will see them.
func writePlanItems(b *strings.Builder, items []planItem) error {
	b.WriteString("\n")
	tw := tabwriter.NewWriter(b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ITEM\tREGION\tINSTANCE TYPE\tSPOT\tTTL\tPARAMS")
	for _, it := range items[:min(len(items), planItemsShown)] {
		spot := "no"
		if it.Spot {
			spot = "yes"
		}
		if it.SpotPrefer {
			spot = "prefer"
		}
		typ := it.InstanceType
		if n := len(it.Fallback); n > 0 {
			typ += fmt.Sprintf(" +%d", n) // fallback candidates: --output json lists them
		}
		params := it.Params.text()
		if r := []rune(params); len(r) > 72 {
			params = string(r[:71]) + "…"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", it.Index, it.Region, typ, spot, cmp.Or(it.TTL, "-"), params)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if more := len(items) - planItemsShown; more > 0 {
		fmt.Fprintf(b, "… %d more: --output json lists every item\n", more)
	}
	return nil
}

// text says which sections made the items, when more than the params list did.
func (s planSources) text() string {
	if s.Grid == 0 && s.Random == 0 {
		return ""
	}
	var parts []string
	for _, c := range []struct {
		name string
		n    int
	}{{"params", s.Params}, {"grid", s.Grid}, {"random", s.Random}} {
		if c.n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", c.name, c.n))
		}
	}
	return ": " + strings.Join(parts, ", ")
}

func orNone(sweepWide string) string {
	if sweepWide == "" {
		return "no sweep-wide default (items may set their own)"
	}
	return sweepWide + " for items without their own"
}
