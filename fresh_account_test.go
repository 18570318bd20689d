package main

import (
	"context"
	"strings"
	"testing"
	"time"
)

// What a fresh AWS account does to the engine (issue "A fresh AWS account works on the
// first try"): refusals IAM's eventual consistency explains wait, on one clock, for a
// bounded time; past it the item fails saying what to do.

// runRefused steps a one-item sweep whose launches EC2 refuses refusals times with code
// and msg, every 10 s for steps steps, and returns the record and when (in steps) the
// item ended.
func runRefused(t *testing.T, code, msg string, refusals, steps int, jitter float64) (*sweep, *refusingEC2, int) {
	t.Helper()
	st := newFakeStore()
	sw := &sweep{SweepID: "sw-fresh", Status: statusRunning, MaxConcurrent: 1, TotalParams: 1, Region: "us-east-1", PollInterval: "10s"}
	if err := st.createSweep(context.Background(), sw); err != nil {
		t.Fatal(err)
	}
	api := &refusingEC2{code: code, msg: msg, refusals: refusals}
	clk := &napClock{now: time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)}
	o := newTestOrchestrator(st, everyRegion(api), clk)
	o.items = []item{{Index: 0, InstanceType: "t3.micro", Spot: true}}
	o.jitter = func() float64 { return jitter }
	var got *sweep
	ended := -1
	for i := range steps {
		cur, _ := st.loadSweep(context.Background(), "sw-fresh")
		if err := o.step(context.Background(), cur); err != nil {
			t.Fatalf("step: %v", err)
		}
		got, _ = st.loadSweep(context.Background(), "sw-fresh")
		if ended < 0 && got.Counts.Failed+api.launched > 0 {
			ended = i
		}
		clk.now = clk.now.Add(10 * time.Second)
	}
	return got, api, ended
}

// The wait for an instance profile is time-based: a name EC2 never knows fails its item
// about 5 minutes after its first refusal, whatever the backoff (with full jitter the
// tenth refusal comes long after that).
func TestInstanceProfileWaitIsBoundedInTime(t *testing.T) {
	const msg = "Value (spawnd-role) for parameter iamInstanceProfile.name is invalid. Invalid IAM Instance Profile name"
	got, _, ended := runRefused(t, "InvalidParameterValue", msg, 1000, 90, 1)
	if got.Counts.Failed != 1 {
		t.Fatalf("a profile EC2 never knows: counts %+v, want the item failed", got.Counts)
	}
	if at := time.Duration(ended) * 10 * time.Second; at < propagationLimitIAM || at > propagationLimitIAM+3*time.Minute {
		t.Errorf("the item failed %s after the first refusal, want about %s", at, propagationLimitIAM)
	}
}

