package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// The fault proxy's model of EC2 where AWS is stricter than kumo (EMULATORS.md, "Where
// AWS is stricter than every emulator here"). It applies on both sides of the proxy: the
// clean side has no random faults, but EC2 there is EC2 as it really is.

// ec2Settings are the waits of the model. AWS's are seconds (lags) and about an hour
// (forgetting); the tests shorten them.
type ec2Settings struct {
	// visibleLag: an instance RunInstances returned is missing from DescribeInstances
	// for a time drawn in this range.
	visibleLag [2]time.Duration
	// tagLag: tags written by CreateTags appear a time drawn in this range after the call.
	tagLag [2]time.Duration
	// forgetAfter: a terminated instance disappears this long after it terminated (0:
	// never).
	forgetAfter time.Duration
	// refusal: a region whose every EC2 call is refused for a window.
	refusal regionRefusal
	// refuseTypes: RunInstances of these instance types is refused with the code given
	// (instance type → InsufficientInstanceCapacity, say), on both sides of the proxy.
	refuseTypes map[string]string
}

// regionRefusal is a region that refuses every EC2 call from from until until, as when
// an organisation's service control policy denies it.
type regionRefusal struct {
	region      string
	from, until time.Time
}

// modelInstance is what the model knows of an instance launched through the proxy.
type modelInstance struct {
	visibleAt    time.Time
	terminatedAt time.Time // zero: not known to have terminated
	forgotten    bool      // counted once as forgotten
}

// tokenLaunch is what EC2 made of one ClientToken: the first answer, the parameters
// it was asked with, and the instances it made.
type tokenLaunch struct {
	answer []byte
	params string
	ids    []string
}

// launchSeen is one launch as the proxy shows it to the harness.
type launchSeen struct {
	form    url.Values
	body    []byte
	region  string
	visible map[string]time.Time // instance id → when DescribeInstances first shows it
}

// lateWrite is a CreateTags call EC2 has answered and not yet applied.
type lateWrite struct {
	at     time.Time
	method string
	uri    string
	header http.Header
	host   string
	body   []byte
}

// quotaMessages are the launch refusals for quota and capacity that clear with time
// (EC2 API reference, "Error codes": client errors, HTTP 400).
var quotaMessages = map[string]string{
	"VcpuLimitExceeded": "You have requested more vCPU capacity than your current vCPU limit of 16 allows for the instance " +
		"bucket that the specified instance type belongs to.",
	"InstanceLimitExceeded":             "Your quota allows for 0 more running instance(s). You requested at least 1.",
	"InsufficientInstanceCapacity":      "We currently do not have sufficient t3.micro capacity in the Availability Zone you requested.",
	"MaxSpotInstanceCountExceeded":      "Max spot instance count exceeded",
	"InsufficientFreeAddressesInSubnet": "There are not enough free addresses in subnet to satisfy the requested number of instances.",
	"UnfulfillableCapacity":             "There is no Spot capacity available that matches your request.",
}

var quotaCodes = sortedKeys(quotaMessages)

func (p *faultProxy) draw(r [2]time.Duration) time.Duration {
	if r[1] <= r[0] {
		return r[0]
	}
	return r[0] + time.Duration(p.rng.Int64N(int64(r[1]-r[0])))
}

// refuses reports whether region refuses EC2 calls now, and counts the refusal.
func (p *faultProxy) refuses(region string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	f := p.ec2.refusal
	now := p.now()
	if f.region == "" || region != f.region || now.Before(f.from) || !now.Before(f.until) {
		return false
	}
	p.note("refused-region")
	return true
}

// ec2Answer is EC2's answer as AWS would give it, built on kumo's.
func (p *faultProxy) ec2Answer(req *proxyReq, fault string) (int, http.Header, []byte, error) {
	switch req.action {
	case "RunInstances":
		return p.runInstances(req, fault)
	case "DescribeInstances":
		return p.describeInstances(req)
	case "TerminateInstances":
		if st, h, b, refused := p.notFound(askedIDs(req.form, "InstanceId")); refused {
			return st, h, b, nil
		}
		st, h, b, err := p.forward(req)
		if err == nil && st == http.StatusOK {
			p.noteTerminated(askedIDs(req.form, "InstanceId"), p.now())
		}
		return st, h, b, err
	case "CreateTags":
		if st, h, b, refused := p.notFound(askedIDs(req.form, "ResourceId")); refused {
			return st, h, b, nil
		}
		return p.createTagsLate(req)
	}
	return p.forward(req)
}

