package main

import (
	"context"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/rs/zerolog"
)

// Capacity fallback in the engine (candidates: fallback.go). A reservation
// launches its current candidate under that candidate's own client token. When EC2
// refuses it for capacity or quota, the token is settled as not launched (looked up
// until EC2's consistency window has passed, as a refused launch is settled today), and
// only then is the reservation moved to the next candidate, saved (fenced), and
// launched: at any time at most one of an item's tokens can have an instance. When
// every candidate was refused, the reservation backs off and starts again from the first.

// candidateInput is the RunInstances call of the reservation's current candidate.
func (o *orchestrator) candidateInput(sw *sweep, it item, attempt, k int) (item, string) {
	c := candidateItem(sw, it, k)
	in := o.launchInput(sw, c, attempt)
	return c, aws.ToString(in.ClientToken)
}

// refusedForFallback handles a launch refused for capacity or quota when the item has
// another candidate: the refused token is marked for settling (the next steps look it
// up until EC2's consistency window has passed since the refusal) and the reservation
// waits. It reports false when the refusal is not one to fall back on.
func (o *orchestrator) refusedForFallback(sw *sweep, e *aliveInstance, err error, now time.Time, log zerolog.Logger) bool {
	it, ok := o.itemOf(e.Index)
	if !ok || len(candidatesOf(it)) < 2 || !fallbackRefusal(apiErrorCode(err)) {
		return false
	}
	cands := candidatesOf(it)
	next := cands[(e.Candidate+1)%len(cands)]
	e.Refused = true
	e.Unsettled = nil
	o.waited(&e.Unsettled, now) // the window starts after the last call with this token
	o.settleLater(e, now)
	e.WaitReason = clip(launchWaitReason(err)+"; "+next.String()+" next", maxWaitReason)
	log.Warn().Err(err).Int("candidate", e.Candidate).Str("next", next.String()).Msg("launch refused: trying the next candidate once EC2 shows no instance under this token")
	return true
}

// settleRefused is the refresh of a reservation whose current candidate was refused:
// its token is looked up; the instance an earlier call made is adopted; once EC2 has
// not shown one for its consistency window, the reservation moves to the next
// candidate. Until then it waits.
func (o *orchestrator) settleRefused(ctx context.Context, api ec2API, sw *sweep, e *aliveInstance, now time.Time, log zerolog.Logger) {
	inst, err := findByToken(ctx, api, e.ClientToken)
	switch {
	case err != nil:
		log.Warn().Err(err).Int("index", e.Index).Msg("looking up a refused launch; retrying next step")
		o.backoff(e, now)
	case inst != nil:
		e.Refused = false
		o.adopt(sw, e, aws.ToString(inst.InstanceId), now)
	case o.waited(&e.Unsettled, now) < o.consistencyWindow:
		o.settleLater(e, now)
	default:
		o.nextCandidate(sw, e, now)
	}
}

// settleLater has the reservation look its refused token up again once its Unsettled
// mark is a consistency window old. Settling is a wait of known length, not a retry: it
// does not grow the backoff, which counts the rounds in which every candidate was
// refused (fault seed 553884420: backoffs grown by settling stretched one round to
// minutes).
func (o *orchestrator) settleLater(e *aliveInstance, now time.Time) {
	e.NotBefore = now.Add(max(o.consistencyWindow-o.waited(&e.Unsettled, now), time.Second))
}

// nextCandidate moves a settled reservation to its next candidate, or back to the first
// with a backoff when every one was refused. The move is saved (fenced) before the new
// token is launched, so a crash between the two launches leaves a record that names the
// token that may have launched.
func (o *orchestrator) nextCandidate(sw *sweep, e *aliveInstance, now time.Time) {
	it, ok := o.itemOf(e.Index)
	if !ok {
		return
	}
	n := len(candidatesOf(it))
	k := (e.Candidate + 1) % n
	c, token := o.candidateInput(sw, it, e.Attempt, k)
	e.Tried = max(e.Tried, e.Candidate+1)
	e.Candidate, e.ClientToken = k, token
	e.Region, e.InstanceType, e.Spot = regionOf(sw, c), c.InstanceType, c.Spot
	e.Unseen, e.Unsettled, e.Propagating, e.Seen, e.Refused = nil, nil, nil, false, false
	if k == 0 {
		o.backoff(e, now)
		e.WaitReason = clip(fmt.Sprintf("every candidate refused; from %s again after a backoff", candidate{c.InstanceType, c.Region, c.Spot}), maxWaitReason)
	} else {
		e.NotBefore, e.WaitReason = time.Time{}, ""
	}
	// Every earlier call with this token was refused and settled: it has no instance, and
	// it is launched only after the move is saved.
	o.mayLaunch[token] = true
	o.unsent[token] = true
}

// earlierTokens are the tokens of the candidates the reservation tried before its
// current one, with their regions (none when the items are not known).
func (o *orchestrator) earlierTokens(sw *sweep, e *aliveInstance) (tokens, regions []string) {
	it, ok := o.itemOf(e.Index)
	if !ok || e.Tried == 0 {
		return nil, nil
	}
	n := len(candidatesOf(it))
	for k := range min(e.Tried, n) {
		if k == e.Candidate {
			continue
		}
		c, token := o.candidateInput(sw, it, e.Attempt, k)
		tokens, regions = append(tokens, token), append(regions, regionOf(sw, c))
	}
	return tokens, regions
}

// earlierLaunches looks up, for a cancel, every token a reservation used before its
// current one: each was settled as not launched before the next was tried, so none
// should be found; one that is (EC2 showed it later than its consistency window) is
// terminated with the rest. A region that refuses is noted in inc.
func (o *orchestrator) earlierLaunches(ctx context.Context, sw *sweep, inc *cancelIncomplete) map[string][]string {
	found := map[string][]string{}
	for _, e := range sw.Alive {
		tokens, regions := o.earlierTokens(sw, &e)
		for i, token := range tokens {
			api, err := o.ec2For(ctx, regions[i])
			if err == nil {
				inst, ferr := findByToken(ctx, api, token)
				if err = ferr; inst != nil {
					found[regions[i]] = append(found[regions[i]], aws.ToString(inst.InstanceId))
				}
			}
			if err != nil {
				inc.regions[regions[i]] = err
			}
		}
	}
	return found
}
