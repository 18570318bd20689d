package main

import (
	"archive/zip"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"reflect"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	iamtypes "github.com/aws/aws-sdk-go-v2/service/iam/types"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	lambdatypes "github.com/aws/aws-sdk-go-v2/service/lambda/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"
	"github.com/mattn/go-isatty"
	"github.com/peterbourgon/ff/v3/ffcli"
	"github.com/rs/zerolog"
)

// Names of the IAM resources deploy creates (SPEC.md's infrastructure table).
const (
	orchestratorRoleName = "SpawnSweepOrchestratorRole"
	crossAccountRoleName = "SpawnSweepCrossAccountRole"
	instanceRoleName     = "spawnd-role" // also the instance profile's name
	rolePolicyName       = "spawn"       // the one inline policy on each role
	lifecycleRuleID      = "spawn-expire-after-30-days"
	bucketExpiryDays     = 30
	functionTimeout      = 900
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

// Actions reported for each resource (SPEC.md `deploy` / `destroy` JSON).
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
)

// resourceResult is one line of deploy's or destroy's output.
type resourceResult struct {
	Kind   string `json:"kind"`
	Name   string `json:"name"`
	ARN    string `json:"arn"`
	Action string `json:"action"`
	Reason string `json:"reason,omitempty"`
}

// crossAccountExternalID is the sts:ExternalId the orchestrator passes when it assumes
// SpawnSweepCrossAccountRole. It is derived, not secret: the role trusts only the
// orchestrator role's ARN, and the id keeps another spawn installation (another account)
// from being tricked into using a role meant for this one.
func crossAccountExternalID(orchestratorAccountID string) string {
	return "spawn-" + orchestratorAccountID
}

// crossAccountRoleARN is the role the orchestrator assumes for sweeps in another account.
func crossAccountRoleARN(partition, computeAccountID string) string {
	return "arn:" + partition + ":iam::" + computeAccountID + ":role/" + crossAccountRoleName
}

// partitionOf reads the partition (aws, aws-cn, aws-us-gov) from an ARN.
func partitionOf(arn string) string {
	if parts := strings.SplitN(arn, ":", 3); len(parts) == 3 && parts[0] == "arn" && parts[1] != "" {
		return parts[1]
	}
	return "aws"
}

// ---- the bootstrap zip ----

// zipEpoch is the fixed timestamp of the zipped bootstrap, so an unchanged binary gives
// the same bytes and the same CodeSha256.
var zipEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// bootstrapPackage is the function's code: spawn zipped as "bootstrap".
type bootstrapPackage struct {
	path   string
	zip    []byte
	sha256 string // base64, as Lambda's CodeSha256
	arch   lambdatypes.Architecture
	goArch string // what the binary reports as runtime.GOARCH
}

// selfBootstrap is the executable to zip: --bootstrap, else this binary when it is a
// Linux build.
func selfBootstrap(flagPath string) (string, error) {
	if flagPath != "" {
		return flagPath, nil
	}
	if runtime.GOOS != "linux" {
		return "", usageErrorf("this spawn is a %s build and Lambda runs Linux: pass --bootstrap FILE with a Linux build of spawn (GOOS=linux GOARCH=arm64 go build -o spawn-linux-arm64)", runtime.GOOS)
	}
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("finding this executable to zip: %w (pass --bootstrap FILE)", err)
	}
	return exe, nil
}

// elfArchitecture reads the Lambda architecture from the binary itself, so a
// --bootstrap of another architecture is deployed as what it is.
func elfArchitecture(path string) (lambdatypes.Architecture, string, error) {
	f, err := elf.Open(path)
	if err != nil {
		return "", "", usageErrorf("%s is not a Linux executable (%v): pass --bootstrap FILE with a Linux build of spawn", path, err)
	}
	defer f.Close()
	if f.OSABI != elf.ELFOSABI_NONE && f.OSABI != elf.ELFOSABI_LINUX {
		return "", "", usageErrorf("%s is a %v executable, not Linux: pass --bootstrap FILE with a Linux build of spawn", path, f.OSABI)
	}
	if f.Type != elf.ET_EXEC && f.Type != elf.ET_DYN {
		return "", "", usageErrorf("%s is an ELF %v, not an executable: pass --bootstrap FILE with a Linux build of spawn", path, f.Type)
	}
	switch f.Machine {
	case elf.EM_X86_64:
		return lambdatypes.ArchitectureX8664, "amd64", nil
	case elf.EM_AARCH64:
		return lambdatypes.ArchitectureArm64, "arm64", nil
	}
	return "", "", usageErrorf("%s is a Linux %v executable and Lambda runs only x86_64 and arm64: build with GOARCH=amd64 or GOARCH=arm64", path, f.Machine)
}

// zipBootstrap zips the executable at path as "bootstrap" (mode 0755) with fixed
// timestamps: the same binary always gives the same zip.
func zipBootstrap(path string) (*bootstrapPackage, error) {
	arch, goArch, err := elfArchitecture(path)
	if err != nil {
		return nil, err
	}
	bin, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading the bootstrap: %w", err)
	}
	defer bin.Close()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	h := &zip.FileHeader{Name: "bootstrap", Method: zip.Deflate, Modified: zipEpoch}
	h.SetMode(0o755)
	w, err := zw.CreateHeader(h)
	if err != nil {
		return nil, fmt.Errorf("zipping the bootstrap: %w", err)
	}
	if _, err := io.Copy(w, bin); err != nil {
		return nil, fmt.Errorf("zipping %s: %w", path, err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("zipping the bootstrap: %w", err)
	}
	sum := sha256.Sum256(buf.Bytes())
	return &bootstrapPackage{
		path:   path,
		zip:    buf.Bytes(),
		sha256: base64.StdEncoding.EncodeToString(sum[:]),
		arch:   arch,
		goArch: goArch,
	}, nil
}

// ---- policies: Go values, so deploy, docs/permissions.md and the tests share them ----

// policyDocument is an IAM / S3 policy.
type policyDocument struct {
	Version   string            `json:"Version"`
	Statement []policyStatement `json:"Statement"`
}

type policyStatement struct {
	Sid       string                    `json:"Sid,omitempty"`
	Effect    string                    `json:"Effect"`
	Principal any                       `json:"Principal,omitempty"`
	Action    []string                  `json:"Action"`
	Resource  []string                  `json:"Resource,omitempty"`
	Condition map[string]map[string]any `json:"Condition,omitempty"`
}

func newPolicy(st ...policyStatement) policyDocument {
	return policyDocument{Version: "2012-10-17", Statement: st}
}

func (p policyDocument) json() string {
	b, err := json.Marshal(p)
	if err != nil {
		panic(err) // only strings, slices and maps: cannot fail
	}
	return string(b)
}

// policyNames is everything a policy names: the accounts, region and resource names.
type policyNames struct {
	partition      string
	account        string
	region         string
	table          string
	instancesTable string
	bucket         string
	function       string
	// computeAccounts are the other accounts whose SpawnSweepCrossAccountRole the
	// orchestrator may assume and whose spawnd-role may write logs to the bucket.
	computeAccounts []string
}

func (n policyNames) arn(service, region, account, resource string) string {
	return "arn:" + n.partition + ":" + service + ":" + region + ":" + account + ":" + resource
}

func (n policyNames) tableARN(table string) string {
	return n.arn("dynamodb", n.region, n.account, "table/"+table)
}

func (n policyNames) bucketARN() string { return "arn:" + n.partition + ":s3:::" + n.bucket }

func (n policyNames) functionARN() string {
	return n.arn("lambda", n.region, n.account, "function:"+n.function)
}

func (n policyNames) roleARN(account, name string) string {
	return "arn:" + n.partition + ":iam::" + account + ":role/" + name
}

func lambdaTrustPolicy() policyDocument {
	return newPolicy(policyStatement{
		Effect: "Allow", Principal: map[string]any{"Service": "lambda.amazonaws.com"},
		Action: []string{"sts:AssumeRole"},
	})
}

func ec2TrustPolicy() policyDocument {
	return newPolicy(policyStatement{
		Effect: "Allow", Principal: map[string]any{"Service": "ec2.amazonaws.com"},
		Action: []string{"sts:AssumeRole"},
	})
}

