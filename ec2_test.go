package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
)

// TestCrossAccountCredentials: a sweep in another account gets EC2 credentials from
// that account's SpawnSweepCrossAccountRole with the external id, cached; the
// orchestrator's own account uses its own credentials.
func TestCrossAccountCredentials(t *testing.T) {
	var mu sync.Mutex
	var calls []url.Values
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		mu.Lock()
		calls = append(calls, r.PostForm)
		mu.Unlock()
		w.Header().Set("Content-Type", "text/xml")
		fmt.Fprint(w, `<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><AssumeRoleResult>
<Credentials><AccessKeyId>ASIACROSS</AccessKeyId><SecretAccessKey>s</SecretAccessKey><SessionToken>tok</SessionToken>
<Expiration>2099-01-01T00:00:00Z</Expiration></Credentials>
<AssumedRoleUser><Arn>arn:aws:sts::222222222222:assumed-role/SpawnSweepCrossAccountRole/spawn</Arn><AssumedRoleId>AROA:spawn</AssumedRoleId></AssumedRoleUser>
</AssumeRoleResult><ResponseMetadata><RequestId>1</RequestId></ResponseMetadata></AssumeRoleResponse>`)
	}))
	defer srv.Close()
	base := aws.Config{Region: "us-east-1", BaseEndpoint: aws.String(srv.URL),
		Credentials: credentials.NewStaticCredentialsProvider("AKIAOWN", "s", "")}
	c := newAWSClients(base, "111111111111", "aws")
	ctx := context.Background()

	own, err := c.configFor("111111111111", "eu-west-1").Credentials.Retrieve(ctx)
	if err != nil || own.AccessKeyID != "AKIAOWN" {
		t.Fatalf("own account: %v %v", own.AccessKeyID, err)
	}
	for range 2 {
		cross, err := c.configFor("222222222222", "eu-west-1").Credentials.Retrieve(ctx)
		if err != nil || cross.AccessKeyID != "ASIACROSS" {
			t.Fatalf("other account: %q %v", cross.AccessKeyID, err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(calls) != 1 {
		t.Fatalf("%d AssumeRole calls, want 1 (cached until near expiry)", len(calls))
	}
	got := calls[0]
	if got.Get("Action") != "AssumeRole" || got.Get("RoleArn") != "arn:aws:iam::222222222222:role/SpawnSweepCrossAccountRole" ||
		got.Get("ExternalId") != "spawn-111111111111" {
		t.Errorf("AssumeRole request %v", got)
	}
}