// AuthFailure.ServiceLinkedRoleCreationNotPermitted right after deploy: the launch waits
// with the reason in status and runs once EC2 may create (or finds) the Spot role; a
// role EC2 never gets fails the item saying how to create it.
func TestSpotServiceLinkedRoleRefusalWaitsThenSaysWhatToDo(t *testing.T) {
	const msg = "The provided credentials do not have permission to create the service-linked role for EC2 Spot Instances."
	got, api, _ := runRefused(t, codeSLRNotPermitted, msg, 4, 60, 0)
	if api.launched != 1 || got.Counts.Failed != 0 {
		t.Fatalf("a Spot role usable after 4 refusals: launched %d, counts %+v; want it launched", api.launched, got.Counts)
	}
	st := newFakeStore()
	sw := &sweep{SweepID: "sw-slr", Status: statusRunning, MaxConcurrent: 1, TotalParams: 1, Region: "us-east-1", PollInterval: "10s"}
	if err := st.createSweep(context.Background(), sw); err != nil {
		t.Fatal(err)
	}
	never := &refusingEC2{code: codeSLRNotPermitted, msg: msg, refusals: 1 << 20}
	clk := &napClock{now: time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)}
	o := newTestOrchestrator(st, everyRegion(never), clk)
	o.items = []item{{Index: 0, InstanceType: "t3.micro", Spot: true}}
	o.jitter = func() float64 { return 0 }
	sawReason := false
	for range 60 {
		cur, _ := st.loadSweep(context.Background(), "sw-slr")
		if err := o.step(context.Background(), cur); err != nil {
			t.Fatal(err)
		}
		cur, _ = st.loadSweep(context.Background(), "sw-slr")
		if len(cur.Alive) == 1 && strings.HasPrefix(cur.Alive[0].WaitReason, slrWaitReason) {
			sawReason = true
		}
		clk.now = clk.now.Add(10 * time.Second)
	}
	end, _ := st.loadSweep(context.Background(), "sw-slr")
	if !sawReason || end.Counts.Failed != 1 {
		t.Fatalf("a Spot role never usable: wait reason seen %v, counts %+v", sawReason, end.Counts)
	}
	recs, err := st.listInstances(context.Background(), "sw-slr")
	if err != nil || len(recs) != 1 || !strings.Contains(recs[0].ErrorMessage, "create-service-linked-role --aws-service-name spot.amazonaws.com") {
		t.Fatalf("the failed item's message does not say how to create the role: %v %+v", err, recs)
	}
}

// UnauthorizedOperation right after a policy update waits briefly; one that lasts is the
// policy itself and fails the item after propagationLimitAuth.
func TestUnauthorizedOperationWaitsBriefly(t *testing.T) {
	msg := "You are not authorized to perform this operation. Encoded authorization failure message: x"
	got, api, _ := runRefused(t, "UnauthorizedOperation", msg, 2, 30, 0)
	if api.launched != 1 || got.Counts.Failed != 0 {
		t.Fatalf("a policy visible after 2 refusals: launched %d, counts %+v", api.launched, got.Counts)
	}
	got, _, ended := runRefused(t, "UnauthorizedOperation", msg, 1000, 60, 0)
	if got.Counts.Failed != 1 || time.Duration(ended)*10*time.Second > propagationLimitAuth+2*time.Minute {
		t.Fatalf("a lasting refusal: counts %+v, ended at step %d", got.Counts, ended)
	}
}

// The resolve:ssm: names the parser accepts are exactly those the orchestrator's policy
// lets it read: AWS's public parameters and the account's own under /spawn/.
func TestResolveSSMNamesMatchThePolicy(t *testing.T) {
	n := examplePolicyNames()
	for name, ok := range map[string]bool{
		"/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64":              true,
		"/aws/service/canonical/ubuntu/server/24.04/stable/current/amd64/hvm/ebs-gp3/ami-id": true,
		"/spawn/my-ami":     true,
		"/my/ami":           false,
		"/aws/servicex/ami": false,
		"/Spawn/ami":        false,
	} {
		_, err := parseParamFile("p.json", []byte(`{"params": [{"command": "x", "ttl": "1h", "ami": "resolve:ssm:`+name+`"}]}`))
		if (err == nil) != ok {
			t.Errorf("resolve:ssm:%s: accepted %v, want %v (%v)", name, err == nil, ok, err)
		}
		if err != nil && !strings.Contains(err.Error(), "/spawn/") {
			t.Errorf("resolve:ssm:%s: the error does not say which names are allowed: %v", name, err)
		}
		allowed := false
		for _, st := range n.orchestratorPolicy().Statement {
			if !slicesContain(st.Action, "ssm:GetParameters") {
				continue
			}
			for _, res := range st.Resource {
				_, pattern, _ := strings.Cut(res, ":parameter")
				if strings.HasSuffix(pattern, "*") && strings.HasPrefix(name, strings.TrimSuffix(pattern, "*")) {
					allowed = true
				}
			}
		}
		if allowed != ok {
			t.Errorf("resolve:ssm:%s: the policy allows reading it: %v, the parser accepts it: %v", name, allowed, ok)
		}
	}
}
