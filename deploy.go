package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/eventbridge"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
	"github.com/rs/zerolog"
)

// Names of the IAM resources deploy creates (docs/design.md, Resources).
const (
	orchestratorRoleName = "SpawnSweepOrchestratorRole"
	crossAccountRoleName = "SpawnSweepCrossAccountRole"
	instanceRoleName     = "spawnd-role" // also the instance profile's name
	rolePolicyName       = "spawn"       // each role's inline policies are spawn-<region> (deploy_iam.go)
	lifecycleRuleID      = "spawn-expire-after-30-days"
	// logsPrefix is the only prefix the rule expires: params, results and exit records
	// are kept for as long as the sweep (destroy removes them).
	logsPrefix       = "logs/"
	bucketExpiryDays = 30
	functionTimeout  = 900
	// defaultMemoryMB: a 100,000-item sweep peaks at about 90 MB resident (48 MB of Go
	// heap: the parsed items, the record, one step; BenchmarkOrchestratorMemory100k), so
	// 128 MB would leave too little headroom; 192 MB leaves twice the peak.
	defaultMemoryMB = 192
	// Lambda keeps retrying a failed async invocation twice; the event may wait an hour
	// at most, after which the orchestrator's lease has long expired anyway.
	asyncRetryAttempts = 2
	asyncMaxEventAge   = 3600
	// The AL2023 AMI ids are public SSM parameters under this path in every region.
	al2023ParameterPath = "/aws/service/ami-amazon-linux-latest/"
)

// Actions reported for each resource in the output of deploy and destroy.
const (
	actionCreated   = "created"
	actionUpdated   = "updated"
	actionUnchanged = "unchanged"
	actionDeleted   = "deleted"
	actionSkipped   = "skipped"
)

// Resource kinds, one output line each.
const (
	kindBucket           = "bucket"
	kindTable            = "table"
	kindPITR             = "point-in-time-recovery"
	kindRole             = "role"
	kindInstanceProfile  = "instance-profile"
	kindFunction         = "function"
	kindRecursionConfig  = "recursion-config"
	kindEventInvokeConfg = "event-invoke-config"
	kindHealthCheck      = "health-check"
	kindAllowList        = "allow-list"
)

// resourceResult is one line of deploy's or destroy's output.
type resourceResult struct {
	Kind   string `json:"kind"`
	Name   string `json:"name"`
	ARN    string `json:"arn"`
	Action string `json:"action"`
	Reason string `json:"reason,omitempty"`
}

// The SDK calls deploy and destroy make.

type deployS3API interface {
	HeadBucket(context.Context, *s3.HeadBucketInput, ...func(*s3.Options)) (*s3.HeadBucketOutput, error)
	CreateBucket(context.Context, *s3.CreateBucketInput, ...func(*s3.Options)) (*s3.CreateBucketOutput, error)
	GetBucketLifecycleConfiguration(context.Context, *s3.GetBucketLifecycleConfigurationInput, ...func(*s3.Options)) (*s3.GetBucketLifecycleConfigurationOutput, error)
	PutBucketLifecycleConfiguration(context.Context, *s3.PutBucketLifecycleConfigurationInput, ...func(*s3.Options)) (*s3.PutBucketLifecycleConfigurationOutput, error)
	GetPublicAccessBlock(context.Context, *s3.GetPublicAccessBlockInput, ...func(*s3.Options)) (*s3.GetPublicAccessBlockOutput, error)
	PutPublicAccessBlock(context.Context, *s3.PutPublicAccessBlockInput, ...func(*s3.Options)) (*s3.PutPublicAccessBlockOutput, error)
	GetBucketPolicy(context.Context, *s3.GetBucketPolicyInput, ...func(*s3.Options)) (*s3.GetBucketPolicyOutput, error)
	PutBucketPolicy(context.Context, *s3.PutBucketPolicyInput, ...func(*s3.Options)) (*s3.PutBucketPolicyOutput, error)
	DeleteBucketPolicy(context.Context, *s3.DeleteBucketPolicyInput, ...func(*s3.Options)) (*s3.DeleteBucketPolicyOutput, error)
	ListObjectVersions(context.Context, *s3.ListObjectVersionsInput, ...func(*s3.Options)) (*s3.ListObjectVersionsOutput, error)
	DeleteObjects(context.Context, *s3.DeleteObjectsInput, ...func(*s3.Options)) (*s3.DeleteObjectsOutput, error)
	DeleteBucket(context.Context, *s3.DeleteBucketInput, ...func(*s3.Options)) (*s3.DeleteBucketOutput, error)
}

