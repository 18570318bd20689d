package main

import (
	"context"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
)

// What TestFaultsEndToEnd checks: every launch as it happens (the proxy shows it each
// RunInstances answer), the record as it changes, and the end state of the record, the
// instance items and the instances.

// runInstancesAnswer is the part of EC2's RunInstances answer the harness reads.
type runInstancesAnswer struct {
	Instances []struct {
		ID string `xml:"instanceId"`
	} `xml:"instancesSet>item"`
}

// requestTags reads the instance tags of a RunInstances request (EC2 query form).
func requestTags(form url.Values) map[string]string {
	tags := map[string]string{}
	for k, vs := range form {
		if !strings.HasPrefix(k, "TagSpecification.") || !strings.HasSuffix(k, ".Key") || len(vs) == 0 {
			continue
		}
		tags[vs[0]] = form.Get(strings.TrimSuffix(k, ".Key") + ".Value")
	}
	return tags
}

// onRunInstances sees every instance the run creates, one launch at a time (the proxy
// holds its lock): it checks the launch, draws what its workload will do, and counts what
// is alive at that moment.
func (r *faultRun) onRunInstances(l launchSeen) {
	var ans runInstancesAnswer
	if err := xml.Unmarshal(l.body, &ans); err != nil || len(ans.Instances) == 0 {
		r.violate("a RunInstances answer the harness cannot read: %v: %.300s", err, l.body)
		return
	}
	tags := requestTags(l.form)
	index, ierr := strconv.Atoi(tags[tagSweepIndex])
	attempt, aerr := strconv.Atoi(tags[tagAttempt])
	sweepID := tags[tagSweepID]
	now := time.Now()
	if ierr != nil || aerr != nil {
		r.violate("RunInstances without index and attempt tags: %v", tags)
		return
	}
	want := clientToken(sweepID, index, attempt)
	if r.plan.fallback {
		// The refused t3.large never launches: the instance is t3.micro's, candidate 1.
		want = candidateToken(sweepID, index, attempt, 1)
	}
	if tok := l.form.Get("ClientToken"); tok != want {
		r.violate("item %d attempt %d launched with client token %q, not the one derived from sweep, index, attempt (and candidate)", index, attempt, tok)
	}
	if typ := l.form.Get("InstanceType"); r.plan.fallback && typ != "t3.micro" {
		r.violate("item %d launched as %s: EC2 refuses t3.large, and t3.micro is its fallback", index, typ)
	}
	r.mu.Lock()
	r.checkLaunch(sweepID, index, attempt, l.region)
	ids := make([]string, 0, len(r.insts)+1)
	for id := range r.insts {
		ids = append(ids, id)
	}
	for _, in := range ans.Instances {
		pair := [2]int{index, attempt}
		r.byPair[pair] = append(r.byPair[pair], in.ID)
		if len(r.byPair[pair]) > 1 {
			r.violate("item %d attempt %d launched into %d instances: %v", index, attempt, len(r.byPair[pair]), r.byPair[pair])
		}
		r.insts[in.ID] = r.newSimInstance(in.ID, l.region, index, attempt, now, l.visible[in.ID])
		ids = append(ids, in.ID)
	}
	r.mu.Unlock()

	alive, err := r.aliveOf(ids)
	if err != nil {
		r.violate("counting the instances alive at a launch: %v", err)
		return
	}
	r.mu.Lock()
	r.maxAlive = max(r.maxAlive, len(alive))
	r.mu.Unlock()
	if len(alive) > r.plan.maxConc {
		r.violate("%d instances alive when item %d was launched, max_concurrent %d: %v", len(alive), index, r.plan.maxConc, alive)
	}
}

