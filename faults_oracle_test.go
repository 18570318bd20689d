package main

import (
	"context"
	"encoding/xml"
	"fmt"
	"net/url"
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
// holds its lock): it checks the launch and counts what is alive at that moment.
func (r *faultRun) onRunInstances(form url.Values, body []byte) {
	var ans runInstancesAnswer
	if err := xml.Unmarshal(body, &ans); err != nil || len(ans.Instances) == 0 {
		r.violate("a RunInstances answer the harness cannot read: %v: %.300s", err, body)
		return
	}
	tags := requestTags(form)
	index, ierr := strconv.Atoi(tags[tagSweepIndex])
	attempt, aerr := strconv.Atoi(tags[tagAttempt])
	sweepID := tags[tagSweepID]
	now := time.Now()
	if ierr != nil || aerr != nil {
		r.violate("RunInstances without index and attempt tags: %v", tags)
		return
	}
	if tok := form.Get("ClientToken"); tok != clientToken(sweepID, index, attempt) {
		r.violate("item %d attempt %d launched with client token %q, not the one derived from sweep, index and attempt", index, attempt, tok)
	}
	r.mu.Lock()
	if r.sweepID != "" && sweepID != r.sweepID {
		r.violate("RunInstances for sweep %q in the run of sweep %s", sweepID, r.sweepID)
	}
	if index < 0 || index >= r.plan.items || attempt != 1 {
		r.violate("launched item %d attempt %d: the sweep has %d items and no spot interruptions (attempt 1 only)", index, attempt, r.plan.items)
	}
	if !r.cancelled.IsZero() {
		r.violate("item %d launched after `spawn cancel` returned CANCELLED", index)
	}
	if r.terminal != "" {
		r.violate("item %d launched after the sweep was %s", index, r.terminal)
	}
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
		exit := 0
		if r.rng.Float64() < r.plan.failRate {
			exit = 1
		}
		r.insts[in.ID] = &simInstance{id: in.ID, index: index, attempt: attempt, created: now, exitCode: exit,
			endAt: now.Add(300*time.Millisecond + time.Duration(r.rng.Int64N(int64(1200*time.Millisecond))))}
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
	cancelled := !r.cancelled.IsZero()
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
	if c.Unknown != 0 || c.Expired != 0 {
		r.violate("counts %+v: every workload reported an exit code before it ended, within its TTL", c)
	}
	if !cancelled && c.Cancelled != 0 {
		r.violate("counts %+v: cancelled items in a sweep that was not cancelled", c)
	}

	byOutcome := map[string]int{}
	recorded := map[string]bool{}
	seenIndex := map[int]bool{}
	for _, rec := range recs {
		byOutcome[rec.Outcome]++
		if seenIndex[rec.Index] {
			r.violate("two instance items for index %d", rec.Index)
		}
		seenIndex[rec.Index] = true
		if rec.InstanceID != "" {
			recorded[rec.InstanceID] = true
		}
		in, ok := insts[rec.InstanceID]
		switch {
		case rec.InstanceID != "" && !ok:
			r.violate("index %d is recorded with instance %s, which this run never created", rec.Index, rec.InstanceID)
		case ok && in.index != rec.Index:
			r.violate("index %d is recorded with instance %s, which was launched for index %d", rec.Index, rec.InstanceID, in.index)
		}
		switch rec.Outcome {
		case outcomeSucceeded, outcomeFailed:
			wantOutcome := outcomeSucceeded
			if in.exitCode != 0 {
				wantOutcome = outcomeFailed
			}
			if !ok || !in.ended || rec.Outcome != wantOutcome || rec.ExitCode == nil || *rec.ExitCode != in.exitCode {
				r.violate("index %d (instance %s) recorded %s with exit code %v; the workload reported %d (reported: %v)",
					rec.Index, rec.InstanceID, rec.Outcome, derefInt(rec.ExitCode), in.exitCode, in.ended)
			}
		case outcomeCancelled:
			if !cancelled {
				r.violate("index %d recorded cancelled in a sweep that was not cancelled", rec.Index)
			}
		default:
			r.violate("index %d (instance %s) ended with outcome %q: %s", rec.Index, rec.InstanceID, rec.Outcome, rec.ErrorMessage)
		}
	}
	if byOutcome[outcomeSucceeded] != c.Succeeded || byOutcome[outcomeFailed] != c.Failed {
		r.violate("counts %+v disagree with the instance items %v", c, byOutcome)
	}
	if !cancelled {
		if len(recs) != r.plan.items || sw.Launched != r.plan.items || len(insts) != r.plan.items {
			r.violate("%d instance items, launched %d, %d instances created; want %d each", len(recs), sw.Launched, len(insts), r.plan.items)
		}
	} else if byOutcome[outcomeCancelled] > c.Cancelled {
		r.violate("counts %+v disagree with the instance items %v", c, byOutcome)
	}
	// Every instance the run created belongs to an item: none was lost track of.
	for id, in := range insts {
		if !recorded[id] {
			r.violate("instance %s (item %d attempt %d) is in no instance item: the engine lost track of it", id, in.index, in.attempt)
		}
	}
	if alive, err := r.aliveOf(r.createdIDs()); err != nil {
		r.violate("checking instances at the end: %v", err)
	} else if len(alive) > 0 {
		r.violate("instances alive at the end: %v", alive)
	}
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