// runInstances is RunInstances as EC2 documents it ("Ensuring idempotency in Amazon EC2
// API requests", RunInstances idempotency): a ClientToken seen before with the same
// parameters gets the first call's answer and launches nothing; with other parameters it
// gets IdempotentParameterMismatch; once the token's instance has terminated it gets
// IdempotentInstanceTerminated (since 2025). A quota or capacity refusal (the fault
// drawn) is given only to a token that has launched nothing yet. One RunInstances at a
// time, so a token is never launched twice.
func (p *faultProxy) runInstances(req *proxyReq, fault string) (int, http.Header, []byte, error) {
	token := req.form.Get("ClientToken")
	params := runParams(req.form)
	p.mu.Lock()
	defer p.mu.Unlock()
	if prev, ok := p.byToken[token]; ok && token != "" {
		switch {
		case prev.params != params:
			p.note("idempotent-mismatch")
			st, h, b := ec2Error(400, "IdempotentParameterMismatch", "The client token "+token+
				" has been used with different parameters in a previous request.")
			return st, h, b, nil
		case p.launchTerminated(prev):
			p.note("idempotent-terminated")
			st, h, b := ec2Error(400, "IdempotentInstanceTerminated", "The instance launched with client token "+token+
				" has been terminated.")
			return st, h, b, nil
		}
		return http.StatusOK, http.Header{"Content-Type": {"text/xml;charset=UTF-8"}}, prev.answer, nil
	}
	if err := req.r.Context().Err(); err != nil {
		// The caller gave up while the request waited its turn here: it never reached
		// EC2, and must not launch anything later.
		return 0, nil, nil, err
	}
	if code := p.ec2.refuseTypes[req.form.Get("InstanceType")]; code != "" {
		p.note("type-refused:" + code)
		st, h, b := ec2Error(400, code, quotaMessages[code])
		return st, h, b, nil
	}
	if msg := quotaMessages[fault]; msg != "" {
		p.note("quota:" + fault)
		st, h, b := ec2Error(400, fault, msg)
		return st, h, b, nil
	}
	st, h, body, err := p.forward(req)
	if err != nil || st != http.StatusOK {
		return st, h, body, err
	}
	seen := launchSeen{form: req.form, body: body, region: req.region, visible: map[string]time.Time{}}
	now := p.now()
	var ids []string
	for _, m := range instanceIDInAnswer.FindAllSubmatch(body, -1) {
		id := string(m[1])
		seen.visible[id] = now.Add(p.draw(p.ec2.visibleLag))
		p.insts[id] = &modelInstance{visibleAt: seen.visible[id]}
		ids = append(ids, id)
	}
	if token != "" {
		p.byToken[token] = &tokenLaunch{answer: body, params: params, ids: ids}
	}
	if p.onRunInstances != nil {
		p.onRunInstances(seen)
	}
	return st, h, body, nil
}

var instanceIDInAnswer = regexp.MustCompile(`<instanceId>([^<]+)</instanceId>`)

// runParams is the RunInstances request as EC2 compares two calls with one token: the
// whole form. The SDK's form has no field that changes between retries (Action and
// Version are fixed; the token is what is compared against).
func runParams(form url.Values) string {
	f := url.Values{}
	for k, v := range form {
		if k != "ClientToken" {
			f[k] = v
		}
	}
	return f.Encode()
}

// launchTerminated: every instance of the launch has terminated. p.mu is held.
func (p *faultProxy) launchTerminated(l *tokenLaunch) bool {
	for _, id := range l.ids {
		if in := p.insts[id]; in == nil || in.terminatedAt.IsZero() {
			return false
		}
	}
	return len(l.ids) > 0
}

// shown reports whether DescribeInstances shows the instance now, and counts why not:
// "visibility-lag" for each answer that hides a new instance (EC2 API reference,
// "Eventual consistency": an instance just launched may be missing for seconds), and
// "forgotten" once per instance EC2 no longer shows, a while after it terminated (EC2
// User Guide, "Terminate Amazon EC2 instances": about an hour). p.mu is held.
func (p *faultProxy) shown(id string, now time.Time) bool {
	in := p.insts[id]
	switch {
	case in == nil:
		return true // not launched here (another run's, or a test's own): as kumo says
	case now.Before(in.visibleAt):
		p.note("visibility-lag")
		return false
	case p.ec2.forgetAfter > 0 && !in.terminatedAt.IsZero() && now.Sub(in.terminatedAt) >= p.ec2.forgetAfter:
		if !in.forgotten {
			in.forgotten = true
			p.note("forgotten")
		}
		return false
	}
	return true
}