// checkLaunch: a launch of this sweep, of an item it has, in the item's region, before
// any cancel returned or the sweep ended. r.mu is held.
func (r *faultRun) checkLaunch(sweepID string, index, attempt int, region string) {
	if r.sweepID != "" && sweepID != r.sweepID {
		r.violate("RunInstances for sweep %q in the run of sweep %s", sweepID, r.sweepID)
	}
	if index < 0 || index >= r.plan.items || attempt != 1 {
		r.violate("launched item %d attempt %d: the sweep has %d items and no spot interruptions (attempt 1 only)", index, attempt, r.plan.items)
	}
	if want := r.regionOf(index); region != want {
		r.violate("item %d launched in %s, not in its region %s", index, region, want)
	}
	if !r.cancelSaid.IsZero() {
		r.violate("item %d launched after `spawn cancel` returned", index)
	}
	if r.terminal != "" {
		r.violate("item %d launched after the sweep was %s", index, r.terminal)
	}
}

func (r *faultRun) regionOf(index int) string {
	if slices.Contains(r.plan.region2Items, index) {
		return r.plan.region2
	}
	return "us-east-1"
}

// newSimInstance draws what the instance's workload does: when it ends (once it has
// booted, which is after EC2 shows it), its exit code, and how it reports. r.mu is held.
func (r *faultRun) newSimInstance(id, region string, index, attempt int, now, visible time.Time) *simInstance {
	in := &simInstance{id: id, region: region, index: index, attempt: attempt, created: now, visibleAt: visible}
	if r.rng.Float64() < r.plan.failRate {
		in.exitCode = 1
	}
	switch f := r.rng.Float64(); {
	case f < noReportRate:
		in.fate = fateNoReport
	case f < noReportRate+tagLostRate:
		in.fate = fateTagLost
	}
	booted := now
	if visible.After(booted) {
		booted = visible
	}
	in.endAt = booted.Add(300*time.Millisecond + time.Duration(r.rng.Int64N(int64(1200*time.Millisecond))))
	return in
}

// aliveOf asks kumo directly which of ids are pending or running.
func (r *faultRun) aliveOf(ids []string) ([]string, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := r.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: ids})
	if err != nil {
		return nil, err
	}
	var alive []string
	for _, res := range out.Reservations {
		for _, inst := range res.Instances {
			if liveState(inst.State.Name) {
				alive = append(alive, aws.ToString(inst.InstanceId))
			}
		}
	}
	sort.Strings(alive)
	return alive, nil
}

