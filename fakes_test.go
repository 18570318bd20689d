package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
	"github.com/rs/zerolog"
)

// The engine's fakes: a store with dynamoStore's fencing, small EC2 and store fakes
// that each pin one case, wrappers that count what reaches a real client, and the
// constructor of a test orchestrator.

// fakeStore is a sweepStore in memory with the same fencing as dynamoStore; on a sim it
// is a scheduling point and may inject transient errors.
type fakeStore struct {
	sim      *sim // nil: no scheduling, no faults
	mu       sync.Mutex
	sweeps   map[string]*sweep
	leases   map[string]leaseBeat // the lease items, by sweep id
	inst     map[string]map[int]instanceRecord
	faults   float64 // probability of a transient error per call
	check    func(old, new *sweep)
	rng      *rand.Rand
	putCalls int
}

func newFakeStore() *fakeStore {
	return &fakeStore{sweeps: map[string]*sweep{}, leases: map[string]leaseBeat{}, inst: map[string]map[int]instanceRecord{}}
}

// stored is a record as DynamoDB keeps it: the lease's times are in the lease item.
func stored(s *sweep) *sweep {
	c := copySweep(s)
	c.LeaseExpiresAt, c.LeaseRenewedAt, c.LastStepAt = time.Time{}, time.Time{}, time.Time{}
	return c
}

// loaded is a stored record with its lease item applied, as dynamoStore.loadSweep reads it.
func (f *fakeStore) loaded(s *sweep) *sweep {
	c := copySweep(s)
	if b, ok := f.leases[s.SweepID]; ok {
		applyBeat(c, &b)
	} else {
		applyBeat(c, nil)
	}
	return c
}

