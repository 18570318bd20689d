package main

import (
	"context"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// `spawn cancel` that finds the sweep completed once it holds the lease leaves it
// COMPLETED (and hands the lease back).
func TestCancelLeavesCompletedSweep(t *testing.T) {
	st := completesOnCancelStore{newFakeStore()}
	sw := &sweep{SweepID: "sw-cancel-completed", Status: statusRunning, MaxConcurrent: 1, PollInterval: "1s", TotalParams: 1,
		NextToLaunch: 1, Launched: 1, Region: "us-east-1"}
	if err := st.createSweep(context.Background(), sw); err != nil {
		t.Fatal(err)
	}
	o := newTestOrchestrator(st, everyRegion(emptyEC2{}), nil)
	got, already, err := o.cancelRun(context.Background(), sw.SweepID)
	if err != nil {
		t.Fatalf("cancel: %v", err)
	}
	stored, err := st.loadSweep(context.Background(), sw.SweepID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != statusCompleted || stored.Status != statusCompleted || stored.LeaseOwner != "" || stored.Counts.Cancelled != 0 {
		t.Fatalf("cancel answered %s (already %v); stored %s, lease %q, counts %+v; want COMPLETED, released, nothing cancelled",
			got.Status, already, stored.Status, stored.LeaseOwner, stored.Counts)
	}
}

// TestCancelFindsInstancesByTag: cancel terminates instances of the sweep that no record
// names, found by their tags, and never one of another sweep, even where the backend
// ignores the tag filter (kumo: nothing is found by tag, nothing foreign is touched).
func TestCancelFindsInstancesByTag(t *testing.T) {
	a := newTestAWS(t)
	store := newTestStore(t)
	api := ec2.NewFromConfig(a.cfg)
	image := testImage(t, api)
	ctx := context.Background()
	sw := &sweep{SweepID: uniqueName("sw"), SweepName: "cancel", UserID: "arn:aws:iam::000000000000:user/test",
		Status: statusRunning, MaxConcurrent: 2, PollInterval: "1s", TotalParams: 4, NextToLaunch: 2,
		Region: a.cfg.Region, AWSAccountID: "000000000000"}
	if err := store.createSweep(ctx, sw); err != nil {
		t.Fatal(err)
	}
	run := func(sweepID string) string {
		out, err := api.RunInstances(ctx, &ec2.RunInstancesInput{
			ImageId: aws.String(image), InstanceType: ec2types.InstanceTypeT3Micro, MinCount: aws.Int32(1), MaxCount: aws.Int32(1),
			TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeInstance, Tags: []ec2types.Tag{
				{Key: aws.String("spawn:sweep-id"), Value: aws.String(sweepID)},
				{Key: aws.String("spawn:managed"), Value: aws.String("true")},
			}}},
		})
		if err != nil {
			t.Fatalf("RunInstances: %v", err)
		}
		return aws.ToString(out.Instances[0].InstanceId)
	}
	ours := []string{run(sw.SweepID), run(sw.SweepID)}
	foreign := run(uniqueName("other"))
	o := newTestOrchestrator(store, everyRegion(api), nil)
	o.owner = "cancel-test"
	got, already, err := o.cancelRun(ctx, sw.SweepID)
	if err != nil || already || got.Status != statusCancelled {
		t.Fatalf("cancel: %v, already %v, status %v", err, already, got)
	}
	if got.Counts.Cancelled != 4 || got.LeaseOwner != "" {
		t.Errorf("counts %+v, lease %q", got.Counts, got.LeaseOwner)
	}
	states := map[string]ec2types.InstanceStateName{}
	insts, err := describeInstances(ctx, api, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, inst := range insts {
		states[aws.ToString(inst.InstanceId)] = inst.State.Name
	}
	if !liveState(states[foreign]) {
		t.Errorf("an instance of another sweep was terminated: %s", states[foreign])
	}
	if !a.keepsEC2Tags() {
		if len(o.terminated) != 0 {
			t.Errorf("terminated %v on a backend that ignores tags", o.terminated)
		}
		t.Logf("backend %s ignores EC2 tags: only checked that nothing foreign was terminated", a.backend.name)
		return
	}
	for _, id := range ours {
		if liveState(states[id]) {
			t.Errorf("instance %s of the sweep is still %s", id, states[id])
		}
	}
	if len(o.terminated) != 2 {
		t.Errorf("terminated %v, want the sweep's 2", o.terminated)
	}
}
