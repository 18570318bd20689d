package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/rs/zerolog"
	"github.com/sivchari/kumo"
)

// The integration tests run against one AWS endpoint, chosen by SPAWN_TEST_BACKEND:
//
//	kumo (default)  an in-process emulator: a fresh machine needs only Go
//	endpoint        whatever SPAWN_TEST_ENDPOINT names (moto_server, a running LocalStack)
//	localstack      LocalStack started by testcontainers-go (needs a Docker engine;
//	                see localstack_test.go)
//
// CI runs the suite on kumo and again on moto_server.

type testBackend struct {
	name     string // kumo, moto, localstack, endpoint
	endpoint string
}

var (
	backendOnce sync.Once
	backend     testBackend
	backendErr  error
)

func sharedBackend() (testBackend, error) {
	backendOnce.Do(func() {
		switch b := os.Getenv("SPAWN_TEST_BACKEND"); b {
		case "", "kumo":
			// kumo keeps one global state per process: one server for the whole test binary.
			backend = testBackend{name: "kumo", endpoint: serializeEC2(kumo.NewServer().URL)}
		case "endpoint", "moto":
			ep := os.Getenv("SPAWN_TEST_ENDPOINT")
			if ep == "" {
				backendErr = fmt.Errorf("SPAWN_TEST_BACKEND=%s needs SPAWN_TEST_ENDPOINT (e.g. http://127.0.0.1:5000)", b)
				return
			}
			name := os.Getenv("SPAWN_TEST_BACKEND_NAME")
			if name == "" {
				name = b
			}
			backend = testBackend{name: name, endpoint: ep}
		case "localstack":
			// Started once for the whole test binary; testcontainers-go's reaper removes
			// the container when the binary exits.
			backend, backendErr = startLocalStack()
		default:
			backendErr = fmt.Errorf("unknown SPAWN_TEST_BACKEND %q: use kumo, endpoint or localstack", b)
		}
	})
	return backend, backendErr
}

// testAWS is what an integration test gets: a config pointed at the backend.
type testAWS struct {
	backend testBackend
	cfg     aws.Config
}

// newTestAWS hands the test an AWS config on the chosen emulator. A backend this
// machine cannot run (LocalStack without a Docker engine, say) makes the test skip
// with the one reason the backend gave.
func newTestAWS(t testing.TB) *testAWS {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: skipped with -short")
	}
	b, err := sharedBackend()
	if err != nil {
		var unavailable *backendUnavailable
		if errors.As(err, &unavailable) {
			t.Skip(unavailable.reason)
		}
		t.Fatalf("test backend: %v", err)
	}
	return &testAWS{backend: b, cfg: backendConfig(b)}
}

// backendConfig is an AWS config on backend b with static test credentials.
func backendConfig(b testBackend) aws.Config {
	return aws.Config{
		Region:       "us-east-1",
		Credentials:  credentials.NewStaticCredentialsProvider("test", "test", ""),
		BaseEndpoint: aws.String(b.endpoint),
		Logger:       sdkLogger{zerolog.Nop()},
	}
}

// backendUnavailable is a backend this machine cannot run: the integration tests skip
// with its reason instead of failing.
type backendUnavailable struct{ reason string }

func (e *backendUnavailable) Error() string { return e.reason }

// keepsEC2Tags reports whether the backend's EC2 keeps tags and honours filters
// (moto and LocalStack do; kumo ignores them).
// keepsEC2Tags: DescribeInstances shows an instance's tags (kumo drops them; serializeEC2,
// in front of it, gives them back as EC2 shows them). Tag filters are another matter: kumo
// ignores them, and the engine checks every tag it filters on itself.
func (a *testAWS) keepsEC2Tags() bool { return true }

func (a *testAWS) requireEC2Tags(t testing.TB) {
	t.Helper()
	if !a.keepsEC2Tags() {
		t.Skipf("backend %s ignores EC2 tags and filters; this test runs on moto_server (CI) and LocalStack", a.backend.name)
	}
}

// runsFunctions reports whether the backend runs a deployed zip as the Lambda function
// itself (LocalStack does, in a container of its own); on kumo the test starts the
// function process.
func (b testBackend) runsFunctions() bool { return b.name == "localstack" }

// requireRuntimeAPI skips a test that runs this binary as the Lambda function on the
// emulator's runtime API and controls that process (kills it, counts it): only kumo
// serves a runtime API to a process outside it (moto's Lambda needs Docker).
func (a *testAWS) requireRuntimeAPI(t testing.TB) {
	t.Helper()
	if a.backend.name != "kumo" {
		t.Skipf("running this binary as the Lambda function needs kumo's runtime API (moto's Lambda needs Docker); backend is %s", a.backend.name)
	}
}

