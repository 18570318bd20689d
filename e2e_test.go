package main

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/rs/zerolog"
)

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

// testImage is an AMI the backend accepts: moto checks AMI ids, kumo does not list any.
func testImage(t testing.TB, api *ec2.Client) string {
	t.Helper()
	out, err := api.DescribeImages(context.Background(), &ec2.DescribeImagesInput{})
	if err == nil && len(out.Images) > 0 {
		return aws.ToString(out.Images[0].ImageId)
	}
	return "ami-12345678"
}

func createTestTables(t testing.TB, a *testAWS) (*dynamoStore, string, string) {
	t.Helper()
	db := dynamodb.NewFromConfig(a.cfg)
	table, itable := uniqueName("sweeps"), uniqueName("instances")
	for _, in := range []*dynamodb.CreateTableInput{sweepTableInput(table), instancesTableInput(itable)} {
		if _, err := db.CreateTable(context.Background(), in); err != nil {
			t.Fatalf("CreateTable %s: %v", aws.ToString(in.TableName), err)
		}
	}
	return newDynamoStore(db, table, itable), table, itable
}

// TestEngineCompletesOnEmulator runs a 20-item sweep at max_concurrent 3 with the real
// DynamoDB store and the real EC2 client on the emulator, while the test plays the
// workload: it ends each instance shortly after launch (on moto it first reports exit
// code 0 by tag, as the instance's script does).
func TestEngineCompletesOnEmulator(t *testing.T) {
	a := newTestAWS(t)
	store, _, _ := createTestTables(t, a)
	real := ec2.NewFromConfig(a.cfg)
	image := testImage(t, real)
	api := newCountingEC2(real)
	const items, maxConc = 20, 3
	sw := &sweep{
		SweepID: uniqueName("sw"), SweepName: "integration", UserID: "arn:aws:iam::000000000000:user/test", Status: statusInitializing, MaxConcurrent: maxConc,
		LaunchDelay: "0s", PollInterval: "250ms", TotalParams: items, Region: a.cfg.Region, AWSAccountID: "000000000000",
	}
	if err := store.createSweep(context.Background(), sw); err != nil {
		t.Fatal(err)
	}
	var list []item
	for i := range items {
		list = append(list, item{Index: i, InstanceType: "t3.micro"})
	}
	o := &orchestrator{
		store:  store,
		ec2For: func(context.Context, string) (ec2API, error) { return api, nil },
		launchInput: func(sw *sweep, it item, attempt int) *ec2.RunInstancesInput {
			in := testLaunchInput(sw, it, attempt)
			in.ImageId = aws.String(image)
			in.TagSpecifications[0].Tags = append(in.TagSpecifications[0].Tags,
				ec2types.Tag{Key: aws.String("spawn:managed"), Value: aws.String("true")})
			return in
		},
		loadItems: func(context.Context, *sweep) ([]item, error) { return list, nil },
		log:       zerolog.Nop(),
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- o.run(ctx, sw.SweepID, time.Time{}) }()

	// The workload: end every instance ~300 ms after it was launched.
	seen := map[string]time.Time{}
	var runErr error
loop:
	for {
		select {
		case runErr = <-done:
			break loop
		case <-time.After(100 * time.Millisecond):
		}
		launched, _, _, _ := api.snapshot()
		for _, id := range launched {
			first, ok := seen[id]
			if !ok {
				seen[id] = time.Now()
				continue
			}
			if first.IsZero() || time.Since(first) < 300*time.Millisecond {
				continue
			}
			if a.keepsEC2Tags() {
				if _, err := real.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{id},
					Tags: []ec2types.Tag{{Key: aws.String(exitCodeTag), Value: aws.String("0")}}}); err != nil {
					t.Fatalf("CreateTags: %v", err)
				}
			}
			if _, err := real.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{id}}); err != nil {
				t.Fatalf("TerminateInstances: %v", err)
			}
			api.ended(id)
			seen[id] = time.Time{}
		}
	}
	if runErr != nil {
		t.Fatalf("run: %v", runErr)
	}
	got, err := store.loadSweep(context.Background(), sw.SweepID)
	if err != nil {
		t.Fatal(err)
	}
	launched, _, maxAlive, doubled := api.snapshot()
	if got.Status != statusCompleted || len(got.Alive) != 0 || got.LeaseOwner != "" {
		t.Fatalf("status %s, alive %d, lease %q; want COMPLETED, none, released", got.Status, len(got.Alive), got.LeaseOwner)
	}
	if len(launched) != items || len(doubled) > 0 {
		t.Errorf("%d instances launched for %d items (tokens with two instances: %v)", len(launched), items, doubled)
	}
	if maxAlive > maxConc {
		t.Errorf("%d instances alive at once, max_concurrent %d", maxAlive, maxConc)
	}
	recs, err := store.listInstances(context.Background(), sw.SweepID)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != items {
		t.Fatalf("%d instance items, want %d", len(recs), items)
	}
	want := outcomeUnknown // kumo keeps no tags: the instances end without a report
	if a.keepsEC2Tags() {
		want = outcomeSucceeded
	}
	for _, rec := range recs {
		if rec.Outcome != want || rec.InstanceID == "" {
			t.Errorf("index %d: outcome %q (instance %q), want %s", rec.Index, rec.Outcome, rec.InstanceID, want)
		}
	}
	c := got.Counts
	if c.Succeeded+c.Unknown != items || c.Pending != 0 || c.Running != 0 {
		t.Errorf("counts %+v", c)
	}
	if got.Launched != items {
		t.Errorf("launched %d, want %d", got.Launched, items)
	}
	fmt.Fprintf(testWriter{t}, "backend %s: %d launches, at most %d alive\n", a.backend.name, len(launched), maxAlive)
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(b []byte) (int, error) { w.t.Log(string(b)); return len(b), nil }