type deployDynamoAPI interface {
	DescribeTable(context.Context, *dynamodb.DescribeTableInput, ...func(*dynamodb.Options)) (*dynamodb.DescribeTableOutput, error)
	CreateTable(context.Context, *dynamodb.CreateTableInput, ...func(*dynamodb.Options)) (*dynamodb.CreateTableOutput, error)
	UpdateTable(context.Context, *dynamodb.UpdateTableInput, ...func(*dynamodb.Options)) (*dynamodb.UpdateTableOutput, error)
	DescribeContinuousBackups(context.Context, *dynamodb.DescribeContinuousBackupsInput, ...func(*dynamodb.Options)) (*dynamodb.DescribeContinuousBackupsOutput, error)
	UpdateContinuousBackups(context.Context, *dynamodb.UpdateContinuousBackupsInput, ...func(*dynamodb.Options)) (*dynamodb.UpdateContinuousBackupsOutput, error)
	DeleteTable(context.Context, *dynamodb.DeleteTableInput, ...func(*dynamodb.Options)) (*dynamodb.DeleteTableOutput, error)
	Scan(context.Context, *dynamodb.ScanInput, ...func(*dynamodb.Options)) (*dynamodb.ScanOutput, error)
	PutItem(context.Context, *dynamodb.PutItemInput, ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error)
}

type deployLambdaAPI interface {
	GetFunction(context.Context, *lambda.GetFunctionInput, ...func(*lambda.Options)) (*lambda.GetFunctionOutput, error)
	CreateFunction(context.Context, *lambda.CreateFunctionInput, ...func(*lambda.Options)) (*lambda.CreateFunctionOutput, error)
	UpdateFunctionCode(context.Context, *lambda.UpdateFunctionCodeInput, ...func(*lambda.Options)) (*lambda.UpdateFunctionCodeOutput, error)
	UpdateFunctionConfiguration(context.Context, *lambda.UpdateFunctionConfigurationInput, ...func(*lambda.Options)) (*lambda.UpdateFunctionConfigurationOutput, error)
	GetFunctionRecursionConfig(context.Context, *lambda.GetFunctionRecursionConfigInput, ...func(*lambda.Options)) (*lambda.GetFunctionRecursionConfigOutput, error)
	PutFunctionRecursionConfig(context.Context, *lambda.PutFunctionRecursionConfigInput, ...func(*lambda.Options)) (*lambda.PutFunctionRecursionConfigOutput, error)
	GetFunctionEventInvokeConfig(context.Context, *lambda.GetFunctionEventInvokeConfigInput, ...func(*lambda.Options)) (*lambda.GetFunctionEventInvokeConfigOutput, error)
	PutFunctionEventInvokeConfig(context.Context, *lambda.PutFunctionEventInvokeConfigInput, ...func(*lambda.Options)) (*lambda.PutFunctionEventInvokeConfigOutput, error)
	Invoke(context.Context, *lambda.InvokeInput, ...func(*lambda.Options)) (*lambda.InvokeOutput, error)
	DeleteFunction(context.Context, *lambda.DeleteFunctionInput, ...func(*lambda.Options)) (*lambda.DeleteFunctionOutput, error)
}

// isNotFound reports a resource (or a bucket setting) that does not exist.
func isNotFound(err error) bool {
	switch apiErrorCode(err) {
	case "NoSuchEntity", "ResourceNotFoundException", "NotFound", "NoSuchBucket",
		"NoSuchLifecycleConfiguration", "NoSuchBucketPolicy", "NoSuchPublicAccessBlockConfiguration",
		"TableNotFoundException":
		return true
	}
	var re *awshttp.ResponseError
	return errors.As(err, &re) && re.HTTPStatusCode() == 404
}

// shortError is an SDK error's operation, code and message, without the request
// metadata and body-decoding noise of an endpoint that does not know the operation.
func shortError(err error) string {
	op := ""
	var oe *smithy.OperationError
	if errors.As(err, &oe) {
		op = oe.Operation() + ": "
	}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		if msg := ae.ErrorMessage(); msg != "" {
			return op + ae.ErrorCode() + ": " + msg
		}
		return op + ae.ErrorCode()
	}
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		return fmt.Sprintf("%sHTTP %d", op, re.HTTPStatusCode())
	}
	return err.Error()
}

