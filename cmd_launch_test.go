package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
)

func TestLaunchRefusesBadFlags(t *testing.T) {
	good := "testdata/params/good/grid.json"
	tests := []struct {
		args []string
		want string
	}{
		{[]string{}, "--param-file is required"},
		{[]string{"--param-file", "testdata/params/nope.json"}, "--param-file testdata/params/nope.json does not exist: check the path"},
		{[]string{"--param-file", good, "extra"}, `unexpected argument "extra": spawn launch takes no arguments`},
		{[]string{"--param-file", good, "--max-concurrent", "0"}, "--max-concurrent 0: must be at least 1"},
		{[]string{"--param-file", good, "--launch-delay", "-1s"}, "--launch-delay -1s: must not be negative"},
		{[]string{"--param-file", good, "--poll-interval", "0s"}, "--poll-interval 0s: must be at least 1s"},
		{[]string{"--param-file", good, "--poll-interval", "6m"}, "--poll-interval 6m0s is over 5m0s: give at most 5m0s"},
		{[]string{"--param-file", good, "--max-concurrent", "5000"}, "--max-concurrent 5000 is over the limit of 500 instances alive at once"},
		{[]string{"--param-file", good, "--max-concurrent", "501"}, "--max-concurrent 501 is over the limit of 500"},
		{[]string{"--param-file", good, "--ttl", "soon"}, `invalid value "soon" for flag -ttl: not a duration: use 90m, 2h30m or 2d`},
		{[]string{"--param-file", good, "--ttl", "0s"}, "--ttl 0s is not more than zero"},
		{[]string{"--param-file", good, "--idle-timeout", "30s"}, "--idle-timeout 30s is under 5m: EC2 publishes the CPU use"},
		{[]string{"--param-file", good, "--idle-timeout", "8d"}, "--idle-timeout 192h is over 7d"},
		{[]string{"--param-file", "testdata/params/good/max-tags.json", "--no-detach"}, "--no-detach needs --ttl or --idle-timeout: give one"},
		{[]string{"--param-file", "testdata/params/good/max-tags.json"}, "item 0 (and 1 more) has no end: give each item a ttl or idle_timeout, pass --ttl D or --idle-timeout D, or pass --no-ttl"},
		{[]string{"--param-file", good, "--no-ttl", "--ttl", "1h"}, "--ttl and --no-ttl contradict each other: give one"},
		{[]string{"--param-file", good, "--no-ttl", "--no-detach"}, "--no-ttl is only for detached launches"},
		{[]string{"--param-file", good, "--detach", "--no-detach", "--ttl", "1h"}, "--detach and --no-detach contradict each other"},
		{[]string{"--param-file", good, "--name", " "}, "--name is empty"},
		{[]string{"--param-file", good, "--name", strings.Repeat("n", 129)}, "--name is over 128 characters"},
		{[]string{"--param-file", "testdata/params/good/max-tags.json", "--ttl", "1h"}, "max-tags.json line 9, params[1]: with --ttl the instance also gets tag spawn:ttl, making 51 tags, over EC2's limit of 50"},
	}
	for _, tt := range tests {
		args := append([]string{"launch", "--dry-run"}, tt.args...)
		_, errOut, code := runSpawn(t, nil, args...)
		// A value the flag package refuses, or an argument, is followed by the help command.
		oneLine := strings.Count(errOut, "\n") == 1
		if strings.HasPrefix(tt.want, "invalid value") || strings.HasPrefix(tt.want, "unexpected argument") {
			_, help, ok := usageError(errOut)
			oneLine = ok && help == "run 'spawn launch --help'"
		}
		if code != exitUsage || !strings.Contains(errOut, tt.want) || !oneLine {
			t.Errorf("%v: exit %d, stderr %q; want exit 2 and %q", tt.args, code, errOut, tt.want)
		}
	}
	// Without --ttl the same file is fine: the limit counts spawn:ttl only when there is one.
	if _, errOut, code := runSpawn(t, nil, "launch", "--dry-run", "--no-ttl", "--param-file", "testdata/params/good/max-tags.json"); code != 0 {
		t.Errorf("max-tags.json without --ttl: exit %d, %s", code, errOut)
	}
}

func TestLaunchDryRunPlanGolden(t *testing.T) {
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	for _, tt := range []struct {
		name string
		args []string
	}{
		{"grid", []string{"--max-concurrent", "3"}},
		{"grid-no-detach", []string{"--no-detach", "--ttl", "90m", "--name", "lr-search"}},
		{"max-tags", []string{"--no-ttl"}},
		{"mixed", []string{"--output", "text"}},
	} {
		file := strings.TrimSuffix(tt.name, "-no-detach")
		args := append([]string{"launch", "--dry-run", "--region", "us-east-1", "--param-file", "testdata/params/good/" + file + ".json"}, tt.args...)
		out, errOut, code := runSpawn(t, nil, args...)
		if code != 0 {
			t.Fatalf("%s: exit %d, %s", tt.name, code, errOut)
		}
		launchGolden(t, "good/"+tt.name+".plan.golden", out)
		out, errOut, code = runSpawn(t, nil, append(args, "--output", "json")...)
		if code != 0 {
			t.Fatalf("%s json: exit %d, %s", tt.name, code, errOut)
		}
		launchGolden(t, "good/"+tt.name+".plan.json.golden", out)
	}
}

