package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/aws/smithy-go/encoding/cbor"
)

// freshAccount sits in front of the emulator (or of a faultProxy) and answers as a fresh
// AWS account does where kumo and moto are lenient: what `spawn deploy` and the first
// sweep meet in their first minutes (EMULATORS.md, "Where AWS is stricter than every
// emulator here"). Each behaviour is off unless its setting is.
type freshAccount struct {
	srv    *httptest.Server
	target *url.URL
	now    func() time.Time

	// spotRoleMissing: the account never used Spot. A spot RunInstances is refused with
	// AuthFailure.ServiceLinkedRoleCreationNotPermitted until AWSServiceRoleForEC2Spot is
	// created (CreateServiceLinkedRole, answered here: kumo lacks it; a second create
	// answers InvalidInput "… has been taken"). Source: EC2 User Guide, "Service-linked
	// role for Spot Instances",
	// https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/service-linked-roles-spot-instance-requests.html,
	// and for the "has been taken" answer the AWS Batch User Guide,
	// https://docs.aws.amazon.com/batch/latest/userguide/spot-fleet-roles-cli.html.
	spotRoleMissing bool
	// profileLag: an instance profile is unknown to EC2 this long after
	// CreateInstanceProfile: RunInstances naming it (DryRun or not) answers
	// InvalidParameterValue "… Invalid IAM Instance Profile name". Source: EC2 User Guide,
	// "IAM roles for Amazon EC2" (https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/iam-roles-for-amazon-ec2.html)
	// and IAM User Guide, "Changes that I make are not always immediately visible"
	// (https://docs.aws.amazon.com/IAM/latest/UserGuide/troubleshoot_general.html#troubleshoot_general_eventual-consistency).
	// A DryRun RunInstances is never passed on (kumo would launch): it answers
	// DryRunOperation once the profile is known (EC2 API reference, RunInstances, DryRun:
	// https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_RunInstances.html).
	profileLag time.Duration
	// alarmRule: PutMetricAlarm refuses Period × EvaluationPeriods over 86,400 s for a
	// period under 3,600 s, and over 604,800 s for any (ValidationError), and the alarms
	// it accepts are kept for the test to read: one on EC2's CPUUtilization with a period
	// under 300 s never gets data with basic monitoring. Sources: CloudWatch API
	// reference, PutMetricAlarm, Period
	// (https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_PutMetricAlarm.html);
	// EC2 User Guide, "Manage detailed monitoring for your EC2 instances"
	// (https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/manage-detailed-monitoring.html).
	alarmRule bool
	// bucketLag: a new bucket answers NoSuchBucket (HEAD: 404) this long after
	// CreateBucket; abortCreates: that many CreateBucket calls answer OperationAborted
	// first, as after a destroy of the same name. Source: S3 API reference, CreateBucket
	// (https://docs.aws.amazon.com/AmazonS3/latest/API/API_CreateBucket.html) and "Error
	// responses" (https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html).
	bucketLag    time.Duration
	abortCreates int
	// uploadRate: the bytes per second the link carries a Lambda code upload
	// (CreateFunction, UpdateFunctionCode: the zip in one request, up to 50 MB; Lambda
	// Developer Guide, "Lambda quotas",
	// https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html); 0: at
	// full speed. loseCreate: the first CreateFunction is carried out and its answer lost,
	// so the SDK's retry meets ResourceConflictException (Lambda API reference,
	// CreateFunction, https://docs.aws.amazon.com/lambda/latest/api/API_CreateFunction.html).
	uploadRate int
	loseCreate bool

	mu             sync.Mutex
	profileMadeAt  time.Time
	spotRoleMade   bool
	bucketsMadeAt  map[string]time.Time
	lostCreateDone bool
	alarms         []alarmSeen
	noted          map[string]int
}

// alarmSeen is an alarm PutMetricAlarm accepted.
type alarmSeen struct {
	name, missing string
	period, evals int64
}

func newFreshAccount(target string) *freshAccount {
	u, err := url.Parse(target)
	if err != nil {
		panic(err)
	}
	f := &freshAccount{target: u, now: time.Now, bucketsMadeAt: map[string]time.Time{}, noted: map[string]int{}}
	f.srv = httptest.NewServer(http.HandlerFunc(f.handle))
	return f
}

func (f *freshAccount) URL() string { return f.srv.URL }
func (f *freshAccount) Close()      { f.srv.Close() }

func (f *freshAccount) note(kind string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.noted[kind]++
}

func (f *freshAccount) counts() map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	m := map[string]int{}
	for k, v := range f.noted {
		m[k] = v
	}
	return m
}

