package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// A hand-written record (anyone who may write the sweep table can write one) names an
// instance that is not the sweep's: its tags are not spawn's. (An instance whose tags
// could not be read at all is left alone and looked at again next step.) The engine neither terminates it at
// its "TTL" nor when the sweep is cancelled, puts no alarm on it, and ends the item
// unknown, saying why.
func TestEngineLeavesAnInstanceNotItsOwnAlone(t *testing.T) {
	for _, cancel := range []bool{false, true} {
		t.Run(fmt.Sprintf("cancel=%v", cancel), func(t *testing.T) { leaveForeignAlone(t, cancel) })
	}
}

func leaveForeignAlone(t *testing.T, cancel bool) {
	st, o, clk, api, _ := reportFixture(t, 2)
	ctx := context.Background()
	out, err := api.RunInstances(ctx, &ec2.RunInstancesInput{ClientToken: aws.String("someone-elses"),
		TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeInstance,
			Tags: []ec2types.Tag{{Key: aws.String("Name"), Value: aws.String("prod-db")}}}}})
	if err != nil {
		t.Fatal(err)
	}
	foreign := aws.ToString(out.Instances[0].InstanceId)
	sw, err := st.loadSweep(ctx, "sw-r")
	if err != nil {
		t.Fatal(err)
	}
	sw.IdleTimeout = "10m"
	sw.NextToLaunch, sw.Launched = 1, 1
	sw.Alive = []aliveInstance{{Index: 0, Attempt: 1, InstanceID: foreign, Region: "us-east-1", InstanceType: "t3.micro",
		ClientToken: "forged", ReservedAt: clk.now.Add(-3 * time.Hour), LaunchedAt: clk.now.Add(-3 * time.Hour),
		Deadline: clk.now.Add(-2 * time.Hour), DeadlineClock: "test", Seen: true}}
	if err := st.saveSweep(ctx, sw); err != nil {
		t.Fatal(err)
	}
	if cancel {
		if _, err := st.requestCancel(ctx, "sw-r"); err != nil {
			t.Fatal(err)
		}
		sw, _ = st.loadSweep(ctx, "sw-r")
		if err := o.step(ctx, sw); err != nil {
			t.Logf("cancel step: %v", err)
		}
	} else {
		steps(t, st, o, clk, 1)
	}
	if api.terminated != 0 || api.insts[foreign].ended {
		t.Errorf("cancel=%v: the engine terminated %s, an instance without the sweep's tags", cancel, foreign)
	}
	if cancel {
		return // the item's end is the cancel's; what matters is the instance
	}
	rec := instanceOutcome(t, st, 0)
	if rec.Outcome != outcomeUnknown || rec.InstanceID != "" || !strings.Contains(rec.ErrorMessage, "does not carry this sweep's tags") {
		t.Errorf("item 0: outcome %q instance %q (%s); want unknown, no instance, and why", rec.Outcome, rec.InstanceID, rec.ErrorMessage)
	}
}