// notFound answers InvalidInstanceID.NotFound when a call names an instance EC2 does not
// show now: not yet visible (EC2 API reference, "Eventual consistency", names
// DescribeInstances and TerminateInstances among the calls that meet it), or forgotten
// (API reference, TerminateInstances: "Terminated instances remain visible after
// termination (for approximately one hour)"). One such id fails the whole call
// (TerminateInstances: "If you specify multiple instances and the request fails (for
// example, because of a single incorrect instance ID), none of the instances are
// terminated"; DescribeInstances: "If you specify an instance ID that is not valid, an
// error is returned").
func (p *faultProxy) notFound(ids []string) (int, http.Header, []byte, bool) {
	if len(ids) == 0 {
		return 0, nil, nil, false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	var hidden []string
	for _, id := range ids {
		if !p.shown(id, now) {
			hidden = append(hidden, id)
		}
	}
	if len(hidden) == 0 {
		return 0, nil, nil, false
	}
	msg := fmt.Sprintf("The instance ID '%s' does not exist", hidden[0])
	if len(hidden) > 1 {
		msg = fmt.Sprintf("The instance IDs '%s' do not exist", strings.Join(hidden, ", "))
	}
	st, h, b := ec2Error(400, "InvalidInstanceID.NotFound", msg)
	return st, h, b, true
}

// askedIDs are the ids of a query-form list (InstanceId.1, InstanceId.2, …).
func askedIDs(form url.Values, name string) []string {
	var ids []string
	for k, vs := range form {
		if strings.HasPrefix(k, name+".") && len(vs) > 0 {
			ids = append(ids, vs[0])
		}
	}
	sort.Strings(ids)
	return ids
}

// describeInstances: by id, an instance EC2 does not show fails the call; otherwise
// (filters, or none) it is left out of the answer, as are forgotten instances. States
// seen in the answer tell the model which instances have terminated.
func (p *faultProxy) describeInstances(req *proxyReq) (int, http.Header, []byte, error) {
	if st, h, b, refused := p.notFound(askedIDs(req.form, "InstanceId")); refused {
		return st, h, b, nil
	}
	st, h, body, err := p.forward(req)
	if err != nil || st != http.StatusOK {
		return st, h, body, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	body = filterDescribe(body, func(id, state string) bool {
		if in := p.insts[id]; in != nil && in.terminatedAt.IsZero() && (state == "terminated" || state == "shutting-down") {
			in.terminatedAt = now
		}
		return p.shown(id, now)
	})
	return st, h, body, nil
}

func (p *faultProxy) noteTerminated(ids []string, at time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, id := range ids {
		if in := p.insts[id]; in != nil && in.terminatedAt.IsZero() {
			in.terminatedAt = at
		}
	}
}

// createTagsLate answers CreateTags at once and applies it a lag later: EC2's tags
// appear seconds after the call that wrote them (EC2 API reference, "Eventual
// consistency").
func (p *faultProxy) createTagsLate(req *proxyReq) (int, http.Header, []byte, error) {
	p.mu.Lock()
	p.tagQueue = append(p.tagQueue, lateWrite{at: p.now().Add(p.draw(p.ec2.tagLag)), method: req.r.Method,
		uri: req.r.URL.RequestURI(), header: req.r.Header.Clone(), host: req.r.Host, body: req.body})
	p.note("late-tag")
	p.mu.Unlock()
	return http.StatusOK, http.Header{"Content-Type": {"text/xml;charset=UTF-8"}},
		[]byte(`<?xml version="1.0" encoding="UTF-8"?><CreateTagsResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">` +
			`<requestId>late-tags</requestId><return>true</return></CreateTagsResponse>`), nil
}

// flushTags applies the tag writes whose time has come, before the request at hand is
// answered: whoever asks after the lag sees them.
func (p *faultProxy) flushTags() {
	p.mu.Lock()
	now := p.now()
	var due, later []lateWrite
	for _, w := range p.tagQueue {
		if now.Before(w.at) {
			later = append(later, w)
		} else {
			due = append(due, w)
		}
	}
	p.tagQueue = later
	p.mu.Unlock()
	for _, w := range due {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, _, _, _ = p.send(ctx, w.method, w.uri, w.header, w.host, w.body)
		cancel()
	}
}

// refuseRegion makes region refuse every EC2 call from from until until.
func (p *faultProxy) refuseRegion(region string, from, until time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ec2.refusal = regionRefusal{region: region, from: from, until: until}
}

// filterDescribe rewrites a DescribeInstances answer: keep decides each instance (by id
// and state name), and a reservation left with no instance is dropped. It works on the
// text, so the rest of the answer (and the client token serializeEC2 adds) is kept as
// the emulator wrote it.
func filterDescribe(body []byte, keep func(id, state string) bool) []byte {
	s := string(body)
	lo, hi, ok := inner(s, "reservationSet")
	if !ok {
		return body
	}
	var b strings.Builder
	b.WriteString(s[:lo])
	res := s[lo:hi]
	for _, span := range topItems(res) {
		block := res[span[0]:span[1]]
		ilo, ihi, ok := inner(block, "instancesSet")
		if !ok {
			b.WriteString(block)
			continue
		}
		var kept []string
		for _, is := range topItems(block[ilo:ihi]) {
			inst := block[ilo+is[0] : ilo+is[1]]
			if keep(firstSubmatch(instanceIDInAnswer, inst), firstSubmatch(instanceStateName, inst)) {
				kept = append(kept, inst)
			}
		}
		if len(kept) > 0 {
			b.WriteString(block[:ilo] + strings.Join(kept, "") + block[ihi:])
		}
	}
	b.WriteString(s[hi:])
	return []byte(b.String())
}

var (
	itemTag           = regexp.MustCompile(`<(/?)item>`)
	instanceStateName = regexp.MustCompile(`(?s)<instanceState>.*?<name>([^<]*)</name>`)
)

// inner is where the content of the element name starts and ends in s (its first
// opening and last closing tag).
func inner(s, name string) (lo, hi int, ok bool) {
	i := strings.Index(s, "<"+name+">")
	j := strings.LastIndex(s, "</"+name+">")
	if i < 0 || j < i {
		return 0, 0, false
	}
	return i + len(name) + 2, j, true
}

// topItems are the spans of the outermost <item>…</item> elements of s.
func topItems(s string) [][2]int {
	var spans [][2]int
	depth, start := 0, 0
	for _, m := range itemTag.FindAllStringSubmatchIndex(s, -1) {
		if m[3] > m[2] { // </item>
			depth--
			if depth == 0 {
				spans = append(spans, [2]int{start, m[1]})
			}
			continue
		}
		if depth == 0 {
			start = m[0]
		}
		depth++
	}
	return spans
}

func firstSubmatch(re *regexp.Regexp, s string) string {
	if m := re.FindStringSubmatch(s); m != nil {
		return m[1]
	}
	return ""
}

// testClock is the model's time in the proxy's own tests: it moves only when told.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// ec2Via is an EC2 client on endpoint that signs for region and makes each call once.
func ec2Via(a *testAWS, endpoint, region string) *ec2.Client {
	cfg := a.cfg.Copy()
	cfg.BaseEndpoint = aws.String(endpoint)
	cfg.Region = region
	cfg.RetryMaxAttempts = 1
	return ec2.NewFromConfig(cfg)
}

func launchInput(token, instanceType string) *ec2.RunInstancesInput {
	return &ec2.RunInstancesInput{ImageId: aws.String("ami-1"), InstanceType: ec2types.InstanceType(instanceType),
		MinCount: aws.Int32(1), MaxCount: aws.Int32(1), ClientToken: aws.String(token)}
}

// wantCode fails the test unless err is the EC2 error code with HTTP status.
func wantCode(t *testing.T, what string, err error, code string, status int) {
	t.Helper()
	var re interface{ HTTPStatusCode() int }
	if apiErrorCode(err) != code || !errors.As(err, &re) || re.HTTPStatusCode() != status {
		t.Fatalf("%s: got %v, want %s (HTTP %d)", what, err, code, status)
	}
}

// describedIn lists the ids of a DescribeInstances answer.
func describedIn(out *ec2.DescribeInstancesOutput) []string {
	var ids []string
	for _, res := range out.Reservations {
		for _, inst := range res.Instances {
			ids = append(ids, aws.ToString(inst.InstanceId))
		}
	}
	return ids
}

// The fault proxy's EC2, with real SDK calls on kumo: what AWS documents and kumo does
// not do, on the proxy's clean side (no random faults is not kinder than AWS).
func TestFaultProxyModelsEC2(t *testing.T) {
	a := newTestAWS(t)
	if a.backend.name != "kumo" {
		t.Skipf("the fault proxy is exercised on kumo; backend is %s", a.backend.name)
	}
	clock := &testClock{t: time.Now()}
	p := newFaultProxy(a.backend.endpoint, 0, 3)
	defer p.Close()
	p.now = clock.now
	p.ec2 = ec2Settings{visibleLag: [2]time.Duration{2 * time.Second, 2 * time.Second},
		tagLag: [2]time.Duration{time.Second, time.Second}, forgetAfter: 30 * time.Second}
	ec := ec2Via(a, p.CleanURL(), "us-east-1")
	token := uniqueName("tok")
	id := proxyShowsNewInstanceLate(t, ec, clock, token)
	proxyShowsTagsLate(t, ec, clock, id)
	proxyKeepsClientTokens(t, ec, token, id)
	proxyForgetsTerminated(t, ec, clock, id)
	proxyRefusesRegion(t, a, p, clock)

	_, injected := p.counts()
	for _, kind := range []string{"visibility-lag", "late-tag", "idempotent-mismatch", "idempotent-terminated", "forgotten", "refused-region"} {
		if injected[kind] == 0 {
			t.Errorf("no %s counted: %v", kind, injected)
		}
	}
}

// An instance RunInstances returned is not found by id, nor by its client token, until
// the lag has passed.
func proxyShowsNewInstanceLate(t *testing.T, ec *ec2.Client, clock *testClock, token string) string {
	ctx := context.Background()
	out, err := ec.RunInstances(ctx, launchInput(token, "t3.micro"))
	if err != nil {
		t.Fatal(err)
	}
	id := aws.ToString(out.Instances[0].InstanceId)
	_, err = ec.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
	wantCode(t, "DescribeInstances by id right after the launch", err, "InvalidInstanceID.NotFound", 400)
	if inst, err := findByToken(ctx, ec, token); err != nil || inst != nil {
		t.Fatalf("by client token right after the launch: %v, %v; want not found", inst, err)
	}
	all, err := ec.DescribeInstances(ctx, &ec2.DescribeInstancesInput{})
	if err != nil || slices.Contains(describedIn(all), id) {
		t.Fatalf("DescribeInstances with no filter right after the launch: %v, %v; want it left out", err, describedIn(all))
	}
	clock.advance(2 * time.Second)
	byID, err := ec.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
	if err != nil || !slices.Equal(describedIn(byID), []string{id}) {
		t.Fatalf("by id after the lag: %v, %v", err, describedIn(byID))
	}
	if inst, err := findByToken(ctx, ec, token); err != nil || inst == nil || aws.ToString(inst.InstanceId) != id {
		t.Fatalf("by client token after the lag: %v, %v; want %s", inst, err, id)
	}
	return id
}

// A tag CreateTags wrote shows a lag after the call.
func proxyShowsTagsLate(t *testing.T, ec *ec2.Client, clock *testClock, id string) {
	ctx := context.Background()
	if _, err := ec.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{id},
		Tags: []ec2types.Tag{{Key: aws.String(tagExitCode), Value: aws.String("0")}}}); err != nil {
		t.Fatal(err)
	}
	tagged := func() bool {
		out, err := ec.DescribeTags(ctx, &ec2.DescribeTagsInput{Filters: []ec2types.Filter{
			{Name: aws.String("resource-id"), Values: []string{id}}}})
		if err != nil {
			t.Fatal(err)
		}
		for _, tag := range out.Tags {
			if aws.ToString(tag.ResourceId) == id && aws.ToString(tag.Key) == tagExitCode {
				return true
			}
		}
		return false
	}
	if tagged() {
		t.Fatal("the tag showed at once")
	}
	clock.advance(time.Second)
	if !tagged() {
		t.Fatal("the tag did not show after the lag")
	}
}

