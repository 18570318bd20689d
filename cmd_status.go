package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	"github.com/peterbourgon/ff/v3/ffcli"
)

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
		price: newPricer(d.cfg, d.userID),
		now:   r.clock.Now,
	}, nil
}

// load reads the record of a sweep the caller owns.
func (src *sweepSource) load(ctx context.Context, id string) (*sweep, error) {
	s, err := src.store.loadSweep(ctx, id)
	if err != nil {
		return nil, explainStoreError(err, src.d, src.d.table, id)
	}
	if err := checkOwner(s, src.d, ""); err != nil {
		return nil, err
	}
	return s, nil
}

// checkOwner refuses a sweep another identity launched; force names the flag that
// overrides it ("" where none does).
func checkOwner(s *sweep, d *deployment, force string) error {
	if s.UserID == "" || principalOf(s.UserID) == d.userID {
		return nil
	}
	if force == "" {
		return explain(errOtherUser, "sweep %s belongs to %s; you are %s: use that identity's credentials, e.g. with --profile", s.SweepID, s.UserID, d.userID)
	}
	return explain(errOtherUser, "sweep %s belongs to %s; you are %s: use that identity's credentials (e.g. --profile), or pass %s", s.SweepID, s.UserID, d.userID, force)
}

// build computes the status of s as of now, and names the sweep's account when it is
// not the orchestrator's (--compute-profile).
func (src *sweepSource) build(ctx context.Context, s *sweep, recs []instanceRecord) *statusView {
	v := buildStatus(ctx, s, recs, src.price, src.now())
	if src.d.crossAccount(s.AWSAccountID) {
		v.computeAccount = s.AWSAccountID
	}
	return v
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
	v := src.build(ctx, s, recs)
	v.setBest(src.objective(ctx, s, recs), recs)
	return v, nil
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
	return r.command("status", "spawn status [--sweep-id ID | ID] [--watch] [--wait] [--interval D] [--output text|json|markdown]",
		"show a sweep: progress, item counts, instances and estimated cost",
		[]string{"spawn status sw-20250101-120000-a1b2c3 --watch", "spawn status --sweep-id sw-20250101-120000-a1b2c3 --wait --output json",
			"spawn status sw-20250101-120000-a1b2c3 --output markdown >> \"$GITHUB_STEP_SUMMARY\""}, fs,
		func(ctx context.Context, args []string) error {
			id, err := sweepIDArg(fs, &sweepID, args)
			if err != nil {
				return err
			}
			if interval <= 0 {
				return usageErrorf("--interval %v must be positive, e.g. 5s", interval)
			}
			if watch && r.output != "text" {
				return usageErrorf("--watch draws a live text view: use --wait with --output %s for the final document", r.output)
			}
			src, err := r.openSweepSource(ctx)
			if err != nil {
				return err
			}
			return r.runStatus(ctx, src, id, watch, wait, interval)
		})
}