// ec2Statements are the EC2 calls the orchestrator makes in account: launch tagged
// instances, tag and terminate only spawn's, pass spawnd-role to them, read state and
// spot prices, and keep the idle-timeout alarms. Shared by the orchestrator role (its
// own account) and SpawnSweepCrossAccountRole (a compute account).
func (n policyNames) ec2Statements(account string) []policyStatement {
	ec2 := func(resource string) string { return n.arn("ec2", "*", account, resource) }
	return []policyStatement{
		{
			Sid: "LaunchOnlyTaggedInstances", Effect: "Allow",
			Action:    []string{"ec2:RunInstances"},
			Resource:  []string{ec2("instance/*")},
			Condition: map[string]map[string]any{"StringEquals": {"aws:RequestTag/spawn:managed": "true"}},
		},
		{
			// RunInstances also authorizes every resource the instance uses; these carry
			// no request tags, so they cannot be conditioned on them.
			Sid: "LaunchUsingResources", Effect: "Allow",
			Action: []string{"ec2:RunInstances"},
			Resource: []string{
				n.arn("ec2", "*", "", "image/*"),
				n.arn("ec2", "*", "", "snapshot/*"),
				ec2("subnet/*"), ec2("network-interface/*"), ec2("security-group/*"),
				ec2("volume/*"), ec2("key-pair/*"), ec2("spot-instances-request/*"),
			},
		},
		{
			Sid: "TagAtLaunch", Effect: "Allow",
			Action:    []string{"ec2:CreateTags"},
			Resource:  []string{ec2("instance/*"), ec2("volume/*"), ec2("network-interface/*"), ec2("spot-instances-request/*")},
			Condition: map[string]map[string]any{"StringEquals": {"ec2:CreateAction": "RunInstances"}},
		},
		{
			Sid: "TagAndTerminateOnlySpawnInstances", Effect: "Allow",
			Action:    []string{"ec2:CreateTags", "ec2:TerminateInstances"},
			Resource:  []string{ec2("instance/*")},
			Condition: map[string]map[string]any{"StringEquals": {"ec2:ResourceTag/spawn:managed": "true"}},
		},
		{
			// EC2's Describe calls (spot price history included) have no resource-level
			// permissions: IAM accepts only "*" for them.
			Sid: "ReadEC2State", Effect: "Allow",
			Action:   []string{"ec2:Describe*"},
			Resource: []string{"*"},
		},
		{
			Sid: "PassInstanceRoleToEC2Only", Effect: "Allow",
			Action:    []string{"iam:PassRole"},
			Resource:  []string{n.roleARN(account, instanceRoleName)},
			Condition: map[string]map[string]any{"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}},
		},
		{
			// Idle timeouts are CloudWatch alarms whose action terminates the instance; an
			// alarm must live in the instance's account.
			Sid: "IdleAlarms", Effect: "Allow",
			Action:   []string{"cloudwatch:PutMetricAlarm", "cloudwatch:DeleteAlarms", "cloudwatch:DescribeAlarms"},
			Resource: []string{n.arn("cloudwatch", "*", account, "alarm:spawn-*")},
		},
		{
			// An alarm's EC2 action runs as this service-linked role, created on first use.
			Sid: "AlarmActionsRole", Effect: "Allow",
			Action:    []string{"iam:CreateServiceLinkedRole"},
			Resource:  []string{"arn:" + n.partition + ":iam::" + account + ":role/aws-service-role/events.amazonaws.com/AWSServiceRoleForCloudWatchEvents*"},
			Condition: map[string]map[string]any{"StringEquals": {"iam:AWSServiceName": "events.amazonaws.com"}},
		},
	}
}

// orchestratorPolicy is the Lambda function's inline policy: least privilege, every
// statement scoped to spawn's resources where the API allows it.
func (n policyNames) orchestratorPolicy() policyDocument {
	sweepTable := n.tableARN(n.table)
	st := []policyStatement{
		{
			Sid: "SweepTables", Effect: "Allow",
			Action: []string{
				"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem",
				"dynamodb:ConditionCheckItem", "dynamodb:Query", "dynamodb:BatchGetItem", "dynamodb:BatchWriteItem",
				"dynamodb:DescribeTable",
			},
			Resource: []string{sweepTable, sweepTable + "/index/" + gsiUserCreated, n.tableARN(n.instancesTable)},
		},
		{
			Sid: "SweepObjects", Effect: "Allow",
			Action:   []string{"s3:GetObject", "s3:PutObject"},
			Resource: []string{n.bucketARN() + "/sweeps/*"},
		},
		{
			Sid: "ReinvokeItself", Effect: "Allow",
			Action:   []string{"lambda:InvokeFunction"},
			Resource: []string{n.functionARN()},
		},
	}
	st = append(st, n.ec2Statements(n.account)...)
	st = append(st,
		policyStatement{
			Sid: "AmazonLinuxAMIs", Effect: "Allow",
			Action:   []string{"ssm:GetParameter", "ssm:GetParameters"},
			Resource: []string{n.arn("ssm", "*", "", "parameter"+al2023ParameterPath+"*")},
		},
		policyStatement{
			// The Price List API has no resource-level permissions.
			Sid: "Prices", Effect: "Allow",
			Action:   []string{"pricing:GetProducts"},
			Resource: []string{"*"},
		},
		policyStatement{
			Sid: "OwnLogs", Effect: "Allow",
			Action:   []string{"logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"},
			Resource: []string{n.arn("logs", n.region, n.account, "log-group:/aws/lambda/"+n.function+":*")},
		},
	)
	if len(n.computeAccounts) > 0 {
		var roles []string
		for _, acct := range n.computeAccounts {
			roles = append(roles, crossAccountRoleARN(n.partition, acct))
		}
		st = append(st, policyStatement{
			Sid: "AssumeComputeAccountRole", Effect: "Allow",
			Action:   []string{"sts:AssumeRole"},
			Resource: roles,
		})
	}
	return newPolicy(st...)
}

// instancePolicy is spawnd-role's: an instance may tag and terminate only itself and
// write only log objects.
func (n policyNames) instancePolicy(account string) policyDocument {
	return newPolicy(
		policyStatement{
			Sid: "TagAndTerminateOnlyItself", Effect: "Allow",
			Action:    []string{"ec2:CreateTags", "ec2:TerminateInstances"},
			Resource:  []string{n.arn("ec2", "*", account, "instance/*")},
			Condition: map[string]map[string]any{"StringEquals": {"aws:ARN": "${ec2:SourceInstanceARN}"}},
		},
		policyStatement{
			Sid: "WriteOwnLogs", Effect: "Allow",
			Action:   []string{"s3:PutObject"},
			Resource: []string{n.bucketARN() + "/sweeps/*/logs/*"},
		},
	)
}

// crossAccountTrustPolicy lets only the orchestrator role assume the compute account's
// role, and only with the external id.
func (n policyNames) crossAccountTrustPolicy(orchestratorRoleARN string) policyDocument {
	return newPolicy(policyStatement{
		Effect: "Allow", Principal: map[string]any{"AWS": orchestratorRoleARN},
		Action:    []string{"sts:AssumeRole"},
		Condition: map[string]map[string]any{"StringEquals": {"sts:ExternalId": crossAccountExternalID(n.account)}},
	})
}

// crossAccountPolicy is what the orchestrator may do in a compute account: the EC2
// calls it makes there, and pass that account's spawnd-role.
func (n policyNames) crossAccountPolicy(computeAccount string) policyDocument {
	return newPolicy(n.ec2Statements(computeAccount)...)
}

// bucketPolicy refuses every request not made over TLS and, with compute accounts,
// lets their instances write log objects.
func (n policyNames) bucketPolicy() policyDocument {
	st := []policyStatement{{
		Sid: "RefuseNonTLS", Effect: "Deny", Principal: "*",
		Action:    []string{"s3:*"},
		Resource:  []string{n.bucketARN(), n.bucketARN() + "/*"},
		Condition: map[string]map[string]any{"Bool": {"aws:SecureTransport": "false"}},
	}}
	if len(n.computeAccounts) > 0 {
		var roles []string
		for _, acct := range n.computeAccounts {
			roles = append(roles, n.roleARN(acct, instanceRoleName))
		}
		st = append(st, policyStatement{
			Sid: "ComputeAccountInstanceLogs", Effect: "Allow",
			Principal: map[string]any{"AWS": roles},
			Action:    []string{"s3:PutObject"},
			Resource:  []string{n.bucketARN() + "/sweeps/*/logs/*"},
		})
	}
	return newPolicy(st...)
}

// deployerPolicy is what the user running deploy and destroy needs in the orchestrator's
// account (docs/permissions.md).
func (n policyNames) deployerPolicy() policyDocument {
	sweepTable := n.tableARN(n.table)
	return newPolicy(
		policyStatement{
			Sid: "WhoAmI", Effect: "Allow",
			Action:   []string{"sts:GetCallerIdentity"},
			Resource: []string{"*"},
		},
		policyStatement{
			Sid: "Bucket", Effect: "Allow",
			Action: []string{
				"s3:CreateBucket", "s3:ListBucket", "s3:ListBucketVersions", "s3:DeleteBucket",
				"s3:GetLifecycleConfiguration", "s3:PutLifecycleConfiguration",
				"s3:GetBucketPublicAccessBlock", "s3:PutBucketPublicAccessBlock",
				"s3:GetBucketPolicy", "s3:PutBucketPolicy", "s3:DeleteBucketPolicy",
			},
			Resource: []string{n.bucketARN()},
		},
		policyStatement{
			Sid: "EmptyBucketOnDestroy", Effect: "Allow",
			Action:   []string{"s3:DeleteObject", "s3:DeleteObjectVersion"},
			Resource: []string{n.bucketARN() + "/*"},
		},
		policyStatement{
			Sid: "Tables", Effect: "Allow",
			Action: []string{
				"dynamodb:DescribeTable", "dynamodb:CreateTable", "dynamodb:UpdateTable", "dynamodb:DeleteTable",
				"dynamodb:DescribeContinuousBackups", "dynamodb:UpdateContinuousBackups", "dynamodb:Scan",
			},
			Resource: []string{sweepTable, n.tableARN(n.instancesTable)},
		},
		policyStatement{
			Sid: "Roles", Effect: "Allow",
			Action: []string{
				"iam:GetRole", "iam:CreateRole", "iam:DeleteRole", "iam:UpdateAssumeRolePolicy",
				"iam:GetRolePolicy", "iam:PutRolePolicy", "iam:DeleteRolePolicy", "iam:ListRolePolicies",
				"iam:ListAttachedRolePolicies", "iam:DetachRolePolicy", "iam:ListInstanceProfilesForRole",
			},
			Resource: []string{n.roleARN(n.account, orchestratorRoleName), n.roleARN(n.account, instanceRoleName)},
		},
		policyStatement{
			Sid: "InstanceProfile", Effect: "Allow",
			Action: []string{
				"iam:GetInstanceProfile", "iam:CreateInstanceProfile", "iam:DeleteInstanceProfile",
				"iam:AddRoleToInstanceProfile", "iam:RemoveRoleFromInstanceProfile",
			},
			Resource: []string{"arn:" + n.partition + ":iam::" + n.account + ":instance-profile/" + instanceRoleName},
		},
		policyStatement{
			Sid: "PassOrchestratorRoleToLambda", Effect: "Allow",
			Action:    []string{"iam:PassRole"},
			Resource:  []string{n.roleARN(n.account, orchestratorRoleName)},
			Condition: map[string]map[string]any{"StringEquals": {"iam:PassedToService": "lambda.amazonaws.com"}},
		},
		policyStatement{
			Sid: "Function", Effect: "Allow",
			Action: []string{
				"lambda:GetFunction", "lambda:CreateFunction", "lambda:DeleteFunction",
				"lambda:UpdateFunctionCode", "lambda:UpdateFunctionConfiguration",
				"lambda:GetFunctionRecursionConfig", "lambda:PutFunctionRecursionConfig",
				"lambda:GetFunctionEventInvokeConfig", "lambda:PutFunctionEventInvokeConfig",
				"lambda:InvokeFunction",
			},
			Resource: []string{n.functionARN()},
		},
	)
}

// computeDeployerPolicy is what the --compute-profile user needs in a compute account.
func (n policyNames) computeDeployerPolicy(computeAccount string) policyDocument {
	return newPolicy(
		policyStatement{
			Sid: "WhoAmI", Effect: "Allow",
			Action:   []string{"sts:GetCallerIdentity"},
			Resource: []string{"*"},
		},
		policyStatement{
			Sid: "Roles", Effect: "Allow",
			Action: []string{
				"iam:GetRole", "iam:CreateRole", "iam:DeleteRole", "iam:UpdateAssumeRolePolicy",
				"iam:GetRolePolicy", "iam:PutRolePolicy", "iam:DeleteRolePolicy", "iam:ListRolePolicies",
				"iam:ListAttachedRolePolicies", "iam:DetachRolePolicy", "iam:ListInstanceProfilesForRole",
			},
			Resource: []string{n.roleARN(computeAccount, crossAccountRoleName), n.roleARN(computeAccount, instanceRoleName)},
		},
		policyStatement{
			Sid: "InstanceProfile", Effect: "Allow",
			Action: []string{
				"iam:GetInstanceProfile", "iam:CreateInstanceProfile", "iam:DeleteInstanceProfile",
				"iam:AddRoleToInstanceProfile", "iam:RemoveRoleFromInstanceProfile",
			},
			Resource: []string{"arn:" + n.partition + ":iam::" + computeAccount + ":instance-profile/" + instanceRoleName},
		},
	)
}

// samePolicy compares two policy documents by meaning: whitespace, key order, a
// one-element list versus its element and the order of lists are not differences.
// IAM returns documents URL-encoded (kumo does not), so both forms are accepted.
func samePolicy(stored, want string) bool {
	if s, err := url.PathUnescape(stored); err == nil {
		stored = s
	}
	var a, b any
	if json.Unmarshal([]byte(stored), &a) != nil || json.Unmarshal([]byte(want), &b) != nil {
		return false
	}
	return reflect.DeepEqual(normalizePolicy(a), normalizePolicy(b))
}

func normalizePolicy(v any) any {
	switch t := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, e := range t {
			out[k] = normalizePolicy(e)
		}
		return out
	case []any:
		if len(t) == 1 {
			return normalizePolicy(t[0])
		}
		out := make([]any, len(t))
		for i, e := range t {
			out[i] = normalizePolicy(e)
		}
		sort.Slice(out, func(i, j int) bool {
			bi, _ := json.Marshal(out[i])
			bj, _ := json.Marshal(out[j])
			return string(bi) < string(bj)
		})
		return out
	}
	return v
}