func (f *fakeStore) beatLease(ctx context.Context, b leaseBeat) error {
	if err := f.enter(ctx); err != nil {
		return err
	}
	failBefore, failAfter := f.fault(), f.fault()
	if failBefore {
		return errTransient
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	id := strings.TrimSuffix(b.SweepID, leaseItemSuffix)
	if cur, ok := f.leases[id]; ok && cur.Epoch > b.Epoch {
		return errLeaseLost
	}
	f.leases[id] = b
	if failAfter {
		return errTransient
	}
	return nil
}

func copySweep(s *sweep) *sweep {
	c := *s
	c.Alive = slices.Clone(s.Alive)
	c.RetryQueue = slices.Clone(s.RetryQueue)
	c.AMIs = maps.Clone(s.AMIs)
	return &c
}

var errTransient = &smithy.GenericAPIError{Code: "InternalServerError", Message: "simulated transient error"}

// enter is the scheduling point and the fault injector of every store call.
func (f *fakeStore) enter(ctx context.Context) error {
	if f.sim == nil {
		return nil
	}
	return f.sim.point(ctx)
}

func (f *fakeStore) fault() bool {
	return f.rng != nil && f.faults > 0 && f.rng.Float64() < f.faults
}

func (f *fakeStore) createSweep(ctx context.Context, s *sweep) error {
	if err := f.enter(ctx); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.sweeps[s.SweepID]; ok {
		return errSweepExists
	}
	s.Version = 1
	f.sweeps[s.SweepID] = stored(s)
	if s.LeaseOwner != "" {
		f.leases[s.SweepID] = beatOf(s)
	}
	return nil
}

func (f *fakeStore) loadSweep(ctx context.Context, id string) (*sweep, error) {
	if err := f.enter(ctx); err != nil {
		return nil, err
	}
	if f.fault() {
		return nil, errTransient
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.sweeps[id]
	if !ok {
		return nil, errSweepNotFound
	}
	return f.loaded(s), nil
}

func (f *fakeStore) saveSweep(ctx context.Context, s *sweep) error {
	if err := f.enter(ctx); err != nil {
		return err
	}
	failBefore, failAfter := f.fault(), f.fault()
	if failBefore {
		return errTransient
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	cur, ok := f.sweeps[s.SweepID]
	if !ok {
		return errSweepNotFound
	}
	if cur.Version != s.Version {
		return errStaleVersion
	}
	next := stored(s)
	next.Version = cur.Version + 1
	if f.check != nil {
		f.check(cur, next)
	}
	f.sweeps[s.SweepID] = next
	if failAfter {
		// The write happened but the caller hears a timeout: its next save is stale.
		return errTransient
	}
	s.Version = next.Version
	return nil
}

func (f *fakeStore) requestCancel(ctx context.Context, id string) (*sweep, error) {
	if err := f.enter(ctx); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	cur, ok := f.sweeps[id]
	if !ok {
		return nil, errSweepNotFound
	}
	next := copySweep(cur)
	next.CancelRequested = true
	next.Version++
	if f.check != nil {
		f.check(cur, next)
	}
	f.sweeps[id] = next
	return copySweep(next), nil
}

func (f *fakeStore) putInstance(ctx context.Context, rec *instanceRecord) error {
	if err := f.enter(ctx); err != nil {
		return err
	}
	if f.fault() {
		return errTransient
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.putCalls++
	m := f.inst[rec.SweepID]
	if m == nil {
		m = map[int]instanceRecord{}
		f.inst[rec.SweepID] = m
	}
	if cur, ok := m[rec.Index]; ok && cur.Attempt > rec.Attempt {
		return nil // an earlier attempt never replaces a later one
	}
	m[rec.Index] = *rec
	return nil
}

func (f *fakeStore) listInstances(ctx context.Context, id string) ([]instanceRecord, error) {
	if err := f.enter(ctx); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []instanceRecord
	for _, r := range f.inst[id] {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Index < out[j].Index })
	return out, nil
}

func (f *fakeStore) listSweeps(context.Context, string, string, int, string) ([]sweep, string, error) {
	return nil, "", errors.New("not used by the engine")
}

// fakeItemSize is what DynamoDB counts for the item v marshals to.
func fakeItemSize(v any) int {
	av, err := attributevalue.MarshalMap(v)
	if err != nil {
		panic(err)
	}
	return itemSize(av)
}

// newTestOrchestrator is an orchestrator on store that gets its EC2 clients from ec2For,
// with clk for its clock (nil: the real clock), testLaunchInput and no log. A test sets
// any other field on what it returns.
func newTestOrchestrator(store sweepStore, ec2For func(context.Context, string) (ec2API, error), clk clock) *orchestrator {
	// Every orchestrator of a test keeps time on the test's one clock (as every Lambda
	// invocation does on AWS's): waits one invocation started, the next one continues.
	// An orchestrator given a clock of its own needs a clockName of its own.
	return &orchestrator{store: store, ec2For: ec2For, launchInput: testLaunchInput, clock: clk, clockName: "test", log: zerolog.Nop()}
}

// everyRegion answers every region with api.
func everyRegion(api ec2API) func(context.Context, string) (ec2API, error) {
	return func(context.Context, string) (ec2API, error) { return api, nil }
}

// itemsOf is a loadItems that answers items.
func itemsOf(items []item) func(context.Context, *sweep) ([]item, error) {
	return func(context.Context, *sweep) ([]item, error) { return items, nil }
}

// testLaunchInput is the launch of one item as the engine's fakes expect it: the client
// token is sweep-index-attempt and the first tag names the sweep.
func testLaunchInput(sw *sweep, it item, attempt int) *ec2.RunInstancesInput {
	token := fmt.Sprintf("%s-%d-%d", sw.SweepID, it.Index, attempt)
	if it.Candidate > 0 {
		token += fmt.Sprintf("/c%d", it.Candidate) // a fallback candidate's own token
	}
	in := &ec2.RunInstancesInput{
		ClientToken:  aws.String(token),
		InstanceType: ec2types.InstanceType(it.InstanceType),
		MinCount:     aws.Int32(1),
		MaxCount:     aws.Int32(1),
		TagSpecifications: []ec2types.TagSpecification{{
			ResourceType: ec2types.ResourceTypeInstance,
			Tags:         []ec2types.Tag{{Key: aws.String("spawn:sweep-id"), Value: aws.String(sw.SweepID)}, {Key: aws.String(tagManaged), Value: aws.String("true")}},
		}},
	}
	if it.Spot {
		in.InstanceMarketOptions = &ec2types.InstanceMarketOptionsRequest{MarketType: ec2types.MarketTypeSpot}
	}
	return in
}

// flipClock completes the sweep on its third sleep.
type flipClock struct {
	st    *fakeStore
	id    string
	naps  int
	slept time.Duration
}

func (c *flipClock) Now() time.Time { return time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(c.slept) }

func (c *flipClock) Sleep(ctx context.Context, d time.Duration) error {
	c.naps++
	c.slept += d
	if c.naps == 3 {
		sw, _ := c.st.loadSweep(ctx, c.id)
		sw.Status = statusCompleted
		return c.st.saveSweep(ctx, sw)
	}
	return nil
}

// landedStaleStore reports the first save that completes the sweep as stale although it
// was written, as the SDK does when an attempt's answer is lost and its retry of the
// same conditional write then fails the condition; a cancel comes in between.
type landedStaleStore struct {
	*fakeStore
	tripped bool
}

func (s *landedStaleStore) saveSweep(ctx context.Context, sw *sweep) error {
	if err := s.fakeStore.saveSweep(ctx, sw); err != nil || s.tripped || sw.Status != statusCompleted {
		return err
	}
	s.tripped = true
	if _, err := s.fakeStore.requestCancel(ctx, sw.SweepID); err != nil {
		return err
	}
	return errStaleVersion
}

// emptyEC2 is an EC2 with no instances, where launching is refused.
type emptyEC2 struct{}

func (emptyEC2) RunInstances(context.Context, *ec2.RunInstancesInput, ...func(*ec2.Options)) (*ec2.RunInstancesOutput, error) {
	return nil, fmt.Errorf("no launches in this test")
}

func (emptyEC2) DescribeInstances(context.Context, *ec2.DescribeInstancesInput, ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error) {
	return &ec2.DescribeInstancesOutput{}, nil
}

func (emptyEC2) TerminateInstances(context.Context, *ec2.TerminateInstancesInput, ...func(*ec2.Options)) (*ec2.TerminateInstancesOutput, error) {
	return &ec2.TerminateInstancesOutput{}, nil
}

// completesOnCancelStore completes the sweep right after the cancel is requested, as a
// holder that finished and died before handing back its lease would.
type completesOnCancelStore struct{ *fakeStore }

func (s completesOnCancelStore) requestCancel(ctx context.Context, id string) (*sweep, error) {
	got, err := s.fakeStore.requestCancel(ctx, id)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.sweeps[id]
	cur.Status, cur.Counts = statusCompleted, counts{Succeeded: cur.TotalParams}
	cur.LeaseOwner, cur.LeaseExpiresAt, cur.LeaseRenewedAt = "dead-holder", time.Now().Add(-time.Second), time.Now().Add(-time.Minute)
	cur.Version++
	return got, nil
}

// tagsLaterEC2 keeps tags out of DescribeInstances (as kumo does) and fails DescribeTags
// the first time, as a throttled or dropped call would.
type tagsLaterEC2 struct {
	emptyEC2
	mu       sync.Mutex
	tagCalls int
}

func (f *tagsLaterEC2) DescribeInstances(context.Context, *ec2.DescribeInstancesInput, ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error) {
	return &ec2.DescribeInstancesOutput{Reservations: []ec2types.Reservation{{Instances: []ec2types.Instance{{
		InstanceId: aws.String("i-tagged"),
		State:      &ec2types.InstanceState{Name: ec2types.InstanceStateNameTerminated},
	}}}}}, nil
}

func (f *tagsLaterEC2) DescribeTags(context.Context, *ec2.DescribeTagsInput, ...func(*ec2.Options)) (*ec2.DescribeTagsOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.tagCalls++; f.tagCalls == 1 {
		return nil, &smithy.GenericAPIError{Code: "RequestLimitExceeded", Message: "Request limit exceeded."}
	}
	tags := []ec2types.TagDescription{{ResourceId: aws.String("i-tagged"),
		ResourceType: ec2types.ResourceTypeInstance, Key: aws.String(tagExitCode), Value: aws.String("0")}}
	for _, t := range launchTagsOf("sw-tags-later") {
		tags = append(tags, ec2types.TagDescription{ResourceId: aws.String("i-tagged"), ResourceType: ec2types.ResourceTypeInstance, Key: t.Key, Value: t.Value})
	}
	return &ec2.DescribeTagsOutput{Tags: tags}, nil
}

// meteredStore counts the engine's writes: how many, their size as DynamoDB counts it,
// and the write units they cost. It wraps any sweepStore (the fake or dynamoStore).
type meteredStore struct {
	sweepStore
	writes, bytes, wrus int
	rrus                int // strongly consistent reads of the record and its lease item
}

func (m *meteredStore) loadSweep(ctx context.Context, id string) (*sweep, error) {
	s, err := m.sweepStore.loadSweep(ctx, id)
	if err == nil {
		m.rrus += rru(fakeItemSize(s)) + rru(fakeItemSize(beatOf(s)))
	}
	return s, err
}

func (m *meteredStore) beatLease(ctx context.Context, b leaseBeat) error {
	err := m.sweepStore.beatLease(ctx, b)
	if err == nil {
		m.count(&b)
	}
	return err
}

func (m *meteredStore) count(v any) {
	n := fakeItemSize(v)
	m.writes++
	m.bytes += n
	m.wrus += wru(n)
}

func (m *meteredStore) saveSweep(ctx context.Context, s *sweep) error {
	err := m.sweepStore.saveSweep(ctx, s)
	if err == nil {
		m.count(s)
	}
	return err
}

func (m *meteredStore) putInstance(ctx context.Context, rec *instanceRecord) error {
	err := m.sweepStore.putInstance(ctx, rec)
	if err == nil {
		m.count(rec)
	}
	return err
}

func (m *meteredStore) reset() { m.writes, m.bytes, m.wrus, m.rrus = 0, 0, 0, 0 }

// countingEC2 wraps a real EC2 client and keeps what the invariants need: the instances
// each RunInstances made, per client token, and which are still alive.
type countingEC2 struct {
	ec2API
	mu       sync.Mutex
	byToken  map[string]map[string]bool
	alive    map[string]bool
	launched []string
	maxAlive int
}

func newCountingEC2(api ec2API) *countingEC2 {
	return &countingEC2{ec2API: api, byToken: map[string]map[string]bool{}, alive: map[string]bool{}}
}

// DescribeTags passes through, so the engine can read exit-code tags on an emulator
// that keeps tags out of DescribeInstances (kumo).
func (c *countingEC2) DescribeTags(ctx context.Context, in *ec2.DescribeTagsInput, opts ...func(*ec2.Options)) (*ec2.DescribeTagsOutput, error) {
	td, ok := c.ec2API.(tagDescriber)
	if !ok {
		return nil, errors.New("the wrapped EC2 client has no DescribeTags")
	}
	return td.DescribeTags(ctx, in, opts...)
}

func (c *countingEC2) RunInstances(ctx context.Context, in *ec2.RunInstancesInput, opts ...func(*ec2.Options)) (*ec2.RunInstancesOutput, error) {
	out, err := c.ec2API.RunInstances(ctx, in, opts...)
	if err == nil {
		c.mu.Lock()
		tok := aws.ToString(in.ClientToken)
		if c.byToken[tok] == nil {
			c.byToken[tok] = map[string]bool{}
		}
		for _, inst := range out.Instances {
			id := aws.ToString(inst.InstanceId)
			if !c.byToken[tok][id] {
				c.byToken[tok][id] = true
				c.alive[id] = true
				c.launched = append(c.launched, id)
			}
		}
		c.maxAlive = max(c.maxAlive, len(c.alive))
		c.mu.Unlock()
	}
	return out, err
}

func (c *countingEC2) ended(id string) {
	c.mu.Lock()
	delete(c.alive, id)
	c.mu.Unlock()
}

func (c *countingEC2) snapshot() (launched []string, alive, maxAlive int, doubled []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for tok, ids := range c.byToken {
		if len(ids) > 1 {
			doubled = append(doubled, tok)
		}
	}
	return append([]string(nil), c.launched...), len(c.alive), c.maxAlive, doubled
}

// countingS3 counts the calls that reach S3.
type countingS3 struct {
	s3API
	gets, puts atomic.Int32
}

func (c *countingS3) GetObject(ctx context.Context, in *s3.GetObjectInput, optFns ...func(*s3.Options)) (*s3.GetObjectOutput, error) {
	c.gets.Add(1)
	return c.s3API.GetObject(ctx, in, optFns...)
}

func (c *countingS3) PutObject(ctx context.Context, in *s3.PutObjectInput, optFns ...func(*s3.Options)) (*s3.PutObjectOutput, error) {
	c.puts.Add(1)
	return c.s3API.PutObject(ctx, in, optFns...)
}

// countingDynamo sums the size of every item written through PutItem.
type countingDynamo struct {
	dynamoAPI
	puts, bytes int
}

func (c *countingDynamo) PutItem(ctx context.Context, in *dynamodb.PutItemInput, optFns ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error) {
	c.puts++
	c.bytes += itemSize(in.Item)
	return c.dynamoAPI.PutItem(ctx, in, optFns...)
}

// launchTagsOf are the tags every launch of sweepID gives its instance (ownedBy).
func launchTagsOf(sweepID string) []ec2types.Tag {
	return []ec2types.Tag{{Key: aws.String(tagSweepID), Value: aws.String(sweepID)}, {Key: aws.String(tagManaged), Value: aws.String("true")}}
}
