package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// A compute account is the orchestrator's own or one a deploy recorded; any other is
// refused with the deploy command that sets it up.
func TestCheckComputeAccount(t *testing.T) {
	rec := &deploymentItem{Account: "111111111111", ComputeAccounts: []string{"222222222222"}}
	for _, tt := range []struct {
		name     string
		d        *deployment
		account  string
		ok       bool
		crossing bool
	}{
		{"own account", &deployment{accountID: "111111111111", recorded: rec}, "111111111111", true, false},
		{"recorded account", &deployment{accountID: "111111111111", recorded: rec}, "222222222222", true, true},
		{"unrecorded account", &deployment{accountID: "111111111111", recorded: rec}, "333333333333", false, true},
		{"no deployment item", &deployment{accountID: "111111111111"}, "222222222222", false, true},
		{"no deployment item, own account", &deployment{accountID: "111111111111"}, "111111111111", true, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tt.d.region = "eu-west-1"
			err := checkComputeAccount("lab", tt.account, tt.d)
			if (err == nil) != tt.ok {
				t.Fatalf("got %v, want ok %v", err, tt.ok)
			}
			if err != nil && !strings.Contains(err.Error(), "--compute-profile lab is account "+tt.account) ||
				err != nil && !strings.Contains(err.Error(), "run 'spawn deploy --compute-profile lab'") {
				t.Errorf("error %q does not name the profile, its account and the deploy that sets it up", err)
			}
			if got := tt.d.crossAccount(tt.account); got != tt.crossing {
				t.Errorf("crossAccount(%s) = %v, want %v", tt.account, got, tt.crossing)
			}
		})
	}
}

// --compute-profile needs the orchestrator function: with --no-detach it is refused
// before the file is read or AWS is called.
func TestLaunchComputeProfileRefusesNoDetach(t *testing.T) {
	_, errOut, code := runSpawn(t, nil, "launch", "--param-file", "testdata/params/good/grid.json", "--ttl", "10m",
		"--no-detach", "--compute-profile", "lab")
	want := "spawn: --compute-profile lab runs the instances through " + crossAccountRoleName +
		", which trusts only the orchestrator function, not this process: drop --no-detach\n"
	if code != exitUsage || errOut != want {
		t.Errorf("exit %d, stderr %q; want 2 and %q", code, errOut, want)
	}
}

// A compute profile with no credentials, or whose account no deploy set up, stops the
// launch before anything is uploaded or recorded.
func TestLaunchComputeProfileRefusedBeforeAnythingIsCreated(t *testing.T) {
	e := newStatusEnv(t)
	ctx := context.Background()
	if _, err := newS3Client(e.a.cfg, "").CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(e.bucket)}); err != nil {
		t.Fatal(err)
	}
	// The deployment item names another orchestrator account and no compute account: the
	// backend's one account is then a compute account nobody set up.
	item, err := marshalItem(&deploymentItem{SweepID: deploymentItemID, Bucket: e.bucket, Function: "fn", Account: "999999999999", Region: "us-east-1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.db.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(e.table), Item: item}); err != nil {
		t.Fatal(err)
	}
	env := writeProfiles(t, e.a.backend.endpoint)
	launch := func(profile string) (string, int) {
		_, errOut, code := runSpawn(t, env, e.args("launch", "--profile", "main", "--param-file", "testdata/params/good/grid.json",
			"--ttl", "10m", "--yes", "--compute-profile", profile)...)
		return errOut, code
	}
	errOut, code := launch("no-such-profile")
	if code != exitUsage || !strings.HasPrefix(errOut, "spawn: --compute-profile no-such-profile cannot be loaded (") ||
		!strings.Contains(errOut, "check that profile in ~/.aws/config") {
		t.Errorf("missing profile: exit %d, stderr %q", code, errOut)
	}
	errOut, code = launch("compute")
	if code != exitRuntime || !strings.Contains(errOut, "--compute-profile compute is account ") ||
		!strings.Contains(errOut, "run 'spawn deploy --compute-profile compute'") {
		t.Errorf("unrecorded account: exit %d, stderr %q", code, errOut)
	}
	objs, err := newS3Client(e.a.cfg, "").ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(e.bucket)})
	if err != nil || len(objs.Contents) != 0 {
		t.Errorf("a refused launch left %d objects in the bucket (%v)", len(objs.Contents), err)
	}
	if ids := listSweepIDs(t, e.db, e.table); len(ids) != 0 {
		t.Errorf("a refused launch recorded sweeps %v", ids)
	}
}