// ---- the SDK calls deploy and destroy make ----

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
}

type deployIAMAPI interface {
	GetRole(context.Context, *iam.GetRoleInput, ...func(*iam.Options)) (*iam.GetRoleOutput, error)
	CreateRole(context.Context, *iam.CreateRoleInput, ...func(*iam.Options)) (*iam.CreateRoleOutput, error)
	UpdateAssumeRolePolicy(context.Context, *iam.UpdateAssumeRolePolicyInput, ...func(*iam.Options)) (*iam.UpdateAssumeRolePolicyOutput, error)
	GetRolePolicy(context.Context, *iam.GetRolePolicyInput, ...func(*iam.Options)) (*iam.GetRolePolicyOutput, error)
	PutRolePolicy(context.Context, *iam.PutRolePolicyInput, ...func(*iam.Options)) (*iam.PutRolePolicyOutput, error)
	ListRolePolicies(context.Context, *iam.ListRolePoliciesInput, ...func(*iam.Options)) (*iam.ListRolePoliciesOutput, error)
	DeleteRolePolicy(context.Context, *iam.DeleteRolePolicyInput, ...func(*iam.Options)) (*iam.DeleteRolePolicyOutput, error)
	ListAttachedRolePolicies(context.Context, *iam.ListAttachedRolePoliciesInput, ...func(*iam.Options)) (*iam.ListAttachedRolePoliciesOutput, error)
	DetachRolePolicy(context.Context, *iam.DetachRolePolicyInput, ...func(*iam.Options)) (*iam.DetachRolePolicyOutput, error)
	DeleteRole(context.Context, *iam.DeleteRoleInput, ...func(*iam.Options)) (*iam.DeleteRoleOutput, error)
	GetInstanceProfile(context.Context, *iam.GetInstanceProfileInput, ...func(*iam.Options)) (*iam.GetInstanceProfileOutput, error)
	CreateInstanceProfile(context.Context, *iam.CreateInstanceProfileInput, ...func(*iam.Options)) (*iam.CreateInstanceProfileOutput, error)
	AddRoleToInstanceProfile(context.Context, *iam.AddRoleToInstanceProfileInput, ...func(*iam.Options)) (*iam.AddRoleToInstanceProfileOutput, error)
	RemoveRoleFromInstanceProfile(context.Context, *iam.RemoveRoleFromInstanceProfileInput, ...func(*iam.Options)) (*iam.RemoveRoleFromInstanceProfileOutput, error)
	DeleteInstanceProfile(context.Context, *iam.DeleteInstanceProfileInput, ...func(*iam.Options)) (*iam.DeleteInstanceProfileOutput, error)
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

// apiErrorCode is the service's error code ("NoSuchEntity"), or "" for a non-API error.
func apiErrorCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
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

// ---- deploy ----

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

	s3     deployS3API
	ddb    deployDynamoAPI
	iam    deployIAMAPI
	lambda deployLambdaAPI

	compute *computeTarget // --compute-profile, or nil

	// propagationDelay is the first wait before retrying a call that IAM's eventual
	// consistency refused; it doubles up to propagationWait in total.
	propagationDelay time.Duration
	propagationWait  time.Duration
	// healthWait bounds the retries of the health check (a fresh function may not run yet).
	healthWait time.Duration

	results []resourceResult
}

// computeTarget is the compute account of --compute-profile.
type computeTarget struct {
	account string
	iam     deployIAMAPI
}