// One token: the same parameters get the first instance, others a mismatch, and once the
// instance has terminated, IdempotentInstanceTerminated.
func proxyKeepsClientTokens(t *testing.T, ec *ec2.Client, token, id string) {
	ctx := context.Background()
	again, err := ec.RunInstances(ctx, launchInput(token, "t3.micro"))
	if err != nil || aws.ToString(again.Instances[0].InstanceId) != id {
		t.Fatalf("the same token and parameters again: %v; want instance %s", err, id)
	}
	_, err = ec.RunInstances(ctx, launchInput(token, "t3.small"))
	wantCode(t, "the same token with another instance type", err, "IdempotentParameterMismatch", 400)
	if _, err := ec.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{id}}); err != nil {
		t.Fatal(err)
	}
	_, err = ec.RunInstances(ctx, launchInput(token, "t3.micro"))
	wantCode(t, "the token of a terminated instance", err, "IdempotentInstanceTerminated", 400)
}

// A terminated instance is shown until the forget time has passed, then neither by id
// nor without a filter.
func proxyForgetsTerminated(t *testing.T, ec *ec2.Client, clock *testClock, id string) {
	ctx := context.Background()
	clock.advance(29 * time.Second)
	out, err := ec.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
	if err != nil || len(out.Reservations) != 1 || out.Reservations[0].Instances[0].State.Name != ec2types.InstanceStateNameTerminated {
		t.Fatalf("a terminated instance before the forget time: %v, %v; want it shown terminated", err, describedIn(out))
	}
	clock.advance(time.Second)
	_, err = ec.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
	wantCode(t, "DescribeInstances by id of a forgotten instance", err, "InvalidInstanceID.NotFound", 400)
	all, err := ec.DescribeInstances(ctx, &ec2.DescribeInstancesInput{})
	if err != nil || slices.Contains(describedIn(all), id) {
		t.Fatalf("DescribeInstances with no filter after the forget time: %v; want %s left out", err, id)
	}
}