// deployer creates or brings up to date every resource of one deployment. With dryRun
// it only reads and reports what it would do.
type deployer struct {
	log      zerolog.Logger
	dryRun   bool
	emulated bool // an endpoint override: an optional API an emulator lacks is skipped, not fatal
	// plainHTTP: S3 is reached over plain http (an emulator). A TLS-only bucket policy
	// would refuse every request there, so its deny statement is left out.
	plainHTTP bool
	names     policyNames
	memoryMB  int32 // 0: defaultMemoryMB for a new function, keep an existing function's

	s3          deployS3API
	ddb         deployDynamoAPI
	iam         deployIAMAPI
	lambda      deployLambdaAPI
	ec2         deployEC2API // the instance-profile check; nil: none
	permissions deployPermissionAPI
	events      deployEventsAPI

	compute *computeTarget // --compute-profile, or nil

	// allowTypes and allowRegions are --allow-instance-types and --allow-regions;
	// allowBefore the lists a previous deploy wrote (loadPrevious).
	allowTypes, allowRegions allowChange
	allowBefore              allowLists

	// propagationDelay is the first wait before retrying a call that IAM's eventual
	// consistency refused; it doubles up to propagationWait in total.
	propagationDelay time.Duration
	propagationWait  time.Duration
	// healthWait bounds the retries of the health check (a fresh function may not run yet).
	healthWait time.Duration
	// probeProfile: ask EC2 (DryRun) whether it accepts the instance profile yet; only
	// against AWS, as emulators ignore DryRun.
	probeProfile bool

	results []resourceResult
}

// computeTarget is the compute account of --compute-profile.
type computeTarget struct {
	account string
	iam     deployIAMAPI
}

func newDeployer(d *deployment, log zerolog.Logger, dryRun bool) *deployer {
	lambdaClient := lambda.NewFromConfig(d.cfg)
	return &deployer{
		log:       log,
		dryRun:    dryRun,
		emulated:  endpointOverridden(d.cfg),
		plainHTTP: s3PlainHTTP(d.cfg),
		names: policyNames{
			partition: partitionOf(d.userID), account: d.accountID, region: d.region,
			table: d.table, instancesTable: d.instancesTable, bucket: d.bucket, function: d.function,
		},
		s3:               newS3Client(d.cfg, d.accountID),
		ddb:              dynamodb.NewFromConfig(d.cfg),
		iam:              iam.NewFromConfig(d.cfg),
		lambda:           lambdaClient,
		permissions:      lambdaClient,
		ec2:              ec2.NewFromConfig(d.cfg),
		probeProfile:     !endpointOverridden(d.cfg),
		events:           eventbridge.NewFromConfig(d.cfg),
		propagationDelay: time.Second,
		propagationWait:  2 * time.Minute,
		healthWait:       20 * time.Second,
	}
}

func (d *deployer) report(r resourceResult) resourceResult {
	d.results = append(d.results, r)
	d.log.Debug().Str("kind", r.Kind).Str("name", r.Name).Str("action", r.Action).Msg("resource")
	return r
}

// optionalStep reports an optional setting the endpoint refused: skipped on an
// emulator (with the reason), an error against AWS.
func (d *deployer) optionalStep(kind, name, arn string, err error) error {
	if !d.emulated {
		return fmt.Errorf("%s %s: %w", kind, name, err)
	}
	d.report(resourceResult{Kind: kind, Name: name, ARN: arn, Action: actionSkipped,
		Reason: "not supported by the endpoint: " + shortError(err)})
	return nil
}

// deploy runs every step in dependency order: roles before the function that uses them
// and before the bucket policy that names them, the function before its health check.
func (d *deployer) deploy(ctx context.Context, pkg *bootstrapPackage) error {
	if err := d.checkIAMIsSpawns(ctx); err != nil {
		return err
	}
	if err := d.loadPrevious(ctx); err != nil {
		return err
	}
	for _, in := range []*dynamodb.CreateTableInput{sweepTableInput(d.names.table), instancesTableInput(d.names.instancesTable)} {
		if err := d.ensureTable(ctx, in); err != nil {
			return err
		}
	}
	orchARN, err := d.ensureRole(ctx, d.iam, d.names.account, orchestratorRoleName,
		lambdaTrustPolicy(), d.names.orchestratorPolicy())
	if err != nil {
		return err
	}
	if err := d.ensureInstanceRole(ctx, d.iam, d.names.account); err != nil {
		return err
	}
	if err := d.ensureSpotRole(ctx, d.iam, d.names.account); err != nil {
		return err
	}
	if c := d.compute; c != nil {
		if c.account != d.names.account {
			if err := d.ensureInstanceRole(ctx, c.iam, c.account); err != nil {
				return err
			}
			if err := d.ensureSpotRole(ctx, c.iam, c.account); err != nil {
				return err
			}
		}
		if _, err := d.ensureRole(ctx, c.iam, c.account, crossAccountRoleName,
			d.names.crossAccountTrustPolicy(orchARN), d.names.crossAccountPolicy(c.account)); err != nil {
			return err
		}
	}
	if err := d.ensureBucket(ctx); err != nil {
		return err
	}
	if err := d.recordDeployment(ctx); err != nil {
		return err
	}
	if err := d.waitProfileAccepted(ctx); err != nil {
		return err
	}
	fnARN, err := d.ensureFunction(ctx, pkg, orchARN)
	if err != nil {
		return err
	}
	if err := d.ensureRecursionConfig(ctx, fnARN); err != nil {
		return err
	}
	if err := d.ensureEventInvokeConfig(ctx, fnARN); err != nil {
		return err
	}
	if err := d.ensureWatchdog(ctx, fnARN); err != nil {
		return err
	}
	return d.healthCheck(ctx, fnARN, pkg)
}