func (r *rootConfig) runStatus(ctx context.Context, src *sweepSource, id string, watch, wait bool, interval time.Duration) error {
	tty := isTerminal(r.stdout)
	style := textStyle{color: tty && os.Getenv("NO_COLOR") == ""}
	var v *statusView
	var err error
	switch {
	case watch:
		v, err = r.watchStatus(ctx, src, id, interval, tty, style)
	case wait:
		v, err = pollUntilEnded(ctx, src, id, interval, r.clock)
	default:
		v, err = src.view(ctx, id)
	}
	if err != nil {
		return err
	}
	if !(watch && tty) {
		switch r.output {
		case "json":
			err = r.printJSON(v.doc())
		case "markdown":
			err = renderStatusMarkdown(r.stdout, v)
		default:
			err = renderStatus(r.stdout, v, style)
		}
		if err != nil {
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
func pollUntilEnded(ctx context.Context, src *sweepSource, id string, interval time.Duration, c clock) (*statusView, error) {
	if _, err := src.load(ctx, id); err != nil {
		return nil, err
	}
	if _, err := waitSweep(ctx, src.store, id, interval, c); err != nil {
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
// elsewhere (a log file, a pipe), until the sweep ends or the user interrupts. It
// refreshes every interval of r.clock.
func (r *rootConfig) watchStatus(ctx context.Context, src *sweepSource, id string, interval time.Duration, tty bool, style textStyle) (*statusView, error) {
	var last string
	items := &watchItems{bad: -1}
	for {
		s, err := src.load(ctx, id)
		if err != nil {
			return nil, err
		}
		var v *statusView
		if terminalStatus(s.Status) {
			// The last screen reads every item once more, and names the best one.
			if v, err = src.view(ctx, id); err != nil {
				return nil, err
			}
		} else {
			if err := items.refresh(ctx, src, s); err != nil {
				return nil, err
			}
			v = src.build(ctx, s, items.recs)
		}
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
		if err := r.clock.Sleep(ctx, interval); err != nil {
			return nil, fmt.Errorf("stopped watching sweep %s (%w): it goes on; 'spawn status %s' shows it", id, err, id)
		}
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
		"list your sweeps, newest first",
		[]string{"spawn list --status RUNNING", "spawn list --limit 10 --output json"}, fs,
		func(ctx context.Context, args []string) error {
			if err := noArgs(fs, args); err != nil {
				return err
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

type logObjectAPI interface {
	GetObject(ctx context.Context, in *s3.GetObjectInput, opts ...func(*s3.Options)) (*s3.GetObjectOutput, error)
	ListObjectsV2(ctx context.Context, in *s3.ListObjectsV2Input, optFns ...func(*s3.Options)) (*s3.ListObjectsV2Output, error)
}

// itemInstance is the instance of item index's latest attempt ("" before its launch).
func (src *sweepSource) itemInstance(ctx context.Context, s *sweep, index int) (string, error) {
	for _, e := range s.Alive {
		if e.Index == index && e.InstanceID != "" {
			return e.InstanceID, nil
		}
	}
	recs, err := src.store.listInstances(ctx, s.SweepID)
	if err != nil {
		return "", explainStoreError(err, src.d, src.d.instancesTable, s.SweepID)
	}
	for _, rec := range recs {
		if rec.Index == index {
			return rec.InstanceID, nil
		}
	}
	return "", nil
}

func newLogsCmd(r *rootConfig) *ffcli.Command {
	fs := r.newFlagSet("logs")
	var (
		sweepID string
		index   int
	)
	fs.StringVar(&sweepID, "sweep-id", "", "the sweep (or give it as the argument)")
	fs.IntVar(&index, "index", -1, "the item whose log to print (numbered from 0 in file order)")
	return r.command("logs", "spawn logs [--sweep-id ID | ID] --index I",
		"print the log that the instance of item I uploaded",
		[]string{"spawn logs sw-20250101-120000-a1b2c3 --index 3"}, fs,
		func(ctx context.Context, args []string) error {
			id, err := sweepIDArg(fs, &sweepID, args)
			if err != nil {
				return err
			}
			if index < 0 {
				return usageErrorf("--index is needed: give the item's index, 0 for the first item of the parameter file")
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
			instanceID, err := src.itemInstance(ctx, s, index)
			if err != nil {
				return err
			}
			return r.printLog(ctx, newS3Client(src.d.cfg, src.d.accountID), bucket, id, index, instanceID)
		})
}

func (r *rootConfig) printLog(ctx context.Context, client logObjectAPI, bucket, id string, index int, instanceID string) error {
	noLog := fmt.Errorf("no log for item %d of sweep %s yet: the instance uploads it when its command ends", index, id)
	if instanceID == "" {
		return noLog
	}
	// The log is named by the instance's credentials ("<role id>:<instance id>.log").
	key, err := findNamedObject(ctx, client, bucket, logPrefix(id, index), ".log", instanceID)
	if err == nil && key == "" {
		return noLog
	}
	var out *s3.GetObjectOutput
	if err == nil {
		out, err = client.GetObject(ctx, &s3.GetObjectInput{Bucket: &bucket, Key: &key})
	}
	if err == nil {
		defer out.Body.Close()
		return r.copyLog(out.Body, bucket, key, id, index)
	}
	// GetObject models only NoSuchKey; a missing bucket comes back as a generic API error.
	var apiErr smithy.APIError
	code := ""
	if errors.As(err, &apiErr) {
		code = apiErr.ErrorCode()
	}
	var nsk *s3types.NoSuchKey
	switch {
	case errors.As(err, &nsk) || code == "NoSuchKey" || code == "NotFound":
		return explain(err, "no log for item %d of sweep %s yet: the instance uploads it when its command ends", index, id)
	case missingBucket(err):
		return explain(err, "bucket %s does not exist: pass the --bucket that 'spawn deploy' used", bucket)
	}
	return fmt.Errorf("reading the log of item %d in s3://%s: %w", index, bucket, err)
}

// copyLog prints a log object, or the JSON document that holds it.
func (r *rootConfig) copyLog(body io.Reader, bucket, key, id string, index int) error {
	if r.jsonOutput() {
		body, err := io.ReadAll(body)
		if err != nil {
			return fmt.Errorf("reading s3://%s/%s: %w", bucket, key, err)
		}
		return r.printJSON(map[string]any{"sweep_id": id, "index": index, "bucket": bucket, "key": key, "log": string(body)})
	}
	if _, err := io.Copy(r.stdout, body); err != nil {
		return fmt.Errorf("reading s3://%s/%s: %w", bucket, key, err)
	}
	return nil
}