// A broken file is refused before the CLI touches anything: the tables and the bucket
// named by the flags stay empty.
func TestLaunchBrokenFileCreatesNothing(t *testing.T) {
	a := newTestAWS(t)
	ctx := context.Background()
	ddb := dynamodb.NewFromConfig(a.cfg)
	s3c := s3.NewFromConfig(a.cfg, func(o *s3.Options) { o.UsePathStyle = true })
	table, itable := createSweepTables(t, a)
	bucket := createTestBucket(t, a, "spawn-launch")
	env := map[string]string{"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_SESSION_TOKEN": "",
		"AWS_PROFILE": "", "AWS_CONFIG_FILE": filepath.Join(t.TempDir(), "none")}
	for _, f := range []string{"command-and-user-data.json", "bad-region.json", "missing-comma.json", "too-many-tags.json"} {
		_, errOut, code := runSpawn(t, env, "launch", "--param-file", "testdata/params/bad/"+f,
			"--endpoint-url", a.backend.endpoint, "--region", "us-east-1",
			"--table", table, "--instances-table", itable, "--bucket", bucket)
		if code != exitUsage || !strings.Contains(errOut, badFiles[f]) {
			t.Errorf("%s: exit %d, stderr %q", f, code, errOut)
		}
	}
	for _, tb := range []string{table, itable} {
		out, err := ddb.Scan(ctx, &dynamodb.ScanInput{TableName: aws.String(tb)})
		if err != nil {
			t.Fatal(err)
		}
		if len(out.Items) != 0 {
			t.Errorf("table %s has %d items after refused launches", tb, len(out.Items))
		}
	}
	objs, err := s3c.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(bucket)})
	if err != nil {
		t.Fatal(err)
	}
	if len(objs.Contents) != 0 {
		t.Errorf("bucket %s has %d objects after refused launches", bucket, len(objs.Contents))
	}
}

// "run 'spawn deploy'" is the fix only when a resource of the deployment is missing:
// any other store error is said as it is.
func TestLaunchSaysDeployOnlyWhenSomethingIsMissing(t *testing.T) {
	d := &deployment{region: "us-east-1", table: "t", bucket: "b"}
	for _, tt := range []struct {
		err    error
		deploy bool
	}{
		{&ddbtypes.ResourceNotFoundException{Message: aws.String("no table")}, true},
		{fmt.Errorf("uploading params: %w", &smithy.GenericAPIError{Code: "NoSuchBucket"}), true},
		{fmt.Errorf("uploading params: %w", &smithy.GenericAPIError{Code: "AccessDenied"}), false},
		{&ddbtypes.ProvisionedThroughputExceededException{}, false},
	} {
		got := explainStoreError(tt.err, d, d.table, "sw-1")
		if strings.Contains(got.Error(), "spawn deploy") != tt.deploy || !errors.Is(got, tt.err) {
			t.Errorf("%v: got %q, want 'spawn deploy' named: %v", tt.err, got, tt.deploy)
		}
	}

	e := newStatusEnv(t) // its tables exist, its bucket does not
	good := "testdata/params/good/grid.json"
	_, errOut, code := runSpawn(t, e.env, e.args("launch", "--param-file", good)...)
	want := "spawn: no spawn deployment found in us-east-1 (bucket " + e.bucket + " does not exist): run 'spawn deploy', or pass the --region or --bucket it used\n"
	if code != exitRuntime || errOut != want {
		t.Errorf("missing bucket: exit %d, stderr %q; want %q", code, errOut, want)
	}
	if _, err := newS3Client(e.a.cfg, "").CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String(e.bucket)}); err != nil {
		t.Fatal(err)
	}
	noTable := uniqueName("no-such-table")
	_, errOut, code = runSpawn(t, e.env, append(e.args("launch", "--param-file", good), "--table", noTable)...)
	if code != exitRuntime || !strings.Contains(errOut, "(table "+noTable+" does not exist): run 'spawn deploy'") {
		t.Errorf("missing table: exit %d, stderr %q", code, errOut)
	}
	// The table is checked before anything is uploaded.
	objs, err := newS3Client(e.a.cfg, "").ListObjectsV2(context.Background(), &s3.ListObjectsV2Input{Bucket: aws.String(e.bucket)})
	if err != nil || len(objs.Contents) != 0 {
		t.Errorf("a launch without a table left %v in the bucket (%v)", objs, err)
	}
}

// Without --bucket, the CLI uses the bucket deploy recorded in the table, not the name it
// would derive (a bucket of that name may be another account's).
func TestLaunchUsesTheBucketDeployRecorded(t *testing.T) {
	e := newStatusEnv(t)
	ctx := context.Background()
	if _, err := newS3Client(e.a.cfg, "").CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(e.bucket)}); err != nil {
		t.Fatal(err)
	}
	item, err := marshalItem(&deploymentItem{SweepID: deploymentItemID, Bucket: e.bucket, Function: "fn", Account: "000000000000", Region: "us-east-1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.db.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(e.table), Item: item}); err != nil {
		t.Fatal(err)
	}
	args := []string{"launch", "--param-file", "testdata/params/good/grid.json", "--ttl", "10m", "--yes",
		"--endpoint-url", e.a.backend.endpoint, "--table", e.table, "--instances-table", e.instTable, "--function", uniqueName("no-fn")}
	_, errOut, _ := runSpawn(t, e.env, args...) // no function is deployed: the launch fails after the upload
	objs, err := newS3Client(e.a.cfg, "").ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(e.bucket)})
	if err != nil || len(objs.Contents) != 1 || !strings.HasSuffix(aws.ToString(objs.Contents[0].Key), "/params.json") {
		t.Fatalf("the params did not land in the recorded bucket %s: %+v, %v (stderr %q)", e.bucket, objs, err, errOut)
	}
}
