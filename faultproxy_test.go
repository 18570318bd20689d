package main

import (
	"bytes"
	"context"
	"encoding/xml"
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
// before or after the request reached the service, answers delayed past the SDK's
// timeout, and RunInstances refused for quota or capacity. It also gives the emulator's
// EC2 what AWS has and kumo lacks, on both of its sides (faultproxy_ec2_test.go):
// RunInstances idempotent by ClientToken, instances and tags that appear late, terminated
// instances that are forgotten, and a region that refuses every call for a while.
type faultProxy struct {
	srv *httptest.Server
	// clean serves the same emulator with no random faults, for callers that talk to
	// AWS directly (the CLI, the instances themselves). It is no kinder than AWS: it
	// shares the EC2 model (client tokens, lags, forgetting, a refusing region) with the
	// faulty side.
	clean  *httptest.Server
	target *url.URL
	rate   float64 // fraction of requests that fail
	delay  time.Duration
	ec2    ec2Settings      // what EC2 does that kumo does not; set before the first request
	now    func() time.Time // the model's time (a test may drive it)
	kinds  []string         // the fault kinds to draw from; nil: every kind
	// refuseRuns: the next this many RunInstances get kinds[0], whatever the draw (a
	// test that must meet a refusal).
	refuseRuns int

	mu       sync.Mutex
	rng      *rand.Rand
	byToken  map[string]*tokenLaunch   // RunInstances ClientToken → what EC2 made of it
	insts    map[string]*modelInstance // instance id → what EC2 shows of it, for instances launched here
	tagQueue []lateWrite               // CreateTags calls EC2 has accepted and not yet shows
	injected map[string]int            // fault or behaviour kind → count
	requests int
	// onRunInstances sees every RunInstances request and answer that created instances
	// (first time per token), called with the proxy's lock held so that launches are
	// seen one at a time: the harness counts instances alive from it.
	onRunInstances func(l launchSeen)
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
		now:      time.Now,
		rng:      rand.New(rand.NewPCG(seed, seed^0x5eed)),
		byToken:  map[string]*tokenLaunch{},
		insts:    map[string]*modelInstance{},
		injected: map[string]int{},
	}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { p.handle(w, r, true) }))
	p.clean = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { p.handle(w, r, false) }))
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

// note counts one injected fault or modelled behaviour; p.mu must be held.
func (p *faultProxy) note(kind string) { p.injected[kind]++ }

// credentialScope reads the SigV4 scope: Credential=AK/date/region/service/aws4_request.
var credentialScope = regexp.MustCompile(`Credential=[^/]+/[^/]+/([^/]+)/([^/]+)/`)

// service is the SigV4 signing name of the request (ec2, dynamodb, s3, lambda, …).
func service(r *http.Request) string {
	m := credentialScope.FindStringSubmatch(r.Header.Get("Authorization"))
	if m == nil {
		return ""
	}
	return m[2]
}

// signingRegion is the region the request was signed for: the region it is sent to.
func signingRegion(r *http.Request) string {
	m := credentialScope.FindStringSubmatch(r.Header.Get("Authorization"))
	if m == nil {
		return ""
	}
	return m[1]
}

// proxyReq is one request as the proxy reads it.
type proxyReq struct {
	r      *http.Request
	body   []byte
	svc    string
	region string
	form   url.Values // EC2's query form
	action string     // EC2's Action
}

var netFaults = []string{"500", "503", "throttle", "reset-before", "reset-after", "slow"}

// pick decides this request's fate: "" (none), a network or service fault, or (for
// RunInstances) a quota or capacity refusal.
func (p *faultProxy) pick(action string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.requests++
	if action == "RunInstances" && p.refuseRuns > 0 && len(p.kinds) > 0 {
		p.refuseRuns--
		return p.kinds[0]
	}
	if p.rng.Float64() >= p.rate {
		return ""
	}
	kinds := netFaults
	if action == "RunInstances" {
		kinds = append(append([]string(nil), netFaults...), quotaCodes...)
	}
	if p.kinds != nil {
		kinds = p.kinds
	}
	k := kinds[p.rng.IntN(len(kinds))]
	if quotaMessages[k] == "" {
		p.injected[k]++ // a quota refusal is counted where it is given (runInstances)
	}
	return k
}