// recordDeployment writes the deployment item into the sweep table: the CLI takes the
// bucket's name from it rather than deriving one (a bucket of that name may be another
// account's), `launch --compute-profile` the accounts the orchestrator may reach, and
// launch the allow-lists. Those are the orchestrator policy's (loadPrevious): every
// account a deploy of this region set up, this one's --compute-profile included, and the
// lists as this deploy wrote them there.
func (d *deployer) recordDeployment(ctx context.Context) error {
	if err := d.reportAllowLists(ctx); err != nil {
		return err
	}
	if d.dryRun {
		return nil
	}
	item, err := marshalItem(&deploymentItem{SweepID: deploymentItemID, Bucket: d.names.bucket, Function: d.names.function,
		Account: d.names.account, Region: d.names.region, ComputeAccounts: d.names.computeAccounts,
		AllowedInstanceTypes: d.names.allow.InstanceTypes, AllowedRegions: d.names.allow.Regions})
	if err != nil {
		return err
	}
	if _, err := d.ddb.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(d.names.table), Item: item}); err != nil {
		return fmt.Errorf("recording the deployment in table %s: %w", d.names.table, err)
	}
	return nil
}

// ensureTable creates the table or checks that the existing one is spawn's (same keys)
// and on-demand with the GSI, then turns on point-in-time recovery.
func (d *deployer) ensureTable(ctx context.Context, in *dynamodb.CreateTableInput) error {
	name := aws.ToString(in.TableName)
	arn := d.names.tableARN(name)
	out, err := d.ddb.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: in.TableName})
	created := false
	switch {
	case isNotFound(err):
		created = true
		if !d.dryRun {
			cout, err := d.ddb.CreateTable(ctx, in)
			if err != nil {
				return fmt.Errorf("creating table %s: %w", name, err)
			}
			arn = aws.ToString(cout.TableDescription.TableArn)
			if err := d.waitTable(ctx, name); err != nil {
				return err
			}
		}
		d.report(resourceResult{Kind: kindTable, Name: name, ARN: arn, Action: actionCreated})
	case err != nil:
		return fmt.Errorf("reading table %s: %w", name, err)
	default:
		t := out.Table
		arn = aws.ToString(t.TableArn)
		if !sameKeySchema(t.KeySchema, in.KeySchema) {
			return fmt.Errorf("table %s exists with another key schema: it is not spawn's; pass --table or --instances-table to use another name", name)
		}
		update := &dynamodb.UpdateTableInput{TableName: in.TableName}
		changed := false
		if t.BillingModeSummary == nil || t.BillingModeSummary.BillingMode != ddbtypes.BillingModePayPerRequest {
			update.BillingMode = ddbtypes.BillingModePayPerRequest
			changed = true
		}
		for _, g := range in.GlobalSecondaryIndexes {
			if !hasIndex(t.GlobalSecondaryIndexes, aws.ToString(g.IndexName)) {
				// UpdateTable creates one index per call; spawn has one.
				update.AttributeDefinitions = in.AttributeDefinitions
				update.GlobalSecondaryIndexUpdates = []ddbtypes.GlobalSecondaryIndexUpdate{{
					Create: &ddbtypes.CreateGlobalSecondaryIndexAction{
						IndexName: g.IndexName, KeySchema: g.KeySchema, Projection: g.Projection,
					},
				}}
				changed = true
			}
		}
		action := actionUnchanged
		if changed {
			action = actionUpdated
			if !d.dryRun {
				if _, err := d.ddb.UpdateTable(ctx, update); err != nil {
					return fmt.Errorf("updating table %s to on-demand billing and its index: %w", name, err)
				}
				if err := d.waitTable(ctx, name); err != nil {
					return err
				}
			}
		}
		d.report(resourceResult{Kind: kindTable, Name: name, ARN: arn, Action: action})
	}
	return d.ensurePITR(ctx, name, arn, created)
}

