package main

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/rs/zerolog"
)

// ownerCheckingS3 sits in front of the emulator's S3 (which ignores the header) and
// does what S3 does with x-amz-expected-bucket-owner: a request naming another account
// than the bucket's is refused with 403 AccessDenied before it reaches the bucket. It
// records, per S3 request, the header it carried.
type ownerCheckingS3 struct {
	srv   *httptest.Server
	owner string // the account every bucket here belongs to

	mu   sync.Mutex
	seen []string // "METHOD path → header"
}

func newOwnerCheckingS3(t *testing.T, target, owner string) *ownerCheckingS3 {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	p := &ownerCheckingS3{owner: owner}
	rp := httputil.NewSingleHostReverseProxy(u)
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if service(r) == "s3" {
			got := r.Header.Get(expectedOwnerHeader)
			p.mu.Lock()
			p.seen = append(p.seen, r.Method+" "+r.URL.Path+"?"+r.URL.RawQuery+" → "+got)
			p.mu.Unlock()
			if got != "" && got != p.owner {
				w.Header().Set("Content-Type", "application/xml")
				w.WriteHeader(http.StatusForbidden)
				_, _ = io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>`)
				return
			}
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(p.srv.Close)
	return p
}

func (p *ownerCheckingS3) requests() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.seen...)
}

// TestEveryS3CallNamesTheBucketOwner: every S3 request the deployment, the engine and
// the CLI make names the account the bucket must belong to (CreateBucket aside, which
// takes none), so params, logs and results can never land in, or be read from, a bucket
// of the same name in another account; and a bucket owned by another account refuses
// the params upload before anything is written.
func TestEveryS3CallNamesTheBucketOwner(t *testing.T) {
	a := newTestAWS(t)
	if a.backend.name != "kumo" {
		t.Skipf("the owner-checking proxy runs in front of kumo; backend is %s", a.backend.name)
	}
	const account = "111122223333"
	proxy := newOwnerCheckingS3(t, a.backend.endpoint, account)
	cfg := a.cfg.Copy()
	cfg.BaseEndpoint = aws.String(proxy.srv.URL)
	ctx := context.Background()
	bucket := uniqueName("spawn-owner")

	// Deploy's bucket steps: created, then its settings.
	dep := &deployment{cfg: cfg, accountID: account, userID: "arn:aws:iam::" + account + ":user/u", region: "us-east-1",
		table: "t", instancesTable: "i", bucket: bucket, function: "f"}
	if err := newDeployer(dep, zerolog.Nop(), false).ensureBucket(ctx); err != nil {
		t.Fatalf("ensureBucket: %v", err)
	}
	// The engine's params, exit records and the CLI's log reading.
	deps := newEngineDeps(cfg, account, dep.userID, "t", "i", bucket, "f", zerolog.Nop())
	key, sum, err := deps.params.uploadParams(ctx, "sw-own", []byte(`{"params": [{"command": "true"}]}`))
	if err != nil {
		t.Fatalf("upload: %v", err)
	}
	if _, err := deps.params.downloadParams(ctx, key, sum, true); err != nil {
		t.Fatalf("download: %v", err)
	}
	if _, err := readExitReport(ctx, deps.s3, bucket, "sw-own", 0, 1, "i-0abc"); err != nil {
		t.Fatalf("exit report: %v", err)
	}
	reqs := proxy.requests()
	if len(reqs) < 6 {
		t.Fatalf("only %d S3 requests seen: %v", len(reqs), reqs)
	}
	for _, r := range reqs {
		creating := strings.HasPrefix(r, "PUT /"+bucket+"? ") || strings.HasPrefix(r, "PUT /"+bucket+"?→")
		if !strings.HasSuffix(r, "→ "+account) && !creating {
			t.Errorf("S3 request without the bucket's owner: %s", r)
		}
	}

	// The same bucket name seen from a caller who takes it for its own account's (a wrong
	// --region, a name another account took): the upload is refused, nothing written.
	other := newEngineDeps(cfg, "444455556666", "arn:aws:iam::444455556666:user/x", "t", "i", bucket, "f", zerolog.Nop())
	if _, _, err := other.params.uploadParams(ctx, "sw-foreign", []byte(`{"params": [{"command": "true"}]}`)); err == nil ||
		apiErrorCode(err) != "AccessDenied" {
		t.Fatalf("upload into a bucket another account owns: %v, want AccessDenied", err)
	}
	if _, err := newS3Client(a.cfg, "").HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String(paramsKey("sw-foreign"))}); !isNotFound(err) {
		t.Errorf("the refused upload left an object: %v", err)
	}
}

// A sweep belongs to the principal: every session of an assumed role is the role.
func TestPrincipalOf(t *testing.T) {
	for in, want := range map[string]string{
		"arn:aws:sts::123456789012:assumed-role/ci-deployer/github-run-42":  "arn:aws:iam::123456789012:role/ci-deployer",
		"arn:aws:sts::123456789012:assumed-role/AWSReservedSSO_Dev_abc/ana": "arn:aws:iam::123456789012:role/AWSReservedSSO_Dev_abc",
		"arn:aws-cn:sts::123456789012:assumed-role/r/s":                     "arn:aws-cn:iam::123456789012:role/r",
		"arn:aws:iam::123456789012:user/ana":                                "arn:aws:iam::123456789012:user/ana",
		"arn:aws:iam::123456789012:root":                                    "arn:aws:iam::123456789012:root",
		"arn:aws:sts::123456789012:federated-user/bob":                      "arn:aws:sts::123456789012:federated-user/bob",
		"not an arn": "not an arn",
	} {
		if got := principalOf(in); got != want {
			t.Errorf("principalOf(%q) = %q, want %q", in, got, want)
		}
	}
}