func (f *freshAccount) handle(w http.ResponseWriter, r *http.Request) {
	svc := service(r)
	body, err := f.readBody(r, svc)
	if err != nil {
		return
	}
	var done bool
	switch svc {
	case "iam":
		done = f.iam(w, r, body)
	case "ec2":
		done = f.ec2(w, body)
	case "s3":
		done = f.s3(w, r)
	case "monitoring":
		done = f.cloudWatch(w, r, body)
	}
	if done {
		return
	}
	st, h, b, err := f.forward(r, body)
	if err != nil {
		resetConn(w)
		return
	}
	f.after(w, r, svc, body, st)
	if f.loseAnswer(r, svc, st) {
		resetConn(w)
		return
	}
	writeResponse(w, st, h, b)
}

// readBody reads the request, a Lambda code upload at uploadRate.
func (f *freshAccount) readBody(r *http.Request, svc string) ([]byte, error) {
	if svc != "lambda" || f.uploadRate <= 0 || !isCodeUpload(r) {
		return io.ReadAll(r.Body)
	}
	f.note("slow-upload")
	var buf bytes.Buffer
	chunk := make([]byte, 64<<10)
	for {
		n, err := r.Body.Read(chunk)
		buf.Write(chunk[:n])
		if err == io.EOF {
			return buf.Bytes(), nil
		}
		if err != nil {
			return nil, err
		}
		select {
		case <-time.After(time.Duration(n) * time.Second / time.Duration(f.uploadRate)):
		case <-r.Context().Done():
			return nil, r.Context().Err()
		}
	}
}

// isCodeUpload: CreateFunction (POST …/functions) or UpdateFunctionCode (PUT …/code).
func isCodeUpload(r *http.Request) bool {
	p := strings.TrimSuffix(r.URL.Path, "/")
	return r.Method == http.MethodPost && strings.HasSuffix(p, "/functions") ||
		r.Method == http.MethodPut && strings.HasSuffix(p, "/code")
}

// loseAnswer: the first CreateFunction that landed has its answer lost.
func (f *freshAccount) loseAnswer(r *http.Request, svc string, status int) bool {
	if !f.loseCreate || svc != "lambda" || r.Method != http.MethodPost || status/100 != 2 ||
		!strings.HasSuffix(strings.TrimSuffix(r.URL.Path, "/"), "/functions") {
		return false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.lostCreateDone {
		return false
	}
	f.lostCreateDone = true
	f.noted["lost-create-answer"]++
	return true
}

func (f *freshAccount) forward(r *http.Request, body []byte) (int, http.Header, []byte, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 30*time.Second)
	defer cancel()
	out, err := http.NewRequestWithContext(ctx, r.Method, f.target.String()+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		return 0, nil, nil, err
	}
	out.Header = r.Header.Clone()
	out.Host = r.Host
	resp, err := http.DefaultTransport.RoundTrip(out)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b, err
}

// after records what a passed-on call made: an instance profile, a bucket.
func (f *freshAccount) after(_ http.ResponseWriter, r *http.Request, svc string, body []byte, status int) {
	if status/100 != 2 {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case svc == "iam" && formAction(body) == "CreateInstanceProfile":
		f.profileMadeAt = f.now()
	case svc == "s3" && isCreateBucket(r):
		f.bucketsMadeAt[bucketOfPath(r)] = f.now()
	}
}

func formAction(body []byte) string {
	form, _ := url.ParseQuery(string(body))
	return form.Get("Action")
}

// iam answers the Spot service-linked role's calls itself.
func (f *freshAccount) iam(w http.ResponseWriter, _ *http.Request, body []byte) bool {
	if !f.spotRoleMissing {
		return false
	}
	form, _ := url.ParseQuery(string(body))
	f.mu.Lock()
	made := f.spotRoleMade
	f.mu.Unlock()
	switch {
	case form.Get("Action") == "CreateServiceLinkedRole" && form.Get("AWSServiceName") == spotService:
		if made {
			f.note("spot-role-taken")
			writeAWSError(w, "iam", 400, "InvalidInput", "Service role name "+spotRoleName+
				" has been taken in this account, please try a different suffix.")
			return true
		}
		f.mu.Lock()
		f.spotRoleMade = true
		f.mu.Unlock()
		f.note("spot-role-created")
		writeIAMRole(w, "CreateServiceLinkedRole")
		return true
	case form.Get("Action") == "GetRole" && form.Get("RoleName") == spotRoleName:
		if !made {
			writeAWSError(w, "iam", 404, "NoSuchEntity", "The role with name "+spotRoleName+" cannot be found.")
			return true
		}
		writeIAMRole(w, "GetRole")
		return true
	}
	return false
}

func writeIAMRole(w http.ResponseWriter, op string) {
	w.Header().Set("Content-Type", "text/xml")
	_, _ = io.WriteString(w, `<`+op+`Response xmlns="https://iam.amazonaws.com/doc/2010-05-08/"><`+op+`Result><Role>`+
		`<Path>/aws-service-role/`+spotService+`/</Path><RoleName>`+spotRoleName+`</RoleName><RoleId>AROAFRESHACCOUNT</RoleId>`+
		`<Arn>arn:aws:iam::000000000000:role/aws-service-role/`+spotService+`/`+spotRoleName+`</Arn>`+
		`<CreateDate>2026-01-01T00:00:00Z</CreateDate></Role></`+op+`Result><ResponseMetadata><RequestId>fresh</RequestId>`+
		`</ResponseMetadata></`+op+`Response>`)
}