func (d *deployer) waitTable(ctx context.Context, name string) error {
	w := dynamodb.NewTableExistsWaiter(d.ddb, func(o *dynamodb.TableExistsWaiterOptions) { o.MinDelay = 2 * time.Second })
	if err := w.Wait(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(name)}, 5*time.Minute); err != nil {
		return fmt.Errorf("waiting for table %s to become active: %w", name, err)
	}
	return nil
}

func sameKeySchema(a, b []ddbtypes.KeySchemaElement) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if aws.ToString(a[i].AttributeName) != aws.ToString(b[i].AttributeName) || a[i].KeyType != b[i].KeyType {
			return false
		}
	}
	return true
}

func hasIndex(list []ddbtypes.GlobalSecondaryIndexDescription, name string) bool {
	for _, g := range list {
		if aws.ToString(g.IndexName) == name {
			return true
		}
	}
	return false
}

func (d *deployer) ensurePITR(ctx context.Context, table, arn string, tableCreated bool) error {
	action := actionUpdated
	if tableCreated {
		action = actionCreated
	}
	if !(d.dryRun && tableCreated) {
		out, err := d.ddb.DescribeContinuousBackups(ctx, &dynamodb.DescribeContinuousBackupsInput{TableName: aws.String(table)})
		if err != nil {
			return d.optionalStep(kindPITR, table, arn, err)
		}
		if desc := out.ContinuousBackupsDescription; desc != nil && desc.PointInTimeRecoveryDescription != nil &&
			desc.PointInTimeRecoveryDescription.PointInTimeRecoveryStatus == ddbtypes.PointInTimeRecoveryStatusEnabled {
			d.report(resourceResult{Kind: kindPITR, Name: table, ARN: arn, Action: actionUnchanged})
			return nil
		}
	}
	if !d.dryRun {
		// A table just created may refuse backups for a short while.
		unavailable := func(err error) bool { return apiErrorCode(err) == "ContinuousBackupsUnavailableException" }
		err := d.retryPropagation(ctx, "turning on point-in-time recovery for "+table, unavailable, func() error {
			_, err := d.ddb.UpdateContinuousBackups(ctx, &dynamodb.UpdateContinuousBackupsInput{
				TableName:                        aws.String(table),
				PointInTimeRecoverySpecification: &ddbtypes.PointInTimeRecoverySpecification{PointInTimeRecoveryEnabled: aws.Bool(true)},
			})
			return err
		})
		if err != nil {
			return d.optionalStep(kindPITR, table, arn, err)
		}
	}
	d.report(resourceResult{Kind: kindPITR, Name: table, ARN: arn, Action: action})
	return nil
}

// retryPropagation repeats fn while eventual consistency refuses it (a role just created
// is not usable everywhere at once), with backoff, for propagationWait at most.
func (d *deployer) retryPropagation(ctx context.Context, what string, propagating func(error) bool, fn func() error) error {
	delay := d.propagationDelay
	deadline := time.Now().Add(d.propagationWait)
	for {
		err := fn()
		if err == nil || !propagating(err) || time.Now().After(deadline) {
			return err
		}
		d.log.Info().Msgf("%s: waiting for AWS to propagate a new resource (%s)", what, shortError(err))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
		delay = min(delay*2, 10*time.Second)
	}
}

// isRoleNotAssumable is Lambda refusing a role IAM has not propagated yet.
func isRoleNotAssumable(err error) bool {
	var ae smithy.APIError
	return errors.As(err, &ae) && ae.ErrorCode() == "InvalidParameterValueException" &&
		strings.Contains(ae.ErrorMessage(), "cannot be assumed")
}

// isInvalidPrincipal is IAM or S3 refusing a principal (a role) that is not yet
// visible to them.
func isInvalidPrincipal(err error) bool {
	var ae smithy.APIError
	return errors.As(err, &ae) && (ae.ErrorCode() == "MalformedPolicyDocument" || ae.ErrorCode() == "MalformedPolicy") &&
		strings.Contains(strings.ToLower(ae.ErrorMessage()), "principal")
}

// versionOrNil: an unversioned bucket lists version "null", which DeleteObjects takes
// as a literal version id on some implementations.
func versionOrNil(v *string) *string {
	if aws.ToString(v) == "" || aws.ToString(v) == "null" {
		return nil
	}
	return v
}