// A region refuses every EC2 call in its window, on both sides of the proxy; the others
// answer.
func proxyRefusesRegion(t *testing.T, a *testAWS, p *faultProxy, clock *testClock) {
	ctx := context.Background()
	p.refuseRegion("eu-west-1", clock.now(), clock.now().Add(10*time.Second))
	for _, endpoint := range []string{p.CleanURL(), p.URL()} {
		_, err := ec2Via(a, endpoint, "eu-west-1").DescribeInstances(ctx, &ec2.DescribeInstancesInput{})
		wantCode(t, "eu-west-1 in its window", err, "UnauthorizedOperation", 403)
		if _, err := ec2Via(a, endpoint, "us-east-1").DescribeInstances(ctx, &ec2.DescribeInstancesInput{}); err != nil {
			t.Fatalf("us-east-1 while eu-west-1 refuses: %v", err)
		}
	}
	clock.advance(10 * time.Second)
	if _, err := ec2Via(a, p.CleanURL(), "eu-west-1").DescribeInstances(ctx, &ec2.DescribeInstancesInput{}); err != nil {
		t.Fatalf("eu-west-1 after its window: %v", err)
	}
}

// A quota or capacity refusal is a fault of its own on the faulty side; a token that has
// launched gets its instance, never a refusal.
func TestFaultProxyRefusesLaunchesForQuota(t *testing.T) {
	a := newTestAWS(t)
	if a.backend.name != "kumo" {
		t.Skipf("the fault proxy is exercised on kumo; backend is %s", a.backend.name)
	}
	ctx := context.Background()
	p := newFaultProxy(a.backend.endpoint, 1, 4)
	defer p.Close()
	p.kinds = quotaCodes
	ec := ec2Via(a, p.URL(), "us-east-1")
	token := uniqueName("tok")
	_, err := ec.RunInstances(ctx, launchInput(token, "t3.micro"))
	code := apiErrorCode(err)
	wantCode(t, "a launch at fault rate 1", err, code, 400)
	if quotaMessages[code] == "" {
		t.Fatalf("a launch at fault rate 1 got %v; want one of %v", err, quotaCodes)
	}
	out, err := ec2Via(a, p.CleanURL(), "us-east-1").RunInstances(ctx, launchInput(token, "t3.micro"))
	if err != nil {
		t.Fatalf("the same launch on the clean side: %v", err)
	}
	again, err := ec.RunInstances(ctx, launchInput(token, "t3.micro"))
	if err != nil || aws.ToString(again.Instances[0].InstanceId) != aws.ToString(out.Instances[0].InstanceId) {
		t.Fatalf("a launched token on the faulty side: %v; want its instance", err)
	}
	if _, injected := p.counts(); injected["quota:"+code] != 1 {
		t.Fatalf("injected %v; want quota:%s 1", injected, code)
	}
}
