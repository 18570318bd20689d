package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"

	lambdatypes "github.com/aws/aws-sdk-go-v2/service/lambda/types"
	"github.com/peterbourgon/ff/v3/ffcli"
)

// startFunction invokes the orchestrator function for a sweep; a missing function is
// one clear line.
func startFunction(ctx context.Context, deps *engineDeps, id string) error {
	err := invokeEvent(ctx, deps.lambda, deps.function, orchestratorEvent{SweepID: id})
	var nf *lambdatypes.ResourceNotFoundException
	if errors.As(err, &nf) {
		return fmt.Errorf("the orchestrator function %s does not exist: run 'spawn deploy', then 'spawn resume --sweep-id %s'", deps.function, id)
	}
	if err != nil {
		return fmt.Errorf("the orchestrator function %s did not start (%w): once the cause is fixed, run 'spawn resume %s'", deps.function, err, id)
	}
	return nil
}

func (r *rootConfig) printLaunched(doc launchDoc) error {
	if r.jsonOutput() {
		return r.printJSON(doc)
	}
	fmt.Fprintf(r.stdout, "sweep %s launched: %d items, at most %d at a time\n", doc.SweepID, doc.TotalParams, doc.MaxConcurrent)
	if doc.cross {
		fmt.Fprintf(r.stdout, "instances run in account %s (--compute-profile %s), through %s\n", doc.AWSAccountID, doc.ComputeProfile, crossAccountRoleName)
	}
	if doc.CostBound != "" {
		fmt.Fprintf(r.stdout, "cost bound: %s\n", doc.CostBound)
	}
	fmt.Fprintf(r.stdout, "follow it with 'spawn status %s'\n", doc.SweepID)
	return nil
}

// runHere runs the engine in this process with no deadline (--no-detach). Ctrl-C saves,
// releases the lease and says how to resume.
func (r *rootConfig) runHere(ctx context.Context, deps *engineDeps, id string, forceDownload, wait bool, doc *launchDoc) error {
	o := deps.newOrchestrator(newOwnerID("cli"), forceDownload, false)
	o.clock = r.clock // this host's clock: every age it measures is on it
	err := o.run(ctx, id, time.Time{})
	if ctx.Err() != nil {
		fmt.Fprintf(r.stderr, "sweep %s paused: resume with 'spawn resume --sweep-id %s'\n", id, id)
		return withExitCode(exitRuntime, errSilent)
	}
	if errors.Is(err, errLeaseHeld) {
		return fmt.Errorf("sweep %s is being run by another orchestrator right now: follow it with 'spawn status %s'", id, id)
	}
	if err != nil {
		return err
	}
	final, err := deps.store.loadSweep(ctx, id)
	if err != nil {
		return err
	}
	if !wait && !terminalStatus(final.Status) {
		return nil
	}
	return r.reportEnd(final, doc)
}

// reportEnd prints how a sweep ended; exit 3 when it failed, was cancelled or has
// failed items (docs/design.md exit codes, for --wait and --no-detach).
func (r *rootConfig) reportEnd(sw *sweep, doc *launchDoc) error {
	if doc != nil {
		doc.Status, doc.Counts = sw.Status, sw.Counts
	}
	if r.jsonOutput() {
		if err := r.printJSON(doc); err != nil {
			return err
		}
	} else {
		c := sw.Counts
		fmt.Fprintf(r.stdout, "sweep %s %s: %d succeeded, %d failed, %d expired, %d cancelled, %d unknown\n",
			sw.SweepID, sw.Status, c.Succeeded, c.Failed, c.Expired, c.Cancelled, c.Unknown)
	}
	return sweepEndError(sw, sw.Counts)
}

// sweepEngine is what resume and cancel start from: the sweep id (argument or flag),
// checked before any AWS call, the engine wired to the deployment, and the sweep's
// owner checked: the caller's own sweeps only, unless *force (read after the flags
// that follow the id are parsed).
func (r *rootConfig) sweepEngine(ctx context.Context, fs *flag.FlagSet, flagID *string, args []string, force *bool) (string, *deployment, *engineDeps, error) {
	id, err := sweepIDArg(fs, flagID, args)
	if err != nil {
		return "", nil, nil, err
	}
	d, deps, err := r.cliEngine(ctx)
	if err != nil || *force {
		return id, d, deps, err
	}
	sw, err := deps.store.loadSweep(ctx, id)
	if err != nil {
		return id, d, deps, explainStoreError(err, d, d.table, id)
	}
	return id, d, deps, checkOwner(sw, d, "--force")
}