func (p *faultProxy) handle(w http.ResponseWriter, r *http.Request, faulty bool) {
	body, _ := io.ReadAll(r.Body)
	req := &proxyReq{r: r, body: body, svc: service(r), region: signingRegion(r)}
	if req.svc == "ec2" {
		req.form, _ = url.ParseQuery(string(body))
		req.action = req.form.Get("Action")
	}
	p.flushTags()
	if req.svc == "ec2" && p.refuses(req.region) {
		writeAWSError(w, "ec2", 403, "UnauthorizedOperation", "You are not authorized to perform this operation. User: "+
			"arn:aws:sts::000000000000:assumed-role/SpawnSweepOrchestratorRole/spawn is not authorized to perform: ec2:"+
			req.action+" with an explicit deny in a service control policy")
		return
	}
	fault := ""
	if faulty {
		fault = p.pick(req.action)
	}
	switch fault {
	case "500":
		writeAWSError(w, req.svc, 500, "InternalError", "injected internal error")
		return
	case "503":
		writeAWSError(w, req.svc, 503, "ServiceUnavailable", "injected unavailability")
		return
	case "throttle":
		code := "ThrottlingException"
		if req.svc == "ec2" {
			code = "RequestLimitExceeded"
		}
		writeAWSError(w, req.svc, 400, code, "injected throttle: Rate exceeded")
		return
	case "reset-before":
		resetConn(w)
		return
	}
	status, header, respBody, err := p.answer(req, fault)
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
	writeResponse(w, status, header, respBody)
}

// answer is what the service says: EC2 through the model, the rest as the emulator says.
func (p *faultProxy) answer(req *proxyReq, fault string) (int, http.Header, []byte, error) {
	if req.svc == "ec2" {
		return p.ec2Answer(req, fault)
	}
	return p.forward(req)
}

func writeResponse(w http.ResponseWriter, status int, header http.Header, body []byte) {
	for k, vs := range header {
		if k == "Content-Length" { // the model may have rewritten the body
			continue
		}
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// forward sends the request to the emulator. Once a request reaches the service it is
// carried out, even if the caller stops listening (as AWS does): a launch or a write may
// happen with no one told.
func (p *faultProxy) forward(req *proxyReq) (int, http.Header, []byte, error) {
	fctx, cancel := context.WithTimeout(context.WithoutCancel(req.r.Context()), 30*time.Second)
	defer cancel()
	return p.send(fctx, req.r.Method, req.r.URL.RequestURI(), req.r.Header, req.r.Host, req.body)
}

func (p *faultProxy) send(ctx context.Context, method, uri string, header http.Header, host string, body []byte) (int, http.Header, []byte, error) {
	out, err := http.NewRequestWithContext(ctx, method, p.target.String()+uri, bytes.NewReader(body))
	if err != nil {
		return 0, nil, nil, err
	}
	out.Header = header.Clone()
	out.Host = host
	resp, err := http.DefaultTransport.RoundTrip(out)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	respBody, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, nil, err
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

// ec2Error is an EC2 error answer (EC2 API reference, "Error codes": the XML shape of
// the query protocol).
func ec2Error(status int, code, msg string) (int, http.Header, []byte) {
	return status, http.Header{"Content-Type": {"text/xml;charset=UTF-8"}}, []byte(`<?xml version="1.0" encoding="UTF-8"?>` +
		`<Response><Errors><Error><Code>` + code + `</Code><Message>` + xmlEscape(msg) +
		`</Message></Error></Errors><RequestID>injected</RequestID></Response>`)
}

func xmlEscape(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}

// writeAWSError answers in the error shape of the service's protocol.
func writeAWSError(w http.ResponseWriter, svc string, status int, code, msg string) {
	switch svc {
	case "ec2":
		st, h, b := ec2Error(status, code, msg)
		writeResponse(w, st, h, b)
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