// listSweepIDs are the sweep records of table (spawn's own items left out).
func listSweepIDs(t *testing.T, db *dynamodb.Client, table string) []string {
	t.Helper()
	out, err := db.Scan(context.Background(), &dynamodb.ScanInput{TableName: aws.String(table)})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, it := range out.Items {
		if id, ok := it["sweep_id"].(*ddbtypes.AttributeValueMemberS); ok && !strings.HasPrefix(id.Value, "#") {
			ids = append(ids, id.Value)
		}
	}
	return ids
}

// resume --no-detach of a sweep whose instances are in another account is refused
// before the record changes: this process could not assume that account's role.
func TestResumeNoDetachRefusesACrossAccountSweep(t *testing.T) {
	e := newStatusEnv(t)
	sw := e.putSweep(t, 2, time.Now())
	e.advance(t, sw.SweepID, func(s *sweep) { s.AWSAccountID = "444455556666" }) // not the backend's account
	before, err := e.store.loadSweep(context.Background(), sw.SweepID)
	if err != nil {
		t.Fatal(err)
	}
	_, errOut, code := runSpawn(t, e.env, e.args("resume", sw.SweepID, "--no-detach", "--retry-failed")...)
	want := "spawn: sweep " + sw.SweepID + " runs its instances in account 444455556666 through " + crossAccountRoleName +
		", which trusts only the orchestrator function, not this process: resume it without --no-detach\n"
	if code != exitUsage || errOut != want {
		t.Errorf("exit %d, stderr %q; want 2 and %q", code, errOut, want)
	}
	if after, err := e.store.loadSweep(context.Background(), sw.SweepID); err != nil || after.Version != before.Version {
		t.Errorf("a refused resume changed the record: version %d → %+v (%v)", before.Version, after, err)
	}
}

// status names the account of a sweep whose instances are in another account, and only
// of such a sweep.
func TestStatusNamesTheComputeAccount(t *testing.T) {
	e := newStatusEnv(t)
	own := e.putSweep(t, 2, time.Now())
	e.advance(t, own.SweepID, func(s *sweep) { s.AWSAccountID = strings.Split(e.userID, ":")[4] }) // the caller's
	other := e.putSweep(t, 2, time.Now())
	e.advance(t, other.SweepID, func(s *sweep) { s.AWSAccountID = "444455556666" })
	want := "account  444455556666 (instances reached through " + crossAccountRoleName + ")\n"
	for _, tt := range []struct {
		id   string
		show bool
	}{{own.SweepID, false}, {other.SweepID, true}} {
		out, errOut, code := runSpawn(t, e.env, e.args("status", tt.id)...)
		if code != 0 || strings.Contains(out, want) != tt.show || strings.Contains(out, "account  ") && !tt.show {
			t.Errorf("status %s: exit %d, stderr %q, stdout:\n%s\nwant the account line: %v", tt.id, code, errOut, out, tt.show)
		}
	}
}

// The dry run names the compute profile whose account would run the instances, and
// calls no AWS (the launch checks the account).
func TestLaunchDryRunNamesTheComputeProfile(t *testing.T) {
	args := []string{"launch", "--dry-run", "--param-file", "testdata/params/good/grid.json", "--ttl", "1h", "--compute-profile", "lab"}
	out, errOut, code := runSpawn(t, nil, args...)
	if code != 0 || !strings.Contains(out, "account:         profile lab's (checked at launch; reached through "+crossAccountRoleName+")\n") {
		t.Errorf("exit %d, stderr %q, stdout:\n%s", code, errOut, out)
	}
	out, _, code = runSpawn(t, nil, append(args, "--output", "json")...)
	if code != 0 || !strings.Contains(out, `"compute_profile": "lab"`) {
		t.Errorf("--output json: exit %d, stdout:\n%s", code, out)
	}
}

// The launch's text output names the compute account of a sweep in another account.
func TestLaunchedSaysTheComputeAccount(t *testing.T) {
	var out strings.Builder
	r := newRootConfig(strings.NewReader(""), &out, &out)
	doc := launchDoc{SweepID: "sw-1", TotalParams: 2, MaxConcurrent: 1, AWSAccountID: "444455556666", ComputeProfile: "lab", cross: true}
	if err := r.printLaunched(doc); err != nil {
		t.Fatal(err)
	}
	want := "instances run in account 444455556666 (--compute-profile lab), through " + crossAccountRoleName + "\n"
	if !strings.Contains(out.String(), want) {
		t.Errorf("printed:\n%s\nwant the line %q", out.String(), want)
	}
	out.Reset()
	doc.cross = false // the profile's account is the orchestrator's: no role, no line
	if err := r.printLaunched(doc); err != nil || strings.Contains(out.String(), "instances run in account") {
		t.Errorf("same account printed:\n%s (%v)", out.String(), err)
	}
}
