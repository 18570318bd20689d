package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	lambdasvc "github.com/aws/aws-sdk-go-v2/service/lambda"
	lambdatypes "github.com/aws/aws-sdk-go-v2/service/lambda/types"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/rs/zerolog"
)

// The function: the events it answers, the engine wired to real AWS clients, and the
// Lambda handler around one invocation.

// orchestratorEvent is the function's input (docs/design.md, the function's event).
type orchestratorEvent struct {
	SweepID       string     `json:"sweep_id"`
	ForceDownload bool       `json:"force_download"`
	HealthCheck   bool       `json:"health_check,omitempty"`
	LeaseWatch    *leaseNote `json:"lease_watch,omitempty"` // set by an invocation that handed on while watching
	// Watchdog is the watchdog rule's constant input; Source and DetailType identify the
	// scheduled event the rule sends without one (watchdog.go).
	Watchdog   bool   `json:"watchdog,omitempty"`
	Source     string `json:"source,omitempty"`
	DetailType string `json:"detail-type,omitempty"`
}

// healthAnswer is the function's answer to {"health_check": true}.
type healthAnswer struct {
	OK      bool       `json:"ok"`
	Version versionDoc `json:"version"`
	Account string     `json:"account,omitempty"`
	ARN     string     `json:"arn,omitempty"`
}

// lambdaInvoker is the part of the Lambda client that re-invokes the orchestrator.
type lambdaInvoker interface {
	Invoke(ctx context.Context, in *lambdasvc.InvokeInput, optFns ...func(*lambdasvc.Options)) (*lambdasvc.InvokeOutput, error)
}

// invokeEvent starts the orchestrator function asynchronously for a sweep.
func invokeEvent(ctx context.Context, lc lambdaInvoker, function string, ev orchestratorEvent) error {
	payload, _ := json.Marshal(ev)
	_, err := lc.Invoke(ctx, &lambdasvc.InvokeInput{
		FunctionName:   aws.String(function),
		InvocationType: lambdatypes.InvocationTypeEvent,
		Payload:        payload,
	})
	return err
}

// engineDeps is what an orchestrator needs from AWS, for the function and the CLI alike.
type engineDeps struct {
	cfg      aws.Config
	account  string // the caller's own account
	store    sweepStore
	index    runningIndex
	params   *paramsStore
	s3       s3Reports
	clients  *awsClients
	lambda   lambdaInvoker
	function string
	pricer   *pricer // one per process: its cache outlives an invocation in a warm Lambda
	log      zerolog.Logger
}

func newEngineDeps(cfg aws.Config, account, callerARN, table, instancesTable, bucket, function string, log zerolog.Logger) *engineDeps {
	s3c := newS3Client(cfg, account)
	store := newDynamoStore(dynamodb.NewFromConfig(cfg), table, instancesTable)
	return &engineDeps{
		cfg:      cfg,
		account:  account,
		store:    store,
		index:    store,
		params:   newParamsStore(s3c, bucket, ""),
		s3:       s3c,
		clients:  newAWSClients(cfg, account, partitionOf(callerARN)),
		lambda:   lambdasvc.NewFromConfig(cfg),
		function: function,
		pricer:   newPricer(cfg, callerARN),
		log:      log,
	}
}

// watchdog answers the watchdog's event: every detached sweep nobody drives gets an
// invocation of its own.
func (d *engineDeps) watchdog(ctx context.Context) (watchdogAnswer, error) {
	ans, err := watchdog(ctx, d.store, d.index, time.Now(), func(ctx context.Context, id string) error {
		return invokeEvent(ctx, d.lambda, d.function, orchestratorEvent{SweepID: id})
	})
	if err != nil {
		d.log.Error().Err(err).Msg("watchdog: reading the running sweeps; the next watchdog tries again")
		return ans, err
	}
	d.log.Info().Int("running", ans.Running).Strs("revived", ans.Revived).Int("attached", ans.Attached).
		Strs("failed", ans.Failed).Msg("watchdog")
	return ans, nil
}

// bucketOf is the sweep's bucket: the one its record names, else the deployment's.
func bucketOf(sw *sweep, deployed string) string {
	if sw.S3Bucket != "" {
		return sw.S3Bucket
	}
	return deployed
}

// newOrchestrator wires an engine to real clients. detached: re-invoke the function at
// the deadline (Lambda); otherwise the caller runs with no deadline (the CLI).
func (d *engineDeps) newOrchestrator(owner string, forceDownload, detached bool) *orchestrator {
	o := &orchestrator{
		store:       d.store,
		launchInput: runInstancesInput,
		price:       d.pricer.priceFor,
		clock:       realClock{},
		owner:       owner,
		log:         d.log,
	}
	// The sweep's account is known once its record is read; the clients follow it.
	account := func() string { return o.sweepAccount }
	o.ec2For = func(_ context.Context, region string) (ec2API, error) {
		return d.clients.ec2For(account(), region), nil
	}
	o.alarmsFor = func(_ context.Context, region string) (alarmAPI, error) {
		return d.clients.alarmsFor(account(), region), nil
	}
	o.loadItems = func(ctx context.Context, sw *sweep) ([]item, error) {
		raw, err := d.params.downloadParams(ctx, sw.S3ParamsKey, sw.ParamsChecksum, forceDownload)
		if err != nil {
			return nil, err
		}
		items, err := parseParamFile(sw.S3ParamsKey, raw)
		if err != nil {
			return nil, err
		}
		return items, d.resolveAMIs(ctx, sw, items)
	}
	o.consistencyWindow = envDuration("SPAWN_EC2_CONSISTENCY_WINDOW", ec2ConsistencyWindow)
	o.reportWait = envDuration("SPAWN_EXIT_REPORT_WAIT", exitReportWait)
	o.exitReports = func(ctx context.Context, sw *sweep, e *aliveInstance) (*exitReport, error) {
		return readExitReport(ctx, d.s3, bucketOf(sw, d.params.bucket), sw.SweepID, e.Index, e.Attempt, e.InstanceID)
	}
	o.exitReporter = func(ctx context.Context, sw *sweep, e *aliveInstance) (string, error) {
		return exitReporter(ctx, d.s3, bucketOf(sw, d.params.bucket), sw.SweepID, e.Index, e.Attempt)
	}
	o.results = func(ctx context.Context, sw *sweep, e *aliveInstance) (*itemResult, error) {
		return readResult(ctx, d.s3, bucketOf(sw, d.params.bucket), sw.SweepID, e.Index, e.InstanceID)
	}
	if detached {
		// Every Lambda invocation's clock is kept in step by AWS: one clock for waits.
		o.clockName = lambdaClock
		o.invokeAsync = func(ctx context.Context, id string, watch *leaseNote) error {
			return invokeEvent(ctx, d.lambda, d.function, orchestratorEvent{SweepID: id, LeaseWatch: watch})
		}
	}
	return o
}