// requireFunctions skips a test that needs the function to answer invokes but not to
// be controlled as a process: kumo with the function process, or a backend that runs
// the deployed zip itself (LocalStack).
func (a *testAWS) requireFunctions(t testing.TB) {
	t.Helper()
	if a.backend.name != "kumo" && !a.backend.runsFunctions() {
		t.Skipf("backend %s cannot run the Lambda function (moto's Lambda needs Docker); it runs on kumo and LocalStack", a.backend.name)
	}
}

// uniqueName gives every test its own resource names: emulators keep state per process.
func uniqueName(prefix string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return strings.ToLower(prefix) + "-" + hex.EncodeToString(b)
}

// ec2Tags keeps, per instance, the tags EC2 would show in DescribeInstances: those its
// launch's TagSpecifications named and those CreateTags added since (kumo drops the
// first and shows neither there).
type ec2Tags map[string][][2]string

// add records the form's tags for id: TagSpecification.N (of resource type instance)
// when prefix is "TagSpecification", Tag.N (CreateTags) when it is "".
func (t ec2Tags) add(id string, form url.Values, spec bool) {
	set := func(k, v string) {
		for i, kv := range t[id] {
			if kv[0] == k {
				t[id][i][1] = v
				return
			}
		}
		t[id] = append(t[id], [2]string{k, v})
	}
	tags := func(prefix string) {
		for m := 1; form.Get(fmt.Sprintf("%sTag.%d.Key", prefix, m)) != ""; m++ {
			set(form.Get(fmt.Sprintf("%sTag.%d.Key", prefix, m)), form.Get(fmt.Sprintf("%sTag.%d.Value", prefix, m)))
		}
	}
	if !spec {
		tags("")
		return
	}
	for n := 1; form.Get(fmt.Sprintf("TagSpecification.%d.ResourceType", n)) != ""; n++ {
		if form.Get(fmt.Sprintf("TagSpecification.%d.ResourceType", n)) == "instance" {
			tags(fmt.Sprintf("TagSpecification.%d.", n))
		}
	}
}

// xml is id's <tagSet>, or "" when it has none.
func (t ec2Tags) xml(id string) string {
	if len(t[id]) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("<tagSet>")
	for _, kv := range t[id] {
		var k, v bytes.Buffer
		_ = xml.EscapeText(&k, []byte(kv[0]))
		_ = xml.EscapeText(&v, []byte(kv[1]))
		fmt.Fprintf(&b, "<item><key>%s</key><value>%s</value></item>", k.String(), v.String())
	}
	return b.String() + "</tagSet>"
}

