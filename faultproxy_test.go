package main

import (
	"bytes"
	"context"
	"testing"

	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
)

// faultProxy sits between spawn and the emulator and breaks a chosen fraction of
// requests the ways AWS and networks do: 500/503 answers, throttling, connection resets
// before or after the request reached the service, and answers delayed past the SDK's
// timeout. It also gives the emulator's EC2 what AWS has and kumo lacks: RunInstances is
// idempotent by ClientToken (a retried launch returns the first answer), so a response
// lost after the launch happened is recovered exactly as on AWS.
type faultProxy struct {
	srv *httptest.Server
	// clean serves the same emulator with no faults but the same RunInstances
	// idempotency, for callers that talk to AWS directly (the CLI) while sharing
	// EC2's memory of client tokens with the faulty path.
	clean  *httptest.Server
	target *url.URL
	rate   float64 // fraction of requests that fail
	delay  time.Duration

	mu       sync.Mutex
	rng      *rand.Rand
	byToken  map[string][]byte // RunInstances ClientToken → the answer EC2 gave
	injected map[string]int    // fault kind → count
	requests int
	// onRunInstances sees every RunInstances request and answer that created instances
	// (first time per token), called with the proxy's lock held so that launches are
	// seen one at a time: the harness counts instances alive from it.
	onRunInstances func(req url.Values, body []byte)
}

func newFaultProxy(target string, rate float64, seed uint64) *faultProxy {
	u, err := url.Parse(target)
	if err != nil {
		panic(err)
	}
	p := &faultProxy{
		target:   u,
		rate:     rate,
		delay:    3 * time.Second,
		rng:      rand.New(rand.NewPCG(seed, seed^0x5eed)),
		byToken:  map[string][]byte{},
		injected: map[string]int{},
	}
	p.srv = httptest.NewServer(http.HandlerFunc(p.serve))
	p.clean = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { p.handle(w, r, "") }))
	return p
}

func (p *faultProxy) URL() string      { return p.srv.URL }
func (p *faultProxy) CleanURL() string { return p.clean.URL }
func (p *faultProxy) Close() {
	p.srv.Close()
	p.clean.Close()
}

func (p *faultProxy) counts() (requests int, injected map[string]int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	m := make(map[string]int, len(p.injected))
	for k, v := range p.injected {
		m[k] = v
	}
	return p.requests, m
}

var credentialScope = regexp.MustCompile(`Credential=[^/]+/[^/]+/[^/]+/([^/]+)/`)

// service is the SigV4 signing name of the request (ec2, dynamodb, s3, lambda, …).
func service(r *http.Request) string {
	m := credentialScope.FindStringSubmatch(r.Header.Get("Authorization"))
	if m == nil {
		return ""
	}
	return m[1]
}

// pick decides this request's fate.
func (p *faultProxy) pick() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.requests++
	if p.rng.Float64() >= p.rate {
		return ""
	}
	kinds := []string{"500", "503", "throttle", "reset-before", "reset-after", "slow"}
	k := kinds[p.rng.IntN(len(kinds))]
	p.injected[k]++
	return k
}

func (p *faultProxy) serve(w http.ResponseWriter, r *http.Request) { p.handle(w, r, p.pick()) }

func (p *faultProxy) handle(w http.ResponseWriter, r *http.Request, fault string) {
	body, _ := io.ReadAll(r.Body)
	svc := service(r)
	switch fault {
	case "500":
		writeAWSError(w, svc, 500, "InternalError", "injected internal error")
		return
	case "503":
		writeAWSError(w, svc, 503, "ServiceUnavailable", "injected unavailability")
		return
	case "throttle":
		code := "ThrottlingException"
		if svc == "ec2" {
			code = "RequestLimitExceeded"
		}
		writeAWSError(w, svc, 400, code, "injected throttle: Rate exceeded")
		return
	case "reset-before":
		resetConn(w)
		return
	}

	status, header, respBody, err := p.forward(r, svc, body)
	if err != nil {
		resetConn(w)
		return
	}
	switch fault {
	case "reset-after": // the service did the work; the caller never hears of it
		resetConn(w)
		return
	case "slow":
		select {
		case <-time.After(p.delay):
		case <-r.Context().Done():
			return
		}
	}
	for k, vs := range header {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	w.WriteHeader(status)
	_, _ = w.Write(respBody)
}

// forward sends the request to the emulator; EC2 RunInstances is made idempotent by
// ClientToken, as AWS documents it.
func (p *faultProxy) forward(r *http.Request, svc string, body []byte) (int, http.Header, []byte, error) {
	token := ""
	var form url.Values
	if svc == "ec2" {
		if f, err := url.ParseQuery(string(body)); err == nil && f.Get("Action") == "RunInstances" {
			form, token = f, f.Get("ClientToken")
		}
	}
	if token != "" {
		p.mu.Lock()
		defer p.mu.Unlock() // one RunInstances per token at a time
		if prev, ok := p.byToken[token]; ok {
			return 200, http.Header{"Content-Type": {"text/xml"}}, prev, nil
		}
		if err := r.Context().Err(); err != nil {
			// The caller gave up while the request waited its turn here: it never
			// reached EC2, and must not launch anything later.
			return 0, nil, nil, err
		}
	}
	// Once a request reaches the service it is carried out, even if the caller stops
	// listening (as AWS does): a launch or a write may happen with no one told.
	fctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(fctx, r.Method, p.target.String()+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		return 0, nil, nil, err
	}
	req.Header = r.Header.Clone()
	req.Host = r.Host
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	respBody, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, nil, err
	}
	if token != "" && resp.StatusCode == 200 {
		p.byToken[token] = respBody
		if p.onRunInstances != nil {
			p.onRunInstances(form, respBody)
		}
	}
	return resp.StatusCode, resp.Header, respBody, nil
}