func newDeployer(d *deployment, log zerolog.Logger, dryRun bool) *deployer {
	return &deployer{
		log:       log,
		dryRun:    dryRun,
		emulated:  endpointOverridden(d.cfg),
		plainHTTP: s3PlainHTTP(d.cfg),
		names: policyNames{
			partition: partitionOf(d.userID), account: d.accountID, region: d.region,
			table: d.table, instancesTable: d.instancesTable, bucket: d.bucket, function: d.function,
		},
		s3:               newS3Client(d.cfg),
		ddb:              dynamodb.NewFromConfig(d.cfg),
		iam:              iam.NewFromConfig(d.cfg),
		lambda:           lambda.NewFromConfig(d.cfg),
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
	if err := d.loadComputeAccounts(ctx); err != nil {
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
	if c := d.compute; c != nil {
		if c.account != d.names.account {
			if err := d.ensureInstanceRole(ctx, c.iam, c.account); err != nil {
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
	return d.healthCheck(ctx, fnARN, pkg)
}

// loadComputeAccounts keeps every compute account a previous deploy allowed (read from
// the orchestrator's policy) and adds --compute-profile's, so a deploy without it does
// not cut off sweeps already running in another account.
func (d *deployer) loadComputeAccounts(ctx context.Context) error {
	accounts := map[string]bool{}
	out, err := d.iam.GetRolePolicy(ctx, &iam.GetRolePolicyInput{
		RoleName: aws.String(orchestratorRoleName), PolicyName: aws.String(rolePolicyName)})
	switch {
	case err == nil:
		doc := aws.ToString(out.PolicyDocument)
		if s, err := url.PathUnescape(doc); err == nil {
			doc = s
		}
		for _, arn := range assumableRoles(doc) {
			if parts := strings.Split(arn, ":"); len(parts) == 6 && parts[4] != "" {
				accounts[parts[4]] = true
			}
		}
	case !isNotFound(err):
		return fmt.Errorf("reading role %s's policy: %w", orchestratorRoleName, err)
	}
	if d.compute != nil {
		accounts[d.compute.account] = true
	}
	d.names.computeAccounts = d.names.computeAccounts[:0]
	for a := range accounts {
		d.names.computeAccounts = append(d.names.computeAccounts, a)
	}
	sort.Strings(d.names.computeAccounts)
	return nil
}

// assumableRoles lists the sts:AssumeRole resources of a policy document.
func assumableRoles(doc string) []string {
	var p struct {
		Statement []struct {
			Action   any `json:"Action"`
			Resource any `json:"Resource"`
		} `json:"Statement"`
	}
	if json.Unmarshal([]byte(doc), &p) != nil {
		return nil
	}
	var out []string
	for _, st := range p.Statement {
		if !slicesContain(stringList(st.Action), "sts:AssumeRole") {
			continue
		}
		out = append(out, stringList(st.Resource)...)
	}
	return out
}

// stringList reads a policy field that is a string or a list of strings.
func stringList(v any) []string {
	switch t := v.(type) {
	case string:
		return []string{t}
	case []any:
		var out []string
		for _, e := range t {
			if s, ok := e.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

func slicesContain(list []string, s string) bool {
	for _, e := range list {
		if e == s {
			return true
		}
	}
	return false
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

// ensureRole creates the role with its trust policy and inline policy, or brings both
// up to date. It returns the role's ARN.
func (d *deployer) ensureRole(ctx context.Context, api deployIAMAPI, account, name string, trust, policy policyDocument) (string, error) {
	arn := d.names.roleARN(account, name)
	out, err := api.GetRole(ctx, &iam.GetRoleInput{RoleName: aws.String(name)})
	action := actionUnchanged
	switch {
	case isNotFound(err):
		action = actionCreated
		if !d.dryRun {
			var cout *iam.CreateRoleOutput
			err := d.retryPropagation(ctx, "creating role "+name, isInvalidPrincipal, func() error {
				var err error
				cout, err = api.CreateRole(ctx, &iam.CreateRoleInput{
					RoleName:                 aws.String(name),
					AssumeRolePolicyDocument: aws.String(trust.json()),
					Description:              aws.String("spawn: " + roleDescription(name)),
				})
				return err
			})
			if err != nil {
				return "", fmt.Errorf("creating role %s: %w", name, err)
			}
			arn = aws.ToString(cout.Role.Arn)
		}
	case err != nil:
		return "", fmt.Errorf("reading role %s: %w", name, err)
	default:
		arn = aws.ToString(out.Role.Arn)
		if !samePolicy(aws.ToString(out.Role.AssumeRolePolicyDocument), trust.json()) {
			action = actionUpdated
			if !d.dryRun {
				err := d.retryPropagation(ctx, "updating role "+name+"'s trust policy", isInvalidPrincipal, func() error {
					_, err := api.UpdateAssumeRolePolicy(ctx, &iam.UpdateAssumeRolePolicyInput{
						RoleName: aws.String(name), PolicyDocument: aws.String(trust.json())})
					return err
				})
				if err != nil {
					return "", fmt.Errorf("updating role %s's trust policy: %w", name, err)
				}
			}
		}
	}
	putPolicy := action == actionCreated
	if !putPolicy {
		pout, err := api.GetRolePolicy(ctx, &iam.GetRolePolicyInput{RoleName: aws.String(name), PolicyName: aws.String(rolePolicyName)})
		switch {
		case isNotFound(err):
			putPolicy = true
		case err != nil:
			return "", fmt.Errorf("reading role %s's policy: %w", name, err)
		default:
			putPolicy = !samePolicy(aws.ToString(pout.PolicyDocument), policy.json())
		}
		if putPolicy {
			action = actionUpdated
		}
	}
	if putPolicy && !d.dryRun {
		if _, err := api.PutRolePolicy(ctx, &iam.PutRolePolicyInput{
			RoleName: aws.String(name), PolicyName: aws.String(rolePolicyName), PolicyDocument: aws.String(policy.json()),
		}); err != nil {
			return "", fmt.Errorf("writing role %s's policy: %w", name, err)
		}
	}
	d.report(resourceResult{Kind: kindRole, Name: name, ARN: arn, Action: action})
	return arn, nil
}

func roleDescription(name string) string {
	switch name {
	case orchestratorRoleName:
		return "the sweep orchestrator Lambda function"
	case crossAccountRoleName:
		return "the sweep orchestrator's EC2 calls in this compute account"
	}
	return "sweep instances: tag and terminate themselves, write their logs"
}

// ensureInstanceRole is spawnd-role and its instance profile in account.
func (d *deployer) ensureInstanceRole(ctx context.Context, api deployIAMAPI, account string) error {
	if _, err := d.ensureRole(ctx, api, account, instanceRoleName, ec2TrustPolicy(), d.names.instancePolicy(account)); err != nil {
		return err
	}
	name := aws.String(instanceRoleName)
	arn := "arn:" + d.names.partition + ":iam::" + account + ":instance-profile/" + instanceRoleName
	out, err := api.GetInstanceProfile(ctx, &iam.GetInstanceProfileInput{InstanceProfileName: name})
	var roles []iamtypes.Role
	action := actionUnchanged
	switch {
	case isNotFound(err):
		action = actionCreated
		if !d.dryRun {
			cout, err := api.CreateInstanceProfile(ctx, &iam.CreateInstanceProfileInput{InstanceProfileName: name})
			if err != nil {
				return fmt.Errorf("creating instance profile %s: %w", instanceRoleName, err)
			}
			arn = aws.ToString(cout.InstanceProfile.Arn)
		}
	case err != nil:
		return fmt.Errorf("reading instance profile %s: %w", instanceRoleName, err)
	default:
		arn = aws.ToString(out.InstanceProfile.Arn)
		roles = out.InstanceProfile.Roles
	}
	hasRole := false
	for _, r := range roles {
		if aws.ToString(r.RoleName) == instanceRoleName {
			hasRole = true
			continue
		}
		// A profile holds one role: another one must make room.
		action = actionUpdated
		if !d.dryRun {
			if _, err := api.RemoveRoleFromInstanceProfile(ctx, &iam.RemoveRoleFromInstanceProfileInput{
				InstanceProfileName: name, RoleName: r.RoleName}); err != nil {
				return fmt.Errorf("removing role %s from instance profile %s: %w", aws.ToString(r.RoleName), instanceRoleName, err)
			}
		}
	}
	if !hasRole {
		if action == actionUnchanged {
			action = actionUpdated
		}
		if !d.dryRun {
			if _, err := api.AddRoleToInstanceProfile(ctx, &iam.AddRoleToInstanceProfileInput{
				InstanceProfileName: name, RoleName: name}); err != nil {
				return fmt.Errorf("adding role %s to its instance profile: %w", instanceRoleName, err)
			}
		}
	}
	d.report(resourceResult{Kind: kindInstanceProfile, Name: instanceRoleName, ARN: arn, Action: action})
	return nil
}

// ensureBucket creates the bucket and brings its expiry rule, public access block and
// TLS-only policy up to date.
func (d *deployer) ensureBucket(ctx context.Context) error {
	bucket := aws.String(d.names.bucket)
	arn := d.names.bucketARN()
	_, err := d.s3.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: bucket})
	action := actionUnchanged
	switch {
	case isNotFound(err):
		action = actionCreated
		if d.dryRun {
			d.report(resourceResult{Kind: kindBucket, Name: d.names.bucket, ARN: arn, Action: action})
			return nil
		}
		in := &s3.CreateBucketInput{Bucket: bucket}
		if d.names.region != "us-east-1" {
			in.CreateBucketConfiguration = &s3types.CreateBucketConfiguration{
				LocationConstraint: s3types.BucketLocationConstraint(d.names.region)}
		}
		if _, err := d.s3.CreateBucket(ctx, in); err != nil {
			switch apiErrorCode(err) {
			case "BucketAlreadyExists":
				return fmt.Errorf("bucket %s belongs to another account: pass --bucket with a name of your own", d.names.bucket)
			}
			return fmt.Errorf("creating bucket %s: %w", d.names.bucket, err)
		}
	case err != nil:
		var re *awshttp.ResponseError
		if errors.As(err, &re) && re.HTTPStatusCode() == 403 {
			return fmt.Errorf("bucket %s exists and this account may not use it: pass --bucket with a name of your own", d.names.bucket)
		}
		return fmt.Errorf("reading bucket %s: %w", d.names.bucket, err)
	}
	changed := false

	wantRule := s3types.LifecycleRule{
		ID:         aws.String(lifecycleRuleID),
		Status:     s3types.ExpirationStatusEnabled,
		Filter:     &s3types.LifecycleRuleFilter{Prefix: aws.String("")},
		Expiration: &s3types.LifecycleExpiration{Days: aws.Int32(bucketExpiryDays)},
	}
	lc, err := d.s3.GetBucketLifecycleConfiguration(ctx, &s3.GetBucketLifecycleConfigurationInput{Bucket: bucket})
	if err != nil && !isNotFound(err) {
		return fmt.Errorf("reading bucket %s's lifecycle rules: %w", d.names.bucket, err)
	}
	var rules []s3types.LifecycleRule
	found := false
	if lc != nil {
		for _, r := range lc.Rules {
			if aws.ToString(r.ID) != lifecycleRuleID {
				rules = append(rules, r) // a rule the user added stays
				continue
			}
			found = r.Status == s3types.ExpirationStatusEnabled && r.Expiration != nil &&
				aws.ToInt32(r.Expiration.Days) == bucketExpiryDays &&
				(r.Filter == nil || aws.ToString(r.Filter.Prefix) == "") && aws.ToString(r.Prefix) == ""
		}
	}
	if !found {
		changed = true
		if !d.dryRun {
			if _, err := d.s3.PutBucketLifecycleConfiguration(ctx, &s3.PutBucketLifecycleConfigurationInput{
				Bucket:                 bucket,
				LifecycleConfiguration: &s3types.BucketLifecycleConfiguration{Rules: append(rules, wantRule)},
			}); err != nil {
				return fmt.Errorf("setting bucket %s's %d-day expiry: %w", d.names.bucket, bucketExpiryDays, err)
			}
		}
	}

	pab, err := d.s3.GetPublicAccessBlock(ctx, &s3.GetPublicAccessBlockInput{Bucket: bucket})
	if err != nil && !isNotFound(err) {
		return fmt.Errorf("reading bucket %s's public access block: %w", d.names.bucket, err)
	}
	if err != nil || !allTrue(pab.PublicAccessBlockConfiguration) {
		changed = true
		if !d.dryRun {
			if _, err := d.s3.PutPublicAccessBlock(ctx, &s3.PutPublicAccessBlockInput{
				Bucket: bucket,
				PublicAccessBlockConfiguration: &s3types.PublicAccessBlockConfiguration{
					BlockPublicAcls: aws.Bool(true), IgnorePublicAcls: aws.Bool(true),
					BlockPublicPolicy: aws.Bool(true), RestrictPublicBuckets: aws.Bool(true),
				},
			}); err != nil {
				return fmt.Errorf("blocking public access to bucket %s: %w", d.names.bucket, err)
			}
		}
	}

	wantDoc, reason := d.names.bucketPolicy(), ""
	if d.plainHTTP {
		wantDoc.Statement = wantDoc.Statement[1:]
		reason = "TLS-only policy left out: the endpoint is plain http, which it would refuse"
	}
	want := wantDoc.json()
	pol, err := d.s3.GetBucketPolicy(ctx, &s3.GetBucketPolicyInput{Bucket: bucket})
	if err != nil && !isNotFound(err) {
		return fmt.Errorf("reading bucket %s's policy: %w", d.names.bucket, err)
	}
	switch {
	case len(wantDoc.Statement) == 0:
		if err == nil && !d.dryRun { // a policy from before: it would refuse plain http too
			changed = true
			if _, err := d.s3.DeleteBucketPolicy(ctx, &s3.DeleteBucketPolicyInput{Bucket: bucket}); err != nil {
				return fmt.Errorf("removing bucket %s's policy: %w", d.names.bucket, err)
			}
		}
	case err != nil || !samePolicy(aws.ToString(pol.Policy), want):
		changed = true
		if !d.dryRun {
			err := d.retryPropagation(ctx, "writing bucket "+d.names.bucket+"'s policy", isInvalidPrincipal, func() error {
				_, err := d.s3.PutBucketPolicy(ctx, &s3.PutBucketPolicyInput{Bucket: bucket, Policy: aws.String(want)})
				return err
			})
			if err != nil {
				return fmt.Errorf("writing bucket %s's TLS-only policy: %w", d.names.bucket, err)
			}
		}
	}
	if changed && action == actionUnchanged {
		action = actionUpdated
	}
	d.report(resourceResult{Kind: kindBucket, Name: d.names.bucket, ARN: arn, Action: action, Reason: reason})
	return nil
}

// s3PlainHTTP reports whether S3 requests go to a plain-http endpoint.
func s3PlainHTTP(cfg aws.Config) bool {
	ep := aws.ToString(cfg.BaseEndpoint)
	for _, v := range []string{os.Getenv("AWS_ENDPOINT_URL_S3"), os.Getenv("AWS_ENDPOINT_URL")} {
		if ep == "" {
			ep = v
		}
	}
	return strings.HasPrefix(strings.ToLower(ep), "http://")
}

func allTrue(c *s3types.PublicAccessBlockConfiguration) bool {
	return c != nil && aws.ToBool(c.BlockPublicAcls) && aws.ToBool(c.IgnorePublicAcls) &&
		aws.ToBool(c.BlockPublicPolicy) && aws.ToBool(c.RestrictPublicBuckets)
}

// functionEnv is what the orchestrator reads to find its resources.
func (d *deployer) functionEnv() map[string]string {
	return map[string]string{
		"SPAWN_TABLE":           d.names.table,
		"SPAWN_INSTANCES_TABLE": d.names.instancesTable,
		"SPAWN_BUCKET":          d.names.bucket,
	}
}

// ensureFunction creates the function or updates its code (when the zip's SHA-256
// differs) and its configuration (when any setting differs). It returns its ARN.
func (d *deployer) ensureFunction(ctx context.Context, pkg *bootstrapPackage, roleARN string) (string, error) {
	name := d.names.function
	arn := d.names.functionARN()
	env := d.functionEnv()
	out, err := d.lambda.GetFunction(ctx, &lambda.GetFunctionInput{FunctionName: aws.String(name)})
	switch {
	case isNotFound(err):
		if !d.dryRun {
			mem := d.memoryMB
			if mem == 0 {
				mem = defaultMemoryMB
			}
			in := &lambda.CreateFunctionInput{
				FunctionName:  aws.String(name),
				Runtime:       lambdatypes.RuntimeProvidedal2023,
				Handler:       aws.String("bootstrap"),
				Role:          aws.String(roleARN),
				Timeout:       aws.Int32(functionTimeout),
				MemorySize:    aws.Int32(mem),
				Architectures: []lambdatypes.Architecture{pkg.arch},
				Environment:   &lambdatypes.Environment{Variables: env},
				Code:          &lambdatypes.FunctionCode{ZipFile: pkg.zip},
				Description:   aws.String("spawn sweep orchestrator"),
			}
			var cout *lambda.CreateFunctionOutput
			err := d.retryPropagation(ctx, "creating function "+name, isRoleNotAssumable, func() error {
				var err error
				cout, err = d.lambda.CreateFunction(ctx, in)
				return err
			})
			if err != nil {
				return "", fmt.Errorf("creating function %s: %w", name, err)
			}
			arn = aws.ToString(cout.FunctionArn)
			if err := d.waitFunction(ctx, name, true); err != nil {
				return "", err
			}
		}
		d.report(resourceResult{Kind: kindFunction, Name: name, ARN: arn, Action: actionCreated})
		return arn, nil
	case err != nil:
		return "", fmt.Errorf("reading function %s: %w", name, err)
	}
	cfg := out.Configuration
	arn = aws.ToString(cfg.FunctionArn)
	codeChanged := aws.ToString(cfg.CodeSha256) != pkg.sha256 ||
		len(cfg.Architectures) != 1 || cfg.Architectures[0] != pkg.arch
	update := &lambda.UpdateFunctionConfigurationInput{FunctionName: aws.String(name)}
	configChanged := false
	if cfg.Runtime != lambdatypes.RuntimeProvidedal2023 || aws.ToString(cfg.Handler) != "bootstrap" {
		update.Runtime, update.Handler, configChanged = lambdatypes.RuntimeProvidedal2023, aws.String("bootstrap"), true
	}
	if aws.ToInt32(cfg.Timeout) != functionTimeout {
		update.Timeout, configChanged = aws.Int32(functionTimeout), true
	}
	if d.memoryMB != 0 && aws.ToInt32(cfg.MemorySize) != d.memoryMB {
		update.MemorySize, configChanged = aws.Int32(d.memoryMB), true
	}
	if aws.ToString(cfg.Role) != roleARN {
		update.Role, configChanged = aws.String(roleARN), true
	}
	var have map[string]string
	if cfg.Environment != nil {
		have = cfg.Environment.Variables
	}
	if !sameEnv(have, env) {
		update.Environment, configChanged = &lambdatypes.Environment{Variables: env}, true
	}
	action := actionUnchanged
	if codeChanged || configChanged {
		action = actionUpdated
	}
	if !d.dryRun && codeChanged {
		if err := d.waitFunction(ctx, name, false); err != nil {
			return "", err
		}
		if _, err := d.lambda.UpdateFunctionCode(ctx, &lambda.UpdateFunctionCodeInput{
			FunctionName: aws.String(name), ZipFile: pkg.zip, Architectures: []lambdatypes.Architecture{pkg.arch},
		}); err != nil {
			return "", fmt.Errorf("updating function %s's code: %w", name, err)
		}
	}
	if !d.dryRun && configChanged {
		// Lambda refuses a configuration update while the code update is in progress.
		if err := d.waitFunction(ctx, name, false); err != nil {
			return "", err
		}
		err := d.retryPropagation(ctx, "updating function "+name, isRoleNotAssumable, func() error {
			_, err := d.lambda.UpdateFunctionConfiguration(ctx, update)
			return err
		})
		if err != nil {
			return "", fmt.Errorf("updating function %s's configuration: %w", name, err)
		}
	}
	if !d.dryRun && action == actionUpdated {
		if err := d.waitFunction(ctx, name, false); err != nil {
			return "", err
		}
	}
	d.report(resourceResult{Kind: kindFunction, Name: name, ARN: arn, Action: action})
	return arn, nil
}

// waitFunction waits until a new function is Active, or an update has finished.
func (d *deployer) waitFunction(ctx context.Context, name string, created bool) error {
	in := &lambda.GetFunctionInput{FunctionName: aws.String(name)}
	var err error
	if created {
		err = lambda.NewFunctionActiveV2Waiter(d.lambda).Wait(ctx, in, 5*time.Minute)
	} else {
		err = lambda.NewFunctionUpdatedV2Waiter(d.lambda).Wait(ctx, in, 5*time.Minute)
	}
	if err != nil {
		return fmt.Errorf("waiting for function %s to be ready: %w", name, err)
	}
	return nil
}

func sameEnv(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if bv, ok := b[k]; !ok || bv != v {
			return false
		}
	}
	return true
}

// ensureRecursionConfig sets recursive-loop detection to Allow: the orchestrator
// re-invokes itself on purpose, for days.
func (d *deployer) ensureRecursionConfig(ctx context.Context, fnARN string) error {
	name := d.names.function
	if d.dryRun && d.functionPlannedNew() {
		d.report(resourceResult{Kind: kindRecursionConfig, Name: name, ARN: fnARN, Action: actionCreated})
		return nil
	}
	out, err := d.lambda.GetFunctionRecursionConfig(ctx, &lambda.GetFunctionRecursionConfigInput{FunctionName: aws.String(name)})
	if err != nil {
		return d.optionalStep(kindRecursionConfig, name, fnARN, err)
	}
	if out.RecursiveLoop == lambdatypes.RecursiveLoopAllow {
		d.report(resourceResult{Kind: kindRecursionConfig, Name: name, ARN: fnARN, Action: actionUnchanged})
		return nil
	}
	if !d.dryRun {
		if _, err := d.lambda.PutFunctionRecursionConfig(ctx, &lambda.PutFunctionRecursionConfigInput{
			FunctionName: aws.String(name), RecursiveLoop: lambdatypes.RecursiveLoopAllow,
		}); err != nil {
			return d.optionalStep(kindRecursionConfig, name, fnARN, err)
		}
	}
	d.report(resourceResult{Kind: kindRecursionConfig, Name: name, ARN: fnARN, Action: actionUpdated})
	return nil
}

// ensureEventInvokeConfig keeps Lambda's async retries (a crashed invocation's retry
// takes over the sweep) and bounds how long an event may wait.
func (d *deployer) ensureEventInvokeConfig(ctx context.Context, fnARN string) error {
	name := d.names.function
	if d.dryRun && d.functionPlannedNew() {
		d.report(resourceResult{Kind: kindEventInvokeConfg, Name: name, ARN: fnARN, Action: actionCreated})
		return nil
	}
	action := actionUnchanged
	out, err := d.lambda.GetFunctionEventInvokeConfig(ctx, &lambda.GetFunctionEventInvokeConfigInput{FunctionName: aws.String(name)})
	switch {
	case isNotFound(err):
		action = actionCreated
	case err != nil:
		return d.optionalStep(kindEventInvokeConfg, name, fnARN, err)
	case aws.ToInt32(out.MaximumRetryAttempts) != asyncRetryAttempts || aws.ToInt32(out.MaximumEventAgeInSeconds) != asyncMaxEventAge:
		action = actionUpdated
	}
	if action != actionUnchanged && !d.dryRun {
		if _, err := d.lambda.PutFunctionEventInvokeConfig(ctx, &lambda.PutFunctionEventInvokeConfigInput{
			FunctionName:             aws.String(name),
			MaximumRetryAttempts:     aws.Int32(asyncRetryAttempts),
			MaximumEventAgeInSeconds: aws.Int32(asyncMaxEventAge),
		}); err != nil {
			return d.optionalStep(kindEventInvokeConfg, name, fnARN, err)
		}
	}
	d.report(resourceResult{Kind: kindEventInvokeConfg, Name: name, ARN: fnARN, Action: action})
	return nil
}

// functionPlannedNew: in a dry run the function would be created, so its settings
// cannot be read yet.
func (d *deployer) functionPlannedNew() bool {
	for _, r := range d.results {
		if r.Kind == kindFunction {
			return r.Action == actionCreated
		}
	}
	return false
}

// healthCheck invokes the function with {"health_check": true} and checks that it runs
// and is the architecture that was zipped. A fresh function may not answer at once, so
// invoke errors are retried for a while; a function error is final.
func (d *deployer) healthCheck(ctx context.Context, fnARN string, pkg *bootstrapPackage) error {
	name := d.names.function
	if d.dryRun {
		d.report(resourceResult{Kind: kindHealthCheck, Name: name, ARN: fnARN, Action: actionSkipped, Reason: "dry run"})
		return nil
	}
	deadline := time.Now().Add(d.healthWait)
	delay := 200 * time.Millisecond
	for {
		out, err := d.lambda.Invoke(ctx, &lambda.InvokeInput{
			FunctionName:   aws.String(name),
			InvocationType: lambdatypes.InvocationTypeRequestResponse,
			Payload:        []byte(`{"health_check": true}`),
		})
		if err == nil {
			return d.checkHealthAnswer(name, fnARN, pkg, out)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			if d.emulated {
				d.report(resourceResult{Kind: kindHealthCheck, Name: name, ARN: fnARN, Action: actionSkipped,
					Reason: "the endpoint cannot run the function: " + shortError(err)})
				return nil
			}
			return fmt.Errorf("health check of function %s: %w (see its logs: /aws/lambda/%s)", name, err, name)
		}
		d.log.Debug().Err(err).Msg("health check: the function does not answer yet")
		select {
		case <-ctx.Done():
		case <-time.After(delay):
		}
		delay = min(delay*2, 2*time.Second)
	}
}

func (d *deployer) checkHealthAnswer(name, fnARN string, pkg *bootstrapPackage, out *lambda.InvokeOutput) error {
	if out.FunctionError != nil {
		var fe struct {
			ErrorType    string `json:"errorType"`
			ErrorMessage string `json:"errorMessage"`
		}
		if err := json.Unmarshal(out.Payload, &fe); err != nil && d.emulated {
			// Lambda's function errors are JSON; a plain-text one is the emulator saying it
			// cannot run functions at all (moto_server without Docker).
			msg := strings.TrimSpace(string(out.Payload))
			if len(msg) > 160 {
				msg = msg[:160] + "…"
			}
			d.report(resourceResult{Kind: kindHealthCheck, Name: name, ARN: fnARN, Action: actionSkipped,
				Reason: "the endpoint cannot run the function: " + msg})
			return nil
		}
		hint := "check that --bootstrap is a Linux build of spawn"
		if strings.Contains(fe.ErrorType, "InvalidEntrypoint") || strings.Contains(fe.ErrorMessage, "exec format error") {
			hint = fmt.Sprintf("the bootstrap does not run on %s: pass --bootstrap with a Linux %s build of spawn", pkg.arch, pkg.goArch)
		}
		return fmt.Errorf("health check of function %s failed (%s: %s %s): %s", name,
			aws.ToString(out.FunctionError), fe.ErrorType, fe.ErrorMessage, hint)
	}
	var h healthAnswer
	if err := json.Unmarshal(out.Payload, &h); err != nil || !h.OK {
		return fmt.Errorf("health check of function %s: unexpected answer %q: check that --bootstrap is a build of spawn", name, out.Payload)
	}
	if h.Version.OS != "linux" || h.Version.Arch != pkg.goArch {
		return fmt.Errorf("health check of function %s: it runs as %s/%s but was deployed as %s: redeploy with a Linux %s build", name,
			h.Version.OS, h.Version.Arch, pkg.arch, pkg.goArch)
	}
	d.report(resourceResult{Kind: kindHealthCheck, Name: name, ARN: fnARN, Action: actionUnchanged,
		Reason: fmt.Sprintf("answered: spawn %s (commit %s, %s, %s/%s)", h.Version.Version, h.Version.Commit,
			h.Version.GoVersion, h.Version.OS, h.Version.Arch)})
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

// ---- destroy ----

// destroy removes every resource deploy created. Missing ones are reported skipped.
func (d *deployer) destroy(ctx context.Context, force bool) error {
	if !force {
		if err := d.refuseActiveSweeps(ctx); err != nil {
			return err
		}
	}
	if err := d.deleteFunction(ctx); err != nil {
		return err
	}
	if err := d.deleteRole(ctx, d.iam, d.names.account, orchestratorRoleName); err != nil {
		return err
	}
	if err := d.deleteInstanceRole(ctx, d.iam, d.names.account); err != nil {
		return err
	}
	if c := d.compute; c != nil {
		if err := d.deleteRole(ctx, c.iam, c.account, crossAccountRoleName); err != nil {
			return err
		}
		if c.account != d.names.account {
			if err := d.deleteInstanceRole(ctx, c.iam, c.account); err != nil {
				return err
			}
		}
	}
	for _, t := range []string{d.names.table, d.names.instancesTable} {
		if err := d.deleteTable(ctx, t); err != nil {
			return err
		}
	}
	return d.deleteBucket(ctx)
}

func (d *deployer) notFound(kind, name, arn string) {
	d.report(resourceResult{Kind: kind, Name: name, ARN: arn, Action: actionSkipped, Reason: "not found"})
}

// refuseActiveSweeps scans the orchestration table for sweeps still RUNNING or
// INITIALIZING. A Scan is fine here: destroy is rare and the table small.
func (d *deployer) refuseActiveSweeps(ctx context.Context) error {
	in := &dynamodb.ScanInput{
		TableName:                aws.String(d.names.table),
		FilterExpression:         aws.String("#s IN (:running, :init)"),
		ProjectionExpression:     aws.String("sweep_id, #s"),
		ExpressionAttributeNames: map[string]string{"#s": "status"},
		ExpressionAttributeValues: map[string]ddbtypes.AttributeValue{
			":running": &ddbtypes.AttributeValueMemberS{Value: statusRunning},
			":init":    &ddbtypes.AttributeValueMemberS{Value: statusInitializing},
		},
	}
	var active []string
	for {
		out, err := d.ddb.Scan(ctx, in)
		if isNotFound(err) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("looking for running sweeps in table %s: %w (pass --force to destroy anyway)", d.names.table, err)
		}
		for _, item := range out.Items {
			id, _ := item["sweep_id"].(*ddbtypes.AttributeValueMemberS)
			st, _ := item["status"].(*ddbtypes.AttributeValueMemberS)
			// An emulator may ignore the filter: check the status again.
			if id != nil && st != nil && (st.Value == statusRunning || st.Value == statusInitializing) {
				active = append(active, id.Value)
			}
		}
		if len(out.LastEvaluatedKey) == 0 {
			break
		}
		in.ExclusiveStartKey = out.LastEvaluatedKey
	}
	if len(active) == 0 {
		return nil
	}
	sort.Strings(active)
	return fmt.Errorf("%d sweep(s) still running (%s): cancel them first (spawn cancel --sweep-id %s) or pass --force",
		len(active), strings.Join(active, ", "), active[0])
}

func (d *deployer) deleteFunction(ctx context.Context) error {
	name := d.names.function
	_, err := d.lambda.DeleteFunction(ctx, &lambda.DeleteFunctionInput{FunctionName: aws.String(name)})
	switch {
	case isNotFound(err):
		d.notFound(kindFunction, name, d.names.functionARN())
	case err != nil:
		return fmt.Errorf("deleting function %s: %w", name, err)
	default:
		d.report(resourceResult{Kind: kindFunction, Name: name, ARN: d.names.functionARN(), Action: actionDeleted})
	}
	return nil
}

// deleteRole removes the role's inline and attached policies, then the role.
func (d *deployer) deleteRole(ctx context.Context, api deployIAMAPI, account, name string) error {
	arn := d.names.roleARN(account, name)
	out, err := api.GetRole(ctx, &iam.GetRoleInput{RoleName: aws.String(name)})
	if isNotFound(err) {
		d.notFound(kindRole, name, arn)
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading role %s: %w", name, err)
	}
	arn = aws.ToString(out.Role.Arn)
	pols, err := api.ListRolePolicies(ctx, &iam.ListRolePoliciesInput{RoleName: aws.String(name)})
	if err != nil {
		return fmt.Errorf("listing role %s's policies: %w", name, err)
	}
	for _, p := range pols.PolicyNames {
		if _, err := api.DeleteRolePolicy(ctx, &iam.DeleteRolePolicyInput{RoleName: aws.String(name), PolicyName: aws.String(p)}); err != nil && !isNotFound(err) {
			return fmt.Errorf("deleting role %s's policy %s: %w", name, p, err)
		}
	}
	att, err := api.ListAttachedRolePolicies(ctx, &iam.ListAttachedRolePoliciesInput{RoleName: aws.String(name)})
	if err != nil {
		return fmt.Errorf("listing role %s's attached policies: %w", name, err)
	}
	for _, p := range att.AttachedPolicies {
		if _, err := api.DetachRolePolicy(ctx, &iam.DetachRolePolicyInput{RoleName: aws.String(name), PolicyArn: p.PolicyArn}); err != nil && !isNotFound(err) {
			return fmt.Errorf("detaching policy %s from role %s: %w", aws.ToString(p.PolicyArn), name, err)
		}
	}
	if _, err := api.DeleteRole(ctx, &iam.DeleteRoleInput{RoleName: aws.String(name)}); err != nil && !isNotFound(err) {
		return fmt.Errorf("deleting role %s: %w", name, err)
	}
	d.report(resourceResult{Kind: kindRole, Name: name, ARN: arn, Action: actionDeleted})
	return nil
}

// deleteInstanceRole removes spawnd-role's instance profile, then the role.
func (d *deployer) deleteInstanceRole(ctx context.Context, api deployIAMAPI, account string) error {
	name := aws.String(instanceRoleName)
	arn := "arn:" + d.names.partition + ":iam::" + account + ":instance-profile/" + instanceRoleName
	out, err := api.GetInstanceProfile(ctx, &iam.GetInstanceProfileInput{InstanceProfileName: name})
	switch {
	case isNotFound(err):
		d.notFound(kindInstanceProfile, instanceRoleName, arn)
	case err != nil:
		return fmt.Errorf("reading instance profile %s: %w", instanceRoleName, err)
	default:
		arn = aws.ToString(out.InstanceProfile.Arn)
		for _, r := range out.InstanceProfile.Roles {
			if _, err := api.RemoveRoleFromInstanceProfile(ctx, &iam.RemoveRoleFromInstanceProfileInput{
				InstanceProfileName: name, RoleName: r.RoleName}); err != nil && !isNotFound(err) {
				return fmt.Errorf("removing role %s from instance profile %s: %w", aws.ToString(r.RoleName), instanceRoleName, err)
			}
		}
		if _, err := api.DeleteInstanceProfile(ctx, &iam.DeleteInstanceProfileInput{InstanceProfileName: name}); err != nil && !isNotFound(err) {
			return fmt.Errorf("deleting instance profile %s: %w", instanceRoleName, err)
		}
		d.report(resourceResult{Kind: kindInstanceProfile, Name: instanceRoleName, ARN: arn, Action: actionDeleted})
	}
	return d.deleteRole(ctx, api, account, instanceRoleName)
}

func (d *deployer) deleteTable(ctx context.Context, name string) error {
	arn := d.names.tableARN(name)
	out, err := d.ddb.DeleteTable(ctx, &dynamodb.DeleteTableInput{TableName: aws.String(name)})
	switch {
	case isNotFound(err):
		d.notFound(kindTable, name, arn)
	case err != nil:
		return fmt.Errorf("deleting table %s: %w", name, err)
	default:
		if out.TableDescription != nil && out.TableDescription.TableArn != nil {
			arn = aws.ToString(out.TableDescription.TableArn)
		}
		d.report(resourceResult{Kind: kindTable, Name: name, ARN: arn, Action: actionDeleted})
	}
	return nil
}

// deleteBucket empties the bucket (every object version and delete marker), then
// deletes it.
func (d *deployer) deleteBucket(ctx context.Context) error {
	bucket := aws.String(d.names.bucket)
	in := &s3.ListObjectVersionsInput{Bucket: bucket}
	for {
		out, err := d.s3.ListObjectVersions(ctx, in)
		if isNotFound(err) {
			d.notFound(kindBucket, d.names.bucket, d.names.bucketARN())
			return nil
		}
		if err != nil {
			return fmt.Errorf("listing bucket %s's objects: %w", d.names.bucket, err)
		}
		var ids []s3types.ObjectIdentifier
		for _, v := range out.Versions {
			ids = append(ids, s3types.ObjectIdentifier{Key: v.Key, VersionId: versionOrNil(v.VersionId)})
		}
		for _, m := range out.DeleteMarkers {
			ids = append(ids, s3types.ObjectIdentifier{Key: m.Key, VersionId: versionOrNil(m.VersionId)})
		}
		if len(ids) > 0 {
			del, err := d.s3.DeleteObjects(ctx, &s3.DeleteObjectsInput{Bucket: bucket, Delete: &s3types.Delete{Objects: ids, Quiet: aws.Bool(true)}})
			if err != nil {
				return fmt.Errorf("emptying bucket %s: %w", d.names.bucket, err)
			}
			if len(del.Errors) > 0 {
				e := del.Errors[0]
				return fmt.Errorf("emptying bucket %s: %s: %s %s", d.names.bucket, aws.ToString(e.Key), aws.ToString(e.Code), aws.ToString(e.Message))
			}
		}
		if !aws.ToBool(out.IsTruncated) {
			break
		}
		in.KeyMarker, in.VersionIdMarker = out.NextKeyMarker, out.NextVersionIdMarker
	}
	if _, err := d.s3.DeleteBucket(ctx, &s3.DeleteBucketInput{Bucket: bucket}); err != nil {
		if isNotFound(err) {
			d.notFound(kindBucket, d.names.bucket, d.names.bucketARN())
			return nil
		}
		return fmt.Errorf("deleting bucket %s: %w", d.names.bucket, err)
	}
	d.report(resourceResult{Kind: kindBucket, Name: d.names.bucket, ARN: d.names.bucketARN(), Action: actionDeleted})
	return nil
}

// versionOrNil: an unversioned bucket lists version "null", which DeleteObjects takes
// as a literal version id on some implementations.
func versionOrNil(v *string) *string {
	if aws.ToString(v) == "" || aws.ToString(v) == "null" {
		return nil
	}
	return v
}

// ---- the commands ----

type deployFlags struct {
	computeProfile string
	bootstrap      string
	memory         int
	dryRun         bool
}

func newDeployCmd(r *rootConfig) *ffcli.Command {
	fs := r.newFlagSet("deploy")
	var f deployFlags
	fs.StringVar(&f.computeProfile, "compute-profile", "", "profile of the account where instances run, when it is another account")
	fs.StringVar(&f.bootstrap, "bootstrap", "", "Linux build of spawn to deploy as the function (default: this executable, when it is a Linux build)")
	fs.IntVar(&f.memory, "memory", 0, fmt.Sprintf("function memory in MB (default %d for a new function; an existing function keeps its own)", defaultMemoryMB))
	fs.BoolVar(&f.dryRun, "dry-run", false, "print what would be created or updated and change nothing")
	return r.command("deploy", "spawn deploy [--compute-profile P] [--bootstrap FILE] [--memory MB] [--dry-run]",
		"create or update every AWS resource spawn needs, then health-check the function", fs,
		func(ctx context.Context, args []string) error {
			if len(args) > 0 {
				return usageErrorf("deploy takes no arguments, got %q", args)
			}
			if f.memory != 0 && (f.memory < 128 || f.memory > 10240) {
				return usageErrorf("--memory %d is out of range: Lambda takes 128 to 10240 MB", f.memory)
			}
			path, err := selfBootstrap(f.bootstrap)
			if err != nil {
				return err
			}
			pkg, err := zipBootstrap(path)
			if err != nil {
				return err
			}
			d, err := r.openDeployer(ctx, f.computeProfile, f.dryRun)
			if err != nil {
				return err
			}
			d.memoryMB = int32(f.memory)
			err = d.deploy(ctx, pkg)
			if perr := r.printResources(d.results, f.dryRun); perr != nil && err == nil {
				err = perr
			}
			return err
		})
}

func newDestroyCmd(r *rootConfig) *ffcli.Command {
	fs := r.newFlagSet("destroy")
	var yes, force bool
	var computeProfile string
	fs.BoolVar(&yes, "yes", false, "do not ask for confirmation")
	fs.BoolVar(&force, "force", false, "destroy even while sweeps are running (their instances keep running)")
	fs.StringVar(&computeProfile, "compute-profile", "", "also remove the roles deploy created in this profile's account")
	return r.command("destroy", "spawn destroy [--yes] [--force] [--compute-profile P]",
		"remove every AWS resource deploy created, with the sweeps' data", fs,
		func(ctx context.Context, args []string) error {
			if len(args) > 0 {
				return usageErrorf("destroy takes no arguments, got %q", args)
			}
			d, err := r.openDeployer(ctx, computeProfile, false)
			if err != nil {
				return err
			}
			if !yes {
				if err := r.confirmDestroy(d.names); err != nil {
					return err
				}
			}
			err = d.destroy(ctx, force)
			if perr := r.printResources(d.results, false); perr != nil && err == nil {
				err = perr
			}
			return err
		})
}

// openDeployer resolves the account, region and names, and the compute account of
// --compute-profile.
func (r *rootConfig) openDeployer(ctx context.Context, computeProfile string, dryRun bool) (*deployer, error) {
	dep, err := r.openDeployment(ctx)
	if err != nil {
		return nil, err
	}
	d := newDeployer(dep, r.log, dryRun)
	if computeProfile != "" {
		cfg, err := loadAWSConfig(ctx, computeProfile, dep.region, r.endpointURL, r.log)
		if err != nil {
			return nil, err
		}
		id, err := sts.NewFromConfig(cfg).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
		if err != nil {
			return nil, fmt.Errorf("no usable AWS credentials for --compute-profile %s: %w (check ~/.aws/config)", computeProfile, err)
		}
		d.compute = &computeTarget{account: aws.ToString(id.Account), iam: iam.NewFromConfig(cfg)}
	}
	return d, nil
}

// confirmDestroy asks on a terminal; without one the user must pass --yes.
func (r *rootConfig) confirmDestroy(n policyNames) error {
	f, ok := r.stdin.(*os.File)
	if !ok || !isatty.IsTerminal(f.Fd()) {
		return usageErrorf("destroy deletes the function, roles, tables and bucket %s with every sweep's data: pass --yes to confirm (stdin is not a terminal)", n.bucket)
	}
	fmt.Fprintf(r.stderr, "This deletes function %s, roles %s and %s, tables %s and %s, and bucket %s with all its objects.\nType yes to continue: ",
		n.function, orchestratorRoleName, instanceRoleName, n.table, n.instancesTable, n.bucket)
	line, _ := bufio.NewReader(r.stdin).ReadString('\n')
	if strings.TrimSpace(strings.ToLower(line)) != "yes" {
		return usageErrorf("destroy cancelled: nothing was deleted")
	}
	return nil
}

// printResources writes one aligned line per resource, or the JSON document.
func (r *rootConfig) printResources(res []resourceResult, dryRun bool) error {
	if res == nil {
		res = []resourceResult{}
	}
	if r.jsonOutput() {
		return r.printJSON(struct {
			Resources []resourceResult `json:"resources"`
		}{res})
	}
	// Columns are padded by hand rather than with text/tabwriter, which aligns a column
	// only across consecutive lines that have it (the reason column is sparse).
	var wKind, wName, wAction int
	for _, x := range res {
		wKind, wName, wAction = max(wKind, len(x.Kind)), max(wName, len(x.Name)), max(wAction, len(x.Action))
	}
	var b strings.Builder
	for _, x := range res {
		line := fmt.Sprintf("%-*s  %-*s  %-*s  %s", wKind, x.Kind, wName, x.Name, wAction, x.Action, x.Reason)
		b.WriteString(strings.TrimRight(line, " ") + "\n")
	}
	if _, err := io.WriteString(r.stdout, b.String()); err != nil {
		return err
	}
	if dryRun {
		fmt.Fprintln(r.stderr, "dry run: nothing was changed")
	}
	return nil
}

// ---- docs/permissions.md, generated from the policies above ----

// permissionsDoc renders docs/permissions.md: the deploying user's permissions and every
// policy deploy writes, for example account ids. A test keeps the file in step.
func permissionsDoc() string {
	n := policyNames{
		partition: "aws", account: "111122223333", region: "us-east-1",
		table: defaultTable, instancesTable: defaultInstancesTable,
		bucket: defaultBucketName("111122223333", "us-east-1"), function: defaultFunction,
		computeAccounts: []string{"444455556666"},
	}
	orchARN := n.roleARN(n.account, orchestratorRoleName)
	var b strings.Builder
	section := func(title, text string, p policyDocument) {
		js, err := json.MarshalIndent(p, "", "  ")
		if err != nil {
			panic(err)
		}
		fmt.Fprintf(&b, "## %s\n\n%s\n\n```json\n%s\n```\n\n", title, text, js)
	}
	b.WriteString(`# Permissions

<!-- Generated from deploy.go by TestPermissionsDocMatchesThePolicies; do not edit.
     Regenerate: SPAWN_UPDATE_DOCS=1 go test -run TestPermissionsDocMatchesThePolicies . -->

` + "`spawn deploy`" + ` creates every resource spawn uses and writes the policies below. The examples use
account 111122223333 (where the orchestrator runs), compute account 444455556666 (only with
` + "`--compute-profile`" + `), region us-east-1 and the default names; deploy fills in yours.

Every statement names spawn's own resources, except the calls AWS authorizes only on ` + "`\"*\"`" + `
(EC2's Describe calls, spot price history included, the Price List API and
` + "`sts:GetCallerIdentity`" + `): they have no resource-level permissions.

Cross-account: the orchestrator assumes ` + "`SpawnSweepCrossAccountRole`" + ` in the compute account with the
external id ` + "`spawn-<orchestrator account id>`" + ` (here ` + "`" + crossAccountExternalID(n.account) + "`" + `). It is derived, not secret: the role
trusts only the orchestrator role's ARN, and the id ties the role to this orchestrator account.

`)
	section("Deploying user (orchestrator account)",
		"What the user running `spawn deploy` and `spawn destroy` needs.", n.deployerPolicy())
	section("Deploying user (compute account)",
		"What the `--compute-profile` user needs in the compute account.", n.computeDeployerPolicy("444455556666"))
	section("SpawnSweepOrchestratorRole: trust", "The Lambda service assumes the orchestrator role.", lambdaTrustPolicy())
	section("SpawnSweepOrchestratorRole: inline policy `spawn`",
		"The orchestrator function's permissions. The `AssumeComputeAccountRole` statement appears only when a compute account was deployed.",
		n.orchestratorPolicy())
	section("spawnd-role: trust", "EC2 assumes the instance role (instance profile `spawnd-role`).", ec2TrustPolicy())
	section("spawnd-role: inline policy `spawn`",
		"An instance may tag and terminate only itself, and write only log objects.", n.instancePolicy(n.account))
	section("SpawnSweepCrossAccountRole: trust (compute account)",
		"Only the orchestrator role, and only with the external id.", n.crossAccountTrustPolicy(orchARN))
	section("SpawnSweepCrossAccountRole: inline policy `spawn` (compute account)",
		"The EC2 calls the orchestrator makes there, passing that account's `spawnd-role`, and the idle-timeout alarms (an alarm lives in its instance's account).",
		n.crossAccountPolicy("444455556666"))
	section("Bucket policy",
		"Refuses every request not made over TLS. With a compute account, its instances may write their log objects.",
		n.bucketPolicy())
	return strings.TrimRight(b.String(), "\n") + "\n"
}