func (r *faultRun) createdIDs() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	ids := make([]string, 0, len(r.insts))
	for id := range r.insts {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// cancel runs `spawn cancel` against the proxy's fault-free side: the CLI talks to AWS
// directly, but it shares EC2's memory of client tokens with the function's path (kumo
// has none, and a cancel repeats a reserved launch to find its instance). It does what
// the CLI's messages say: run it again when the orchestrator has not stopped yet, or
// when a region could not be reached (SPEC promise 3).
func (r *faultRun) cancel() {
	run := func() (string, string, int) {
		return r.cli(r.proxy.CleanURL(), "cancel", "--sweep-id", r.sweepID, "--output", "json")
	}
	// Run again as told: a region it could not reach, for at most 40 s after the first
	// such answer, after the refusing region's window and after a killed holder's lease.
	var deadline time.Time
	out, errOut, code := run()
	for notStopped := 0; code != 0; {
		unreached := cancelUnreached(errOut)
		if len(unreached) > 0 {
			r.cancelIncomplete(errOut, unreached)
			if deadline.IsZero() {
				deadline = time.Now().Add(40 * time.Second)
				if end := r.launchedAt.Add(r.plan.refuseAt + r.plan.refuseFor + 40*time.Second); end.After(deadline) {
					deadline = end
				}
				// A killed holder keeps its lease and the cancel it was making: until a
				// new holder takes over, a cancel beside it repeats the holder's last
				// answer (seed 17574923).
				for _, k := range r.plan.kills {
					if end := r.launchedAt.Add(k + killedLeaseWait + 40*time.Second); end.After(deadline) {
						deadline = end
					}
				}
			}
		}
		if strings.Contains(errOut, "has not stopped yet") && notStopped < 3 {
			notStopped++
			r.mu.Lock()
			r.cancelRepeats++
			r.mu.Unlock()
		} else if len(unreached) > 0 && time.Now().Before(deadline) {
			time.Sleep(time.Second)
		} else {
			break
		}
		out, errOut, code = run()
	}
	var doc cancelDoc
	if code != 0 || json.Unmarshal([]byte(out), &doc) != nil {
		r.violate("spawn cancel: exit %d, stdout %q, stderr (last line) %q", code, out, lastLine(errOut))
		r.mu.Lock()
		r.cancelOutcome = "error"
		r.mu.Unlock()
		return
	}
	r.cancelAnswered(doc)
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	return s[strings.LastIndex(s, "\n")+1:]
}

var couldNotReach = regexp.MustCompile(`could not reach (\S+) \(`)

// cancelUnreached are the regions a cancel's error (its last line) says it could not
// reach.
func cancelUnreached(errOut string) []string {
	var regions []string
	for _, m := range couldNotReach.FindAllStringSubmatch(lastLine(errOut), -1) {
		regions = append(regions, m[1])
	}
	return regions
}

// cancelIncomplete checks a cancel that exited 1 naming the regions it could not reach:
// it terminated everything elsewhere (unless it also says a launch is not yet found),
// and from now on nothing new is launched.
func (r *faultRun) cancelIncomplete(errOut string, unreached []string) {
	r.mu.Lock()
	for _, region := range unreached {
		r.cancelUnreached[region]++
	}
	if r.cancelSaid.IsZero() {
		r.cancelSaid = time.Now()
	}
	var elsewhere []string
	for id, in := range r.insts {
		if !slices.Contains(unreached, in.region) {
			elsewhere = append(elsewhere, id)
		}
	}
	r.mu.Unlock()
	r.t.Logf("seed %d: spawn cancel exited 1, running it again as it says: %s", r.seed, lastLine(errOut))
	if strings.Contains(errOut, "not yet found") {
		return
	}
	if alive, err := r.aliveOf(elsewhere); err == nil && len(alive) > 0 {
		r.violate("`spawn cancel` exited 1 naming only %v, but instances elsewhere are alive: %v (%s)", unreached, alive, lastLine(errOut))
	}
}

// cancelAnswered checks a cancel that exited 0.
func (r *faultRun) cancelAnswered(doc cancelDoc) {
	r.mu.Lock()
	r.cancelOutcome = doc.Status
	if doc.Already {
		r.cancelOutcome += " already"
	}
	if doc.Status == statusCancelled {
		r.cancelled = time.Now()
	}
	if r.cancelSaid.IsZero() {
		r.cancelSaid = time.Now()
	}
	r.mu.Unlock()
	if doc.Status != statusCancelled && doc.Status != statusCompleted {
		r.violate("spawn cancel answered status %s", doc.Status)
	}
	if alive, err := r.aliveOf(r.createdIDs()); err != nil {
		r.violate("checking instances after cancel: %v", err)
	} else if len(alive) > 0 {
		r.violate("instances alive after `spawn cancel` returned %s: %v", doc.Status, alive)
	}
	sw, err := r.store.loadSweep(context.Background(), r.sweepID)
	if err != nil {
		r.violate("reading the record after cancel: %v", err)
	} else if sw.Status != doc.Status {
		r.violate("cancel answered %s but the record says %s", doc.Status, sw.Status)
	}
}

// poll reads the record (consistent read) every 100 ms until stop: the version never
// goes back, a terminal status never changes, and nothing outlives COMPLETED.
func (r *faultRun) poll(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	var last *sweep
	for {
		select {
		case <-stop:
			return
		case <-time.After(100 * time.Millisecond):
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		sw, err := r.store.loadSweep(ctx, r.sweepID)
		cancel()
		if err != nil {
			continue
		}
		if last != nil {
			if sw.Version < last.Version {
				r.violate("the record's version went back from %d to %d", last.Version, sw.Version)
			}
			if terminalStatus(last.Status) && sw.Status != last.Status {
				r.violate("the status went from %s to %s", last.Status, sw.Status)
			}
			if finishedItems(sw.Counts) < finishedItems(last.Counts) {
				r.violate("items with an outcome went back from %+v to %+v", last.Counts, sw.Counts)
			}
		}
		r.noteWaits(sw)
		if slotsUsed(sw) > sw.MaxConcurrent {
			r.violate("the record holds %d entries in slots, max_concurrent %d", slotsUsed(sw), sw.MaxConcurrent)
		}
		if terminalStatus(sw.Status) && (last == nil || !terminalStatus(last.Status)) {
			r.mu.Lock()
			r.terminal = sw.Status
			r.mu.Unlock()
			if sw.Status == statusCompleted {
				// Every instance the engine launched ended before it could complete:
				// one still alive now is one it lost track of.
				if alive, err := r.aliveOf(r.createdIDs()); err != nil {
					r.violate("checking instances at completion: %v", err)
				} else if len(alive) > 0 {
					r.violate("instances alive when the sweep was COMPLETED: %v", alive)
				}
			}
		}
		last = sw
		r.mu.Lock()
		r.lastSweep = sw
		r.mu.Unlock()
	}
}

// noteWaits remembers the wait reasons the record shows for launches refused for a
// quota or capacity (SPEC promise 5: retried with backoff, the reason shown).
func (r *faultRun) noteWaits(sw *sweep) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range sw.Alive {
		for code := range quotaMessages {
			if strings.Contains(e.WaitReason, code) {
				r.quotaWaits[fmt.Sprintf("%d %s", e.Index, code)] = true
			}
		}
	}
}

func finishedItems(c counts) int { return c.Succeeded + c.Failed + c.Expired + c.Cancelled + c.Unknown }

func describeSweep(sw *sweep) string {
	if sw == nil {
		return "no record read"
	}
	return fmt.Sprintf("status %s, version %d, next %d, launched %d, alive %d, counts %+v, lease %q until %s, cancel_requested %v",
		sw.Status, sw.Version, sw.NextToLaunch, sw.Launched, len(sw.Alive), sw.Counts, sw.LeaseOwner,
		sw.LeaseExpiresAt.Format("15:04:05.000"), sw.CancelRequested)
}

// finalChecks: the end state of the record, the instance items and the instances.
func (r *faultRun) finalChecks() {
	ctx := context.Background()
	sw, err := r.store.loadSweep(ctx, r.sweepID)
	if err != nil {
		r.violate("reading the record at the end: %v", err)
		return
	}
	recs, err := r.store.listInstances(ctx, r.sweepID)
	if err != nil {
		r.violate("listing the instance items at the end: %v", err)
		return
	}
	r.mu.Lock()
	// A cancel that answered CANCELLED, or one requested that the engine finished after
	// the harness stopped repeating it (that cancel's exit is a violation of its own).
	cancelled := !r.cancelled.IsZero() || (r.cancels > 0 && sw.CancelRequested && sw.Status == statusCancelled)
	insts := map[string]simInstance{}
	for id, in := range r.insts {
		insts[id] = *in
	}
	r.mu.Unlock()

	want := statusCompleted
	if cancelled {
		want = statusCancelled
	}
	if sw.Status != want {
		r.violate("the sweep ended %s, want %s: %s", sw.Status, want, describeSweep(sw))
	}
	if len(sw.Alive) != 0 || len(sw.RetryQueue) != 0 || sw.LeaseOwner != "" {
		r.violate("at the end: %d alive entries, %d queued retries, lease %q", len(sw.Alive), len(sw.RetryQueue), sw.LeaseOwner)
	}
	c := sw.Counts
	if finishedItems(c) != sw.TotalParams || c.Pending != 0 || c.Running != 0 || sw.TotalParams != r.plan.items {
		r.violate("counts %+v do not account for the %d items", c, r.plan.items)
	}
	if c.Expired != 0 {
		r.violate("counts %+v: no workload ran into a TTL", c)
	}
	if !cancelled && c.Cancelled != 0 {
		r.violate("counts %+v: cancelled items in a sweep that was not cancelled", c)
	}
	r.checkRecords(sw, recs, insts, cancelled)
	if alive, err := r.aliveOf(r.createdIDs()); err != nil {
		r.violate("checking instances at the end: %v", err)
	} else if len(alive) > 0 {
		r.violate("instances alive at the end: %v", alive)
	}
}

// checkRecords: one instance item per item, each with the outcome its instance
// reported, counts that agree with them, and no instance the engine lost track of.
func (r *faultRun) checkRecords(sw *sweep, recs []instanceRecord, insts map[string]simInstance, cancelled bool) {
	byOutcome := map[string]int{}
	recorded := map[string]bool{}
	seenIndex := map[int]bool{}
	refused := 0
	for _, rec := range recs {
		byOutcome[rec.Outcome]++
		if seenIndex[rec.Index] {
			r.violate("two instance items for index %d", rec.Index)
		}
		seenIndex[rec.Index] = true
		if rec.InstanceID != "" {
			recorded[rec.InstanceID] = true
		}
		var in *simInstance
		if sim, ok := insts[rec.InstanceID]; ok {
			in = &sim
		} else if sim, ok := forgottenUnreported(&rec, insts); ok {
			// Its launch's answer was lost, and it ran, died with no report and was
			// forgotten by EC2 before any engine learned its id: unknown, with no id.
			in, recorded[sim.id] = &sim, true
		}
		if r.checkRecord(&rec, in, cancelled) {
			refused++
		}
	}
	c := sw.Counts
	if byOutcome[outcomeSucceeded] != c.Succeeded || byOutcome[outcomeFailed] != c.Failed || byOutcome[outcomeUnknown] != c.Unknown {
		r.violate("counts %+v disagree with the instance items %v", c, byOutcome)
	}
	if !cancelled {
		// An item whose launch the refusing region turned down has no instance.
		if n := r.plan.items - refused; len(recs) != r.plan.items || sw.Launched != n || len(insts) != n {
			r.violate("%d instance items, launched %d, %d instances created; want %d items and %d launched (%d launches refused)",
				len(recs), sw.Launched, len(insts), r.plan.items, n, refused)
		}
	} else if byOutcome[outcomeCancelled] > c.Cancelled {
		r.violate("counts %+v disagree with the instance items %v", c, byOutcome)
	}
	// Every instance the run created belongs to an item: none was lost track of — but
	// one that died with no report and that EC2 forgot before any engine learned its id
	// is beyond knowing: in a cancelled sweep its item is recorded cancelled, not launched.
	cancelledUnlaunched := map[int]bool{}
	for _, rec := range recs {
		if cancelled && rec.InstanceID == "" && rec.Outcome == outcomeCancelled {
			cancelledUnlaunched[rec.Index] = true
		}
	}
	for id, in := range insts {
		if !recorded[id] && !(cancelledUnlaunched[in.index] && !in.reported()) {
			r.violate("instance %s (item %d attempt %d) is in no instance item: the engine lost track of it (its workload %s; EC2 forgets %s after it ends)",
				id, in.index, in.attempt, in.reportedHow(), r.plan.forgetAfter)
		}
	}
}

// forgottenUnreported is the instance of rec's attempt when rec is an unknown outcome
// with no instance id because EC2 forgot the instance before the engine learned its id,
// and that instance left no report.
func forgottenUnreported(rec *instanceRecord, insts map[string]simInstance) (simInstance, bool) {
	if rec.InstanceID != "" || rec.Outcome != outcomeUnknown || !strings.Contains(rec.ErrorMessage, "EC2 no longer shows its report") {
		return simInstance{}, false
	}
	for _, in := range insts {
		if in.index == rec.Index && in.attempt == rec.Attempt && !in.reported() {
			return in, true
		}
	}
	return simInstance{}, false
}

// checkRecord checks one item's outcome against what its instance did (in: nil when the
// item has no instance of this run). It reports whether the item is one whose launch the
// refusing region turned down.
func (r *faultRun) checkRecord(rec *instanceRecord, in *simInstance, cancelled bool) bool {
	switch {
	case rec.InstanceID != "" && in == nil:
		r.violate("index %d is recorded with instance %s, which this run never created", rec.Index, rec.InstanceID)
		return false
	case in != nil && in.index != rec.Index:
		r.violate("index %d is recorded with instance %s, which was launched for index %d", rec.Index, rec.InstanceID, in.index)
	}
	switch rec.Outcome {
	case outcomeSucceeded, outcomeFailed:
		if in == nil {
			if rec.Outcome == outcomeFailed && r.plan.region2 != "" && rec.Region == r.plan.region2 &&
				strings.Contains(rec.ErrorMessage, "UnauthorizedOperation") {
				return true // SPEC promise 5: a launch refused for bad input fails the item
			}
			r.violate("index %d recorded %s with no instance: %s", rec.Index, rec.Outcome, rec.ErrorMessage)
			return false
		}
		wantOutcome := outcomeSucceeded
		if in.exitCode != 0 {
			wantOutcome = outcomeFailed
		}
		if !in.reported() || rec.Outcome != wantOutcome || rec.ExitCode == nil || *rec.ExitCode != in.exitCode {
			r.violate("index %d (instance %s) recorded %s with exit code %v; its workload %s",
				rec.Index, rec.InstanceID, rec.Outcome, derefInt(rec.ExitCode), in.reportedHow())
		}
	case outcomeUnknown:
		switch {
		case in == nil:
			r.violate("index %d ended unknown with no instance recorded: %s", rec.Index, rec.ErrorMessage)
		case in.reported():
			r.violate("index %d (instance %s) ended unknown (%s), but its workload %s", rec.Index, rec.InstanceID, rec.ErrorMessage, in.reportedHow())
		}
	case outcomeCancelled:
		if !cancelled {
			r.violate("index %d recorded cancelled in a sweep that was not cancelled", rec.Index)
		}
	default:
		r.violate("index %d (instance %s) ended with outcome %q: %s", rec.Index, rec.InstanceID, rec.Outcome, rec.ErrorMessage)
	}
	return false
}

// reportedHow says what the workload left for the engine to read.
func (in *simInstance) reportedHow() string {
	switch {
	case in.killed:
		return "was terminated before it reported"
	case !in.reported():
		return "died with no report"
	case in.tagged:
		return fmt.Sprintf("reported exit code %d by exit record and tag", in.exitCode)
	case in.fate == fateTagLost:
		return fmt.Sprintf("reported exit code %d by exit record only (its tag write was lost)", in.exitCode)
	}
	return fmt.Sprintf("reported exit code %d by exit record only (its region refused the tag)", in.exitCode)
}

func derefInt(p *int) any {
	if p == nil {
		return nil
	}
	return *p
}

func (r *faultRun) report() {
	r.mu.Lock()
	violations := append([]string(nil), r.violations...)
	r.mu.Unlock()
	if len(violations) == 0 {
		return
	}
	r.t.Errorf("%s: %d invariant(s) broken\nplan: %s\n%s\nfunction logs:\n%s", r.prefix(), len(violations), r.plan,
		strings.Join(violations, "\n"), tail(r.functionLogs(), 20000))
}
