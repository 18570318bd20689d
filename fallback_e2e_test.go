package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
)

// TestFallbackEndToEndOnKumo: a sweep whose first instance type EC2 refuses for capacity
// (the fault proxy refuses every RunInstances of it, on the side with no random faults)
// runs, through the real CLI and `launch --no-detach`, every item on its second type
// (spot "prefer": t3.large spot and on-demand are refused, t3.micro spot launches): one
// instance per item, none of the refused type; status and results say what each item
// ran as.
func TestFallbackEndToEndOnKumo(t *testing.T) {
	a := newTestAWS(t)
	if a.backend.name != "kumo" {
		t.Skipf("the fault proxy is exercised on kumo; backend is %s", a.backend.name)
	}
	p := newFaultProxy(a.backend.endpoint, 0, 13)
	defer p.Close()
	p.ec2.refuseTypes = map[string]string{"t3.large": "InsufficientInstanceCapacity"}
	store := newTestStore(t)
	bucket := createTestBucket(t, a, "spawn-fb")
	api := ec2.NewFromConfig(a.cfg)
	image := testImage(t, api)
	before := map[string]bool{}
	insts, err := describeInstances(context.Background(), api, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, inst := range insts {
		before[aws.ToString(inst.InstanceId)] = true
	}
	const items = 4
	path := seedParamFile(t, fmt.Sprintf(`"ami": %q, "command": "true", "instance_type": ["t3.large", "t3.micro"], "spot": "prefer"`, image), items)
	globals := deploymentFlags(p.CleanURL(), store.table, store.instancesTable, bucket, uniqueName("absent"))
	stop := make(chan struct{})
	go workload(t, a, api, before, stop)
	defer close(stop)

	start := time.Now()
	out, errOut, code := runSpawn(t, cliTestEnv(), append([]string{"launch", "--param-file", path, "--max-concurrent", "2",
		"--poll-interval", "1s", "--no-detach", "--ttl", "1h"}, globals...)...)
	if code != 0 || !strings.Contains(out, "COMPLETED") {
		t.Fatalf("launch --no-detach: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	id := strings.Fields(out)[1]
	t.Logf("%d items ran on their fallback in %s", items, time.Since(start).Round(time.Second))

	recs, err := store.listInstances(context.Background(), id)
	if err != nil || len(recs) != items {
		t.Fatalf("%d instance items (%v)", len(recs), err)
	}
	ids := map[string]bool{}
	for _, rec := range recs {
		ids[rec.InstanceID] = true
		if rec.Outcome != outcomeSucceeded || rec.InstanceType != "t3.micro" || !rec.Spot || rec.Attempt != 1 {
			t.Errorf("index %d: %s on %s spot=%v attempt %d, want succeeded on t3.micro spot", rec.Index, rec.Outcome, rec.InstanceType, rec.Spot, rec.Attempt)
		}
	}
	made := 0
	insts, err = describeInstances(context.Background(), api, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, inst := range insts {
		if !before[aws.ToString(inst.InstanceId)] {
			made++
			if inst.InstanceType == "t3.large" {
				t.Errorf("instance %s of the refused type", aws.ToString(inst.InstanceId))
			}
		}
	}
	if made != items || len(ids) != items {
		t.Errorf("%d instances made, %d distinct in the instance items; want %d", made, len(ids), items)
	}
	// Two refusals per item: t3.large spot, then t3.large on-demand; then t3.micro spot.
	_, injected := p.counts()
	if injected["type-refused:InsufficientInstanceCapacity"] < 2*items {
		t.Errorf("refusals given: %v; want at least %d of t3.large", injected, 2*items)
	}

	stdout, stderr, code := runSpawn(t, cliTestEnv(), append([]string{"status", id, "--output", "json"}, globals...)...)
	var doc struct {
		Instances []statusInstance `json:"instances"`
	}
	if code != 0 || json.Unmarshal([]byte(stdout), &doc) != nil || len(doc.Instances) != items {
		t.Fatalf("status: exit %d, %q %q", code, stdout, stderr)
	}
	for _, si := range doc.Instances {
		if si.InstanceType != "t3.micro" || si.Market != "spot" || si.Region != "us-east-1" {
			t.Errorf("status says index %d ran as %s %s in %s", si.Index, si.InstanceType, si.Market, si.Region)
		}
	}
	stdout, stderr, code = runSpawn(t, cliTestEnv(), append([]string{"results", id, "--output", "csv"}, globals...)...)
	if code != 0 || strings.Count(stdout, ",t3.micro,us-east-1,true,") != items {
		t.Errorf("results: exit %d, %q %q", code, stdout, stderr)
	}
}