func resetConn(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic("fault proxy: response writer cannot be hijacked")
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		return
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0) // RST, not FIN
	}
	_ = conn.Close()
}

// writeAWSError answers in the error shape of the service's protocol.
func writeAWSError(w http.ResponseWriter, svc string, status int, code, msg string) {
	switch svc {
	case "ec2":
		w.Header().Set("Content-Type", "text/xml")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error><Code>`+code+
			`</Code><Message>`+msg+`</Message></Error></Errors><RequestID>injected</RequestID></Response>`)
	case "s3":
		if strings.HasPrefix(code, "Throttling") {
			code, status = "SlowDown", 503
		}
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>`+code+`</Code><Message>`+msg+
			`</Message><RequestId>injected</RequestId></Error>`)
	case "sts", "iam":
		w.Header().Set("Content-Type", "text/xml")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, `<ErrorResponse><Error><Type>Sender</Type><Code>`+code+`</Code><Message>`+msg+
			`</Message></Error><RequestId>injected</RequestId></ErrorResponse>`)
	default: // JSON protocols: DynamoDB, Lambda, CloudWatch, SSM, Pricing
		w.Header().Set("Content-Type", "application/x-amz-json-1.0")
		w.Header().Set("X-Amzn-Errortype", code)
		w.WriteHeader(status)
		_, _ = io.WriteString(w, `{"__type":"`+code+`","message":"`+msg+`"}`)
	}
}

// The fault proxy itself: it passes requests through, breaks the asked fraction, and
// makes RunInstances idempotent by ClientToken.
func TestFaultProxy(t *testing.T) {
	a := newTestAWS(t)
	if a.backend.name != "kumo" {
		t.Skipf("the fault proxy is exercised on kumo; backend is %s", a.backend.name)
	}
	ctx := context.Background()
	clean := newFaultProxy(a.backend.endpoint, 0, 1)
	defer clean.Close()
	cfg := a.cfg.Copy()
	cfg.BaseEndpoint = aws.String(clean.URL())
	if _, err := dynamodb.NewFromConfig(cfg).ListTables(ctx, &dynamodb.ListTablesInput{}); err != nil {
		t.Fatalf("rate 0: %v", err)
	}
	ec := ec2.NewFromConfig(cfg)
	run := func() string {
		out, err := ec.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String("ami-1"), InstanceType: "t3.micro",
			MinCount: aws.Int32(1), MaxCount: aws.Int32(1), ClientToken: aws.String(uniqueName("tok"))})
		if err != nil {
			t.Fatal(err)
		}
		return aws.ToString(out.Instances[0].InstanceId)
	}
	tok := uniqueName("tok")
	launch := func() string {
		out, err := ec.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String("ami-1"), InstanceType: "t3.micro",
			MinCount: aws.Int32(1), MaxCount: aws.Int32(1), ClientToken: aws.String(tok)})
		if err != nil {
			t.Fatal(err)
		}
		return aws.ToString(out.Instances[0].InstanceId)
	}
	if first, again := launch(), launch(); first != again {
		t.Fatalf("same ClientToken gave two instances: %s, %s", first, again)
	}
	if run() == run() {
		t.Fatal("different tokens gave the same instance")
	}

	broken := newFaultProxy(a.backend.endpoint, 1, 2)
	defer broken.Close()
	cfg.BaseEndpoint = aws.String(broken.URL())
	cfg.RetryMaxAttempts = 1
	if _, err := dynamodb.NewFromConfig(cfg).ListTables(ctx, &dynamodb.ListTablesInput{}); err == nil {
		// "slow" answers succeed after the delay unless the caller times out
		if _, inj := broken.counts(); inj["slow"] == 0 {
			t.Fatal("rate 1: a request went through unharmed")
		}
	}
	if n, inj := broken.counts(); n == 0 || len(inj) == 0 {
		t.Fatalf("rate 1: requests %d, injected %v", n, inj)
	}
}