func newResumeCmd(r *rootConfig) *ffcli.Command {
	fs := r.newFlagSet("resume")
	id := fs.String("sweep-id", "", "the sweep to continue")
	retryFailed := fs.Bool("retry-failed", false, "queue the sweep's failed items again")
	fs.Bool("detach", true, "run the orchestrator in Lambda")
	noDetach := fs.Bool("no-detach", false, "run the orchestrator in this process until the sweep ends")
	force := fs.Bool("force-download", false, "download the parameters again instead of using the local cache")
	anyOwner := fs.Bool("force", false, "resume a sweep another identity launched")
	return r.command("resume", "spawn resume [--sweep-id ID | ID] [--retry-failed] [--detach | --no-detach] [--force-download] [--force]",
		"continue a sweep that is not COMPLETED or CANCELLED",
		[]string{"spawn resume sw-20250101-120000-a1b2c3", "spawn resume sw-20250101-120000-a1b2c3 --retry-failed --no-detach"}, fs,
		func(ctx context.Context, args []string) error {
			sweepID, d, deps, err := r.sweepEngine(ctx, fs, id, args, anyOwner)
			if err != nil {
				return err
			}
			if *noDetach {
				if err := refuseCrossAccountHere(ctx, deps, d, sweepID); err != nil {
					return err
				}
			}
			sw, queued, err := prepareResume(ctx, deps.store, sweepID, *retryFailed)
			if errors.Is(err, errNothingToResume) {
				return withExitCode(exitUsage, err)
			}
			if err != nil {
				return explainStoreError(err, d, d.table, sweepID)
			}
			if *noDetach {
				if !r.jsonOutput() {
					fmt.Fprintf(r.stdout, "sweep %s resumed here (%d failed items queued again; Ctrl-C pauses it)\n%s", sweepID, queued, retryLeft(sw, queued, *retryFailed))
				}
				doc := &launchDoc{SweepID: sw.SweepID, SweepName: sw.SweepName, TotalParams: sw.TotalParams, MaxConcurrent: sw.MaxConcurrent}
				return r.runHere(ctx, deps, sweepID, *force, true, doc)
			}
			if err := startFunction(ctx, deps, sweepID); err != nil {
				return err
			}
			if r.jsonOutput() {
				return r.printJSON(map[string]any{"sweep_id": sweepID, "status": sw.Status, "requeued": queued, "detached": true})
			}
			fmt.Fprintf(r.stdout, "sweep %s resumed (%d failed items queued again)\n%sfollow it with 'spawn status %s'\n", sweepID, queued, retryLeft(sw, queued, *retryFailed), sweepID)
			return nil
		})
}

// retryLeft says how many failed items a --retry-failed could not queue yet (the record
// holds only so many retries at once), and how to queue them: "" when none is left.
func retryLeft(sw *sweep, queued int, retryFailed bool) string {
	if !retryFailed || sw.Counts.Failed == 0 {
		return ""
	}
	return fmt.Sprintf("%d more failed items wait (the record holds %d retries at a time): once these have run, 'spawn resume %s --retry-failed' queues them\n",
		sw.Counts.Failed, queued, sw.SweepID)
}

// cancelDoc is `cancel --output json`.
type cancelDoc struct {
	SweepID    string   `json:"sweep_id"`
	Status     string   `json:"status"`
	Already    bool     `json:"already"`
	Terminated []string `json:"terminated"`
}

func newCancelCmd(r *rootConfig) *ffcli.Command {
	fs := r.newFlagSet("cancel")
	id := fs.String("sweep-id", "", "the sweep to cancel")
	anyOwner := fs.Bool("force", false, "cancel a sweep another identity launched")
	return r.command("cancel", "spawn cancel [--sweep-id ID | ID] [--force]",
		"stop launching, terminate every instance of the sweep, status CANCELLED",
		[]string{"spawn cancel sw-20250101-120000-a1b2c3"}, fs,
		func(ctx context.Context, args []string) error {
			sweepID, d, deps, err := r.sweepEngine(ctx, fs, id, args, anyOwner)
			if err != nil {
				return err
			}
			o := deps.newOrchestrator(newOwnerID("cancel"), false, false)
			o.clock = r.clock
			var sw *sweep
			var already bool
			if cur, lerr := deps.store.loadSweep(ctx, sweepID); lerr == nil && d.crossAccount(cur.AWSAccountID) {
				sw, already, err = r.cancelThroughFunction(ctx, deps, sweepID)
			} else {
				sw, already, err = o.cancelRun(ctx, sweepID)
			}
			if err != nil {
				return explainStoreError(err, d, d.table, sweepID)
			}
			doc := cancelDoc{SweepID: sweepID, Status: sw.Status, Already: already, Terminated: o.terminated}
			if doc.Terminated == nil {
				doc.Terminated = []string{}
			}
			if r.jsonOutput() {
				return r.printJSON(doc)
			}
			switch {
			case already && sw.Status == statusCancelled:
				fmt.Fprintf(r.stdout, "sweep %s is already cancelled\n", sweepID)
			case already:
				fmt.Fprintf(r.stdout, "sweep %s already ended (%s): nothing to cancel\n", sweepID, sw.Status)
			case sw.Status != statusCancelled:
				fmt.Fprintf(r.stdout, "sweep %s ended (%s) before the cancel took effect\n", sweepID, sw.Status)
			case len(o.terminated) > 0:
				fmt.Fprintf(r.stdout, "sweep %s cancelled: terminated %d instances: %s\n", sweepID, len(o.terminated), strings.Join(o.terminated, ", "))
			default:
				fmt.Fprintf(r.stdout, "sweep %s cancelled: its orchestrator stopped and terminated its instances\n", sweepID)
			}
			return nil
		})
}