// ec2 refuses the launches a fresh account refuses, and answers DryRun.
func (f *freshAccount) ec2(w http.ResponseWriter, body []byte) bool {
	form, _ := url.ParseQuery(string(body))
	if form.Get("Action") != "RunInstances" {
		return false
	}
	f.mu.Lock()
	spotRefused := f.spotRoleMissing && !f.spotRoleMade && form.Get("InstanceMarketOptions.MarketType") == "spot"
	profile := form.Get("IamInstanceProfile.Name")
	unknown := profile != "" && f.profileLag > 0 && !f.profileMadeAt.IsZero() && f.now().Before(f.profileMadeAt.Add(f.profileLag))
	f.mu.Unlock()
	dry := form.Get("DryRun") == "true"
	switch {
	case unknown:
		f.note("profile-not-visible")
		writeAWSError(w, "ec2", 400, "InvalidParameterValue", "Value ("+profile+
			") for parameter iamInstanceProfile.name is invalid. Invalid IAM Instance Profile name")
	case spotRefused:
		f.note("spot-role-missing")
		writeAWSError(w, "ec2", 403, codeSLRNotPermitted,
			"The provided credentials do not have permission to create the service-linked role for EC2 Spot Instances.")
	case dry:
		f.note("dry-run")
		writeAWSError(w, "ec2", 412, "DryRunOperation", "Request would have succeeded, but DryRun flag is set.")
	default:
		return false
	}
	return true
}

func isCreateBucket(r *http.Request) bool {
	q := r.URL.Query()
	q.Del("x-id")
	return r.Method == http.MethodPut && len(q) == 0 && strings.Count(strings.Trim(r.URL.Path, "/"), "/") == 0 && bucketOfPath(r) != ""
}

func bucketOfPath(r *http.Request) string {
	b, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	return b
}

// s3 refuses a new bucket's calls for bucketLag, and the first abortCreates creates.
func (f *freshAccount) s3(w http.ResponseWriter, r *http.Request) bool {
	bucket := bucketOfPath(r)
	f.mu.Lock()
	made, ok := f.bucketsMadeAt[bucket]
	abort := isCreateBucket(r) && f.abortCreates > 0
	if abort {
		f.abortCreates--
	}
	lagging := ok && !isCreateBucket(r) && f.now().Before(made.Add(f.bucketLag))
	f.mu.Unlock()
	switch {
	case abort:
		f.note("operation-aborted")
		writeAWSError(w, "s3", 409, "OperationAborted", "A conflicting conditional operation is currently in progress against this resource. Please try again.")
	case lagging && r.Method == http.MethodHead:
		f.note("no-such-bucket")
		w.WriteHeader(http.StatusNotFound)
	case lagging:
		f.note("no-such-bucket")
		writeAWSError(w, "s3", 404, "NoSuchBucket", "The specified bucket does not exist")
	default:
		return false
	}
	return true
}

// cloudWatch applies PutMetricAlarm's validation rule and keeps what it accepts.
func (f *freshAccount) cloudWatch(w http.ResponseWriter, r *http.Request, body []byte) bool {
	if !f.alarmRule || !strings.HasSuffix(r.URL.Path, "/operation/PutMetricAlarm") {
		return false
	}
	v, err := cbor.Decode(body)
	m, ok := v.(cbor.Map)
	if err != nil || !ok {
		writeCBORError(w, "InvalidParameterValue", "the request is not a CBOR map")
		return true
	}
	num := func(k string) int64 { n, _ := cbor.AsInt64(m[k]); return n }
	str := func(k string) string { s, _ := m[k].(cbor.String); return string(s) }
	period, evals := num("Period"), num("EvaluationPeriods")
	if window := period * evals; window > 604800 || period < 3600 && window > 86400 {
		f.note("alarm-refused")
		writeCBORError(w, "ValidationError", "The evaluation period (Period * EvaluationPeriods) of the alarm cannot exceed "+
			map[bool]string{true: "86400", false: "604800"}[period < 3600]+" seconds.")
		return true
	}
	if str("Namespace") == "AWS/EC2" && period < 300 {
		f.note("alarm-without-data") // basic monitoring publishes every 5 minutes
	}
	f.mu.Lock()
	f.alarms = append(f.alarms, alarmSeen{name: str("AlarmName"), missing: str("TreatMissingData"), period: period, evals: evals})
	f.mu.Unlock()
	return false
}

func writeCBORError(w http.ResponseWriter, code, msg string) {
	w.Header().Set("Content-Type", "application/cbor")
	w.Header().Set("smithy-protocol", "rpc-v2-cbor")
	w.WriteHeader(http.StatusBadRequest)
	_, _ = w.Write(cbor.Encode(cbor.Map{"__type": cbor.String(code), "message": cbor.String(msg)}))
}