// runLambda serves orchestrator events on the Lambda runtime API until the runtime stops it.
func runLambda() {
	log := newLogger(os.Stderr, zerolog.InfoLevel, true)
	h := &lambdaHandler{log: log}
	lambda.Start(h.handle)
}

// lambdaHandler is the function: built once per cold start, on the first event.
type lambdaHandler struct {
	log  zerolog.Logger
	mu   sync.Mutex
	deps *engineDeps // nil until a setup succeeds: a failed one is tried again next event
	arn  string
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// setup builds the function's clients once per Lambda instance. Its own account decides
// which sweeps are cross-account, so a failed GetCallerIdentity is an error, retried with
// the next event, never an empty account kept for the instance's life.
func (h *lambdaHandler) setup(ctx context.Context) (*engineDeps, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.deps != nil {
		return h.deps, nil
	}
	cfg, err := loadAWSConfig(ctx, "", "", "", h.log)
	if err != nil {
		return nil, err
	}
	id, err := sts.NewFromConfig(cfg).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil {
		return nil, fmt.Errorf("asking STS who the function is (its own account tells cross-account sweeps apart): %w", err)
	}
	account, arn := aws.ToString(id.Account), aws.ToString(id.Arn)
	bucket := envOr("SPAWN_BUCKET", defaultBucketName(account, cfg.Region))
	h.deps = newEngineDeps(cfg, account, arn, envOr("SPAWN_TABLE", defaultTable), envOr("SPAWN_INSTANCES_TABLE", defaultInstancesTable),
		bucket, envOr("AWS_LAMBDA_FUNCTION_NAME", defaultFunction), h.log)
	h.arn = arn
	return h.deps, nil
}

// errMalformedEvent: the event is neither a sweep to run nor a health check.
var errMalformedEvent = errors.New(`malformed event: expected {"sweep_id": "..."} or {"health_check": true}`)

// decodeEvent reads the function's input: an event is accepted when it is JSON of the
// orchestratorEvent shape that names a sweep or asks for a health check.
func decodeEvent(raw []byte) (orchestratorEvent, error) {
	var ev orchestratorEvent
	if err := json.Unmarshal(raw, &ev); err != nil {
		return orchestratorEvent{}, fmt.Errorf("%w: %w", errMalformedEvent, err)
	}
	if ev.isScheduledEvent() {
		ev.Watchdog = true
	}
	if !ev.HealthCheck && !ev.Watchdog && ev.SweepID == "" {
		return orchestratorEvent{}, errMalformedEvent
	}
	return ev, nil
}

func (h *lambdaHandler) handle(ctx context.Context, raw json.RawMessage) (any, error) {
	ev, err := decodeEvent(raw)
	if err != nil {
		h.log.Error().Str("event", string(raw)).Msg(`malformed event: expected {"sweep_id": "..."}, {"watchdog": true} or {"health_check": true}; not retried`)
		return nil, nil
	}
	deps, err := h.setup(ctx)
	if ev.HealthCheck {
		ans := healthAnswer{OK: err == nil, Version: versionInfo()}
		if deps != nil {
			ans.Account, ans.ARN = deps.account, h.arn
		}
		return ans, nil
	}
	if err != nil {
		return nil, err
	}
	if ev.Watchdog {
		return deps.watchdog(ctx)
	}
	// Lambda's retries and duplicate deliveries of one event reuse its request id: the
	// owner adds a random part, so a duplicate is never mistaken for the holder itself.
	owner := newOwnerID("lambda")
	if lc, ok := lambdacontext.FromContext(ctx); ok && lc.AwsRequestID != "" {
		owner = "lambda-" + lc.AwsRequestID + "-" + randomHex(4)
	}
	deadline, _ := ctx.Deadline()
	h.log.Info().Str("sweep_id", ev.SweepID).Str("owner", owner).Time("deadline", deadline).Msg("invocation started")
	o := deps.newOrchestrator(owner, ev.ForceDownload, true)
	o.watched = ev.LeaseWatch
	err = o.run(ctx, ev.SweepID, deadline)
	switch {
	case err == nil:
		return nil, nil
	case errors.Is(err, errLeaseHeld):
		return nil, nil // a duplicate beside a live holder
	case errors.Is(err, errSweepNotFound):
		h.log.Error().Str("sweep_id", ev.SweepID).Err(err).Msg("unknown sweep; not retried")
		return nil, nil
	}
	// Lambda retries the event; the retry takes over once the lease is free or expired.
	h.log.Error().Str("sweep_id", ev.SweepID).Err(err).Msg("invocation ended with an error")
	return nil, err
}