// serializeEC2 puts a proxy in front of kumo that lets one EC2 request through at a time.
// kumo v0.33.1's EC2 store has a data race of its own (DescribeInstances reads instances
// outside the lock that TerminateInstances writes under), which the race detector reports
// in this process once several orchestrators and workloads call EC2 at once. Other
// services, and the Lambda runtime API's long polls, pass straight through.
//
// It also gives RunInstances the idempotency EC2 documents and kumo lacks ("Ensuring
// idempotency", EC2 API reference): a repeated ClientToken gets the first call's answer,
// not a second instance. A launch whose answer the engine lost (a step cancelled at its
// deadline on a loaded machine) is retried with its token, as on EC2. And since kumo
// keeps no client token, DescribeInstances answers get each launched instance's token
// back, so a lookup by token finds what EC2 would find, and the tags its launch gave it.
func serializeEC2(target string) string {
	u, err := url.Parse(target)
	if err != nil {
		panic(err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.FlushInterval = -1
	var mu sync.Mutex
	launches := map[string]*httptest.ResponseRecorder{} // ClientToken → the first answer
	tokens := map[string]string{}                       // instance id → its ClientToken
	tags := ec2Tags{}
	instanceID := regexp.MustCompile(`<instanceId>(i-[^<]+)</instanceId>`)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if service(r) != "ec2" {
			rp.ServeHTTP(w, r)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		form, _ := url.ParseQuery(string(body))
		token := form.Get("ClientToken")
		var rec *httptest.ResponseRecorder
		out := func() []byte { return rec.Body.Bytes() }
		switch {
		case form.Get("Action") == "RunInstances" && token != "":
			var ok bool
			if rec, ok = launches[token]; !ok {
				rec = httptest.NewRecorder()
				rp.ServeHTTP(rec, r)
				if rec.Code == http.StatusOK {
					launches[token] = rec
					for _, m := range instanceID.FindAllSubmatch(rec.Body.Bytes(), -1) {
						tokens[string(m[1])] = token
						tags.add(string(m[1]), form, true)
					}
				}
			}
		case form.Get("Action") == "DescribeInstances":
			rec = httptest.NewRecorder()
			rp.ServeHTTP(rec, r)
			out = func() []byte {
				return instanceID.ReplaceAllFunc(rec.Body.Bytes(), func(m []byte) []byte {
					id := string(instanceID.FindSubmatch(m)[1])
					if tok, ok := tokens[id]; ok {
						return append(append([]byte{}, m...), "<clientToken>"+tok+"</clientToken>"+tags.xml(id)...)
					}
					return m
				})
			}
		case form.Get("Action") == "CreateTags":
			rec = httptest.NewRecorder()
			rp.ServeHTTP(rec, r)
			if rec.Code == http.StatusOK {
				for n := 1; form.Get(fmt.Sprintf("ResourceId.%d", n)) != ""; n++ {
					tags.add(form.Get(fmt.Sprintf("ResourceId.%d", n)), form, false)
				}
			}
		default:
			rp.ServeHTTP(w, r)
			return
		}
		body = out()
		maps.Copy(w.Header(), rec.Header())
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(rec.Code)
		_, _ = w.Write(body)
	}))
	return srv.URL
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

type testWriter struct{ t testing.TB }

func (w testWriter) Write(b []byte) (int, error) { w.t.Log(string(b)); return len(b), nil }

// syncBuffer is a buffer the CLI writes in one goroutine while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// cliTestEnv is the environment the CLI needs on the emulator: test credentials and a
// region.
func cliTestEnv() map[string]string {
	return map[string]string{"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1",
		"SPAWN_EC2_CONSISTENCY_WINDOW": testConsistencyWindow, "SPAWN_EXIT_REPORT_WAIT": testExitReportWait}
}

// testExitReportWait shortens how long the engine waits for an ended instance's report
// (AWS: a minute; the tests' tags appear within seconds).
const testExitReportWait = "3s"

// testConsistencyWindow shortens how long a cancel looks for a launch EC2 may not show
// yet (60 s on AWS). It must outlast the fault proxy's worst: a RunInstances held up to
// 3 s before it reaches EC2, then an instance invisible up to 3 s more.
const testConsistencyWindow = "8s"

// deploymentFlags point the CLI at one deployment on endpoint.
func deploymentFlags(endpoint, table, instancesTable, bucket, function string) []string {
	return []string{"--endpoint-url", endpoint, "--table", table, "--instances-table", instancesTable, "--bucket", bucket,
		"--function", function}
}

// createSweepTables creates a sweep table and an instances table under fresh names.
func createSweepTables(t testing.TB, a *testAWS) (table, instancesTable string) {
	t.Helper()
	db := dynamodb.NewFromConfig(a.cfg)
	create := func(prefix string, input func(string) *dynamodb.CreateTableInput) string {
		for try := 0; ; try++ {
			name := uniqueName(prefix)
			_, err := db.CreateTable(context.Background(), input(name))
			var inUse *ddbtypes.ResourceInUseException
			if errors.As(err, &inUse) && try < 3 {
				// The SDK's retry of a create that landed, or a name another test drew:
				// either way not a table this test may take as new.
				continue
			}
			if err != nil {
				t.Fatalf("CreateTable %s: %v", name, err)
			}
			return name
		}
	}
	return create("sweeps", sweepTableInput), create("instances", instancesTableInput)
}

// newTestStore is a dynamoStore on fresh tables of the test backend (its table and
// instancesTable name them).
func newTestStore(t testing.TB) *dynamoStore {
	t.Helper()
	a := newTestAWS(t)
	table, instancesTable := createSweepTables(t, a)
	return newDynamoStore(dynamodb.NewFromConfig(a.cfg), table, instancesTable)
}

// createTestBucket creates a bucket whose name starts with prefix.
func createTestBucket(t testing.TB, a *testAWS, prefix string) string {
	t.Helper()
	bucket := uniqueName(prefix)
	if _, err := newS3Client(a.cfg, "").CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String(bucket)}); err != nil {
		t.Fatalf("CreateBucket %s: %v", bucket, err)
	}
	return bucket
}

// existingInstances are the instances the backend holds before a test starts (the
// emulator is shared), so the test can tell its own apart.
func existingInstances(t testing.TB, api ec2API) map[string]bool {
	t.Helper()
	insts, err := describeInstances(context.Background(), api, nil)
	if err != nil {
		t.Fatal(err)
	}
	before := map[string]bool{}
	for _, inst := range insts {
		before[aws.ToString(inst.InstanceId)] = true
	}
	return before
}
