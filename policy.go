package main

import (
	"encoding/json"
	"net/url"
	"reflect"
	"sort"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
)

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
	// allow are the instance types and regions the launching roles may launch
	// (allowlist.go); empty lists: any.
	allow allowLists
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

// The SSM parameters `ami: resolve:ssm:<name>` may name, and the only ones the
// orchestrator may read: AWS's public parameters (Amazon Linux, and Ubuntu, Debian,
// Windows and the rest under /aws/service/; public parameters carry no account in their
// ARN) and the account's own under /spawn/.
const (
	publicAMIParameters = "/aws/service/"
	ownAMIParameters    = "/spawn/"
)

func (n policyNames) amiParameterARNs(account string) []string {
	return []string{
		n.arn("ssm", "*", "", "parameter"+publicAMIParameters+"*"),
		n.arn("ssm", "*", account, "parameter"+ownAMIParameters+"*"),
	}
}

// spotService is the service whose service-linked role Spot launches need.
const (
	spotService  = "spot.amazonaws.com"
	spotRoleName = "AWSServiceRoleForEC2Spot"
)

func (n policyNames) spotRoleARN(account string) string {
	return "arn:" + n.partition + ":iam::" + account + ":role/aws-service-role/" + spotService + "/" + spotRoleName
}

// spotRoleStatements let deploy read and create the Spot service-linked role in account
// (iam:AWSServiceName is the documented condition key of CreateServiceLinkedRole; GetRole
// has no such key, so it is a statement of its own).
func (n policyNames) spotRoleStatements(account string) []policyStatement {
	return []policyStatement{
		{
			Sid: "ReadSpotServiceLinkedRole", Effect: "Allow",
			Action:   []string{"iam:GetRole"},
			Resource: []string{n.spotRoleARN(account)},
		},
		{
			Sid: "CreateSpotServiceLinkedRole", Effect: "Allow",
			Action:    []string{"iam:CreateServiceLinkedRole"},
			Resource:  []string{n.spotRoleARN(account)},
			Condition: map[string]map[string]any{"StringLike": {"iam:AWSServiceName": spotService}},
		},
	}
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

// The allow-lists' condition keys, and the statement that carries both (deploy reads
// the lists back from it: recordedAllowLists).
//
// ec2:InstanceType is EC2's key of the instance resource, which RunInstances authorizes
// (Service Authorization Reference, "Condition keys for Amazon EC2":
// https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonec2.html;
// EC2 User Guide, "Example policies to control access the Amazon EC2 API", Launch
// instances). aws:RequestedRegion is the region of the endpoint called, which for
// RunInstances is the region the instance launches in (IAM User Guide, "AWS global
// condition context keys":
// https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_condition-keys.html#condition-keys-requestedregion).
// A condition rather than a Resource per allowed region: that would multiply every ARN
// of both statements by the regions.
const (
	sidLaunchTagged    = "LaunchOnlyTaggedInstances"
	keyInstanceType    = "ec2:InstanceType"
	keyRequestedRegion = "aws:RequestedRegion"
)

// launchStatements are the two RunInstances statements: the instance, tagged
// spawn:managed=true from launch on, and the resources it uses, which carry no request
// tags. With deploy's allow-lists the instance also has an allowed type, and both are
// in an allowed region; the type is only the instance's: the other resources have no
// ec2:InstanceType, and a condition on a missing key never matches.
func (n policyNames) launchStatements(account string) []policyStatement {
	ec2 := func(resource string) string { return n.arn("ec2", "*", account, resource) }
	instance := map[string]map[string]any{"StringEquals": {"aws:RequestTag/spawn:managed": "true"}}
	var resources map[string]map[string]any
	if t := n.allow.InstanceTypes; len(t) > 0 {
		instance["StringLike"] = map[string]any{keyInstanceType: t}
	}
	if r := n.allow.Regions; len(r) > 0 {
		instance["StringEquals"][keyRequestedRegion] = r
		resources = map[string]map[string]any{"StringEquals": {keyRequestedRegion: r}}
	}
	return []policyStatement{
		{
			Sid: sidLaunchTagged, Effect: "Allow",
			Action:    []string{"ec2:RunInstances"},
			Resource:  []string{ec2("instance/*")},
			Condition: instance,
		},
		{
			Sid: "LaunchUsingResources", Effect: "Allow",
			Action: []string{"ec2:RunInstances"},
			Resource: []string{
				n.arn("ec2", "*", "", "image/*"),
				n.arn("ec2", "*", "", "snapshot/*"),
				ec2("subnet/*"), ec2("network-interface/*"), ec2("security-group/*"),
				ec2("volume/*"), ec2("key-pair/*"), ec2("spot-instances-request/*"),
			},
			Condition: resources,
		},
	}
}

// ec2Statements are the EC2 calls the orchestrator makes in account: launch tagged
// instances (of the allowed types, in the allowed regions), terminate only spawn's,
// pass spawnd-role to them, read instances and their tags, and keep the idle-timeout
// alarms. Shared by the orchestrator role (its own account), SpawnSweepCrossAccountRole
// (a compute account) and the launching user (--no-detach).
func (n policyNames) ec2Statements(account string) []policyStatement {
	ec2 := func(resource string) string { return n.arn("ec2", "*", account, resource) }
	return append(n.launchStatements(account), []policyStatement{
		{
			Sid: "TagAtLaunch", Effect: "Allow",
			Action:    []string{"ec2:CreateTags"},
			Resource:  []string{ec2("instance/*"), ec2("volume/*"), ec2("network-interface/*"), ec2("spot-instances-request/*")},
			Condition: map[string]map[string]any{"StringEquals": {"ec2:CreateAction": "RunInstances"}},
		},
		{
			Sid: "TerminateOnlySpawnInstances", Effect: "Allow",
			Action:    []string{"ec2:TerminateInstances"},
			Resource:  []string{ec2("instance/*")},
			Condition: map[string]map[string]any{"StringEquals": {"ec2:ResourceTag/spawn:managed": "true"}},
		},
		{
			// Only the Describe calls the engine makes (ec2API, and DescribeTags for an
			// endpoint that leaves tags out; TestPoliciesAllowExactlyTheEC2CallsTheCodeMakes
			// keeps the list in step with the code): ec2:Describe* would include
			// DescribeInstanceAttribute, every instance's user data. They have no
			// resource-level permissions: IAM accepts only "*" for them.
			Sid: "ReadInstances", Effect: "Allow",
			Action:   []string{"ec2:DescribeInstances", "ec2:DescribeTags"},
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
			// EC2 needs the Spot service-linked role for the account's first spot launch and
			// creates it then if the caller may (EC2 User Guide, "Service-linked role for Spot
			// Instances"); deploy creates it too, this covers a deploy that could not.
			Sid: "SpotServiceLinkedRole", Effect: "Allow",
			Action:    []string{"iam:CreateServiceLinkedRole"},
			Resource:  []string{n.spotRoleARN(account)},
			Condition: map[string]map[string]any{"StringLike": {"iam:AWSServiceName": spotService}},
		},
		{
			// resolve:ssm: AMIs: EC2 reads the parameter with the launcher's permissions.
			Sid: "AMIParameters", Effect: "Allow",
			Action:   []string{"ssm:GetParameter", "ssm:GetParameters"},
			Resource: n.amiParameterARNs(account),
		},
		{
			// An alarm's EC2 action runs as this service-linked role, created on first use.
			Sid: "AlarmActionsRole", Effect: "Allow",
			Action:    []string{"iam:CreateServiceLinkedRole"},
			Resource:  []string{"arn:" + n.partition + ":iam::" + account + ":role/aws-service-role/events.amazonaws.com/AWSServiceRoleForCloudWatchEvents*"},
			Condition: map[string]map[string]any{"StringEquals": {"iam:AWSServiceName": "events.amazonaws.com"}},
		},
	}...)
}

// sweepTablesStatement is the item access to both tables (and the user index) that the
// engine needs, wherever it runs: the function, or the CLI of a launching user.
func (n policyNames) sweepTablesStatement() policyStatement {
	sweepTable := n.tableARN(n.table)
	return policyStatement{
		Sid: "SweepTables", Effect: "Allow",
		Action: []string{
			"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem",
			"dynamodb:ConditionCheckItem", "dynamodb:Query", "dynamodb:BatchGetItem", "dynamodb:BatchWriteItem",
			"dynamodb:DescribeTable",
		},
		Resource: []string{sweepTable, sweepTable + "/index/" + gsiUserCreated, n.tableARN(n.instancesTable)},
	}
}

// orchestratorPolicy is the Lambda function's inline policy: least privilege, every
// statement scoped to spawn's resources where the API allows it.
func (n policyNames) orchestratorPolicy() policyDocument {
	st := []policyStatement{
		n.sweepTablesStatement(),
		{
			Sid: "SweepObjects", Effect: "Allow",
			Action:    []string{"s3:GetObject", "s3:PutObject"},
			Resource:  []string{n.bucketARN() + "/sweeps/*"},
			Condition: n.bucketOwnerCondition(),
		},
		{
			// Finding an instance's exit record lists one item's records.
			Sid: "ListSweepObjects", Effect: "Allow",
			Action:   []string{"s3:ListBucket"},
			Resource: []string{n.bucketARN()},
			Condition: map[string]map[string]any{
				"StringLike":   {"s3:prefix": []string{"sweeps/*"}},
				"StringEquals": {"s3:ResourceAccount": n.account},
			},
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
			// Neither the Price List API nor spot price history has resource-level
			// permissions. Prices are read with the orchestrator's own credentials.
			Sid: "Prices", Effect: "Allow",
			Action:   []string{"pricing:GetProducts", "ec2:DescribeSpotPriceHistory"},
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

// instancePolicy is spawnd-role's: an instance may terminate only itself, tag itself
// only with its exit code, and write only its own log, result and exit record objects.
func (n policyNames) instancePolicy(account string) policyDocument {
	return newPolicy(
		// "Itself": the instance the role's credentials were delivered to, compared as
		// aws:ARN = ${ec2:SourceInstanceARN} (EC2's documented key, as a policy variable).
		// aws:ARN is not in IAM's list of global condition keys but is the form AWS's own
		// answers give for "an instance may act only on itself"; a Resource of the variable
		// alone is refused as not an ARN (moto refuses it too: "Partition").
		policyStatement{
			Sid: "TerminateOnlyItself", Effect: "Allow",
			Action:    []string{"ec2:TerminateInstances"},
			Resource:  []string{n.arn("ec2", "*", account, "instance/*")},
			Condition: map[string]map[string]any{"StringEquals": {"aws:ARN": "${ec2:SourceInstanceARN}"}},
		},
		policyStatement{
			// Only its exit code: a workload that could set any tag could set
			// spawn:managed=false and make itself immune to the TTL backstop and cancel.
			Sid: "TagOnlyItsExitCode", Effect: "Allow",
			Action:   []string{"ec2:CreateTags"},
			Resource: []string{n.arn("ec2", "*", account, "instance/*")},
			Condition: map[string]map[string]any{
				"StringEquals":              {"aws:ARN": "${ec2:SourceInstanceARN}"},
				"ForAllValues:StringEquals": {"aws:TagKeys": []string{tagExitCode}},
			},
		},
		policyStatement{
			Sid: "WriteOwnLogs", Effect: "Allow",
			Action:    []string{"s3:PutObject"},
			Resource:  []string{n.logARN()},
			Condition: n.bucketOwnerCondition(),
		},
		policyStatement{
			Sid: "WriteOwnResult", Effect: "Allow",
			Action:    []string{"s3:PutObject"},
			Resource:  []string{n.resultARN()},
			Condition: n.bucketOwnerCondition(),
		},
		policyStatement{
			Sid: "WriteOwnExitRecord", Effect: "Allow",
			Action:    []string{"s3:PutObject"},
			Resource:  []string{n.exitRecordARN()},
			Condition: n.bucketOwnerCondition(),
		},
	)
}

// bucketOwnerCondition allows an S3 statement only on a bucket of the orchestrator's
// account. S3 ARNs carry no account, so a bucket of the same name in another account
// (a wrong --region, a --bucket typo, a name squatted before deploy) would match the
// Resource alone. s3:ResourceAccount is S3's documented condition key for the bucket
// owner's account (Service Authorization Reference, "Condition keys for Amazon S3":
// https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazons3.html;
// the global form is aws:ResourceAccount,
// https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_condition-keys.html#condition-keys-resourceaccount).
// The bucket is always the orchestrator account's, also for compute-account instances.
func (n policyNames) bucketOwnerCondition() map[string]map[string]any {
	return map[string]map[string]any{"StringEquals": {"s3:ResourceAccount": n.account}}
}

// logARN is every log an instance may write: only those named by its own credentials.
func (n policyNames) logARN() string {
	return n.bucketARN() + "/logs/*/*/${aws:userid}.log"
}

// exitRecordARN is every exit record an instance may write: only those named by its own
// credentials (aws:userid is "<role id>:<instance id>" for an instance role).
func (n policyNames) exitRecordARN() string {
	return n.bucketARN() + "/sweeps/*/exit/*/*/${aws:userid}.json"
}

// resultARN is every result object an instance may write: only those named by its own
// credentials, like exit records.
func (n policyNames) resultARN() string {
	return n.bucketARN() + "/sweeps/*/results/*/${aws:userid}.json"
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
// lets their instances write their log, result and exit record objects.
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
			Resource:  []string{n.logARN(), n.resultARN(), n.exitRecordARN()},
		})
	}
	return newPolicy(st...)
}

// whoAmIStatement, roleStatement and instanceProfileStatement are what deploying needs
// in every account it touches: the caller's identity, spawn's roles (roles, in account)
// and its instance profile.
func whoAmIStatement() policyStatement {
	return policyStatement{
		Sid: "WhoAmI", Effect: "Allow",
		Action:   []string{"sts:GetCallerIdentity"},
		Resource: []string{"*"},
	}
}

func (n policyNames) roleStatement(account string, roles ...string) policyStatement {
	var arns []string
	for _, r := range roles {
		arns = append(arns, n.roleARN(account, r))
	}
	return policyStatement{
		Sid: "Roles", Effect: "Allow",
		Action: []string{
			"iam:GetRole", "iam:CreateRole", "iam:TagRole", "iam:DeleteRole", "iam:UpdateAssumeRolePolicy",
			"iam:GetRolePolicy", "iam:PutRolePolicy", "iam:DeleteRolePolicy", "iam:ListRolePolicies",
			"iam:ListAttachedRolePolicies", "iam:DetachRolePolicy", "iam:ListInstanceProfilesForRole",
		},
		Resource: arns,
	}
}

func (n policyNames) instanceProfileStatement(account string) policyStatement {
	return policyStatement{
		Sid: "InstanceProfile", Effect: "Allow",
		Action: []string{
			"iam:GetInstanceProfile", "iam:CreateInstanceProfile", "iam:TagInstanceProfile", "iam:DeleteInstanceProfile",
			"iam:AddRoleToInstanceProfile", "iam:RemoveRoleFromInstanceProfile",
		},
		Resource: []string{"arn:" + n.partition + ":iam::" + account + ":instance-profile/" + instanceRoleName},
	}
}

// deployerPolicy is what the user running deploy and destroy needs in the orchestrator's
// account (the README's Permissions section).
func (n policyNames) deployerPolicy() policyDocument {
	sweepTable := n.tableARN(n.table)
	p := newPolicy(
		whoAmIStatement(),
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
				"dynamodb:DescribeTable", "dynamodb:CreateTable", "dynamodb:UpdateTable", "dynamodb:DeleteTable", "dynamodb:PutItem",
				"dynamodb:DescribeContinuousBackups", "dynamodb:UpdateContinuousBackups", "dynamodb:Scan",
			},
			Resource: []string{sweepTable, n.tableARN(n.instancesTable)},
		},
		n.roleStatement(n.account, orchestratorRoleName, instanceRoleName),
		n.instanceProfileStatement(n.account),
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
				"lambda:InvokeFunction", "lambda:GetPolicy", "lambda:AddPermission", "lambda:RemovePermission",
			},
			Resource: []string{n.functionARN()},
		},
		policyStatement{
			Sid: "WatchdogSchedule", Effect: "Allow",
			Action: []string{
				"events:DescribeRule", "events:PutRule", "events:DeleteRule",
				"events:ListTargetsByRule", "events:PutTargets", "events:RemoveTargets",
			},
			Resource: []string{n.watchdogRuleARN()},
		},
	)
	p.Statement = append(p.Statement, n.spotRoleStatements(n.account)...)
	return p
}

// launcherPolicy is what a user needs to launch, watch, cancel and resume sweeps on a
// deployment someone else made, without the right to deploy or destroy (the README's
// Security model): the sweep tables and objects, the logs, invoking the orchestrator,
// and — because --no-detach runs the engine in the CLI and cancel terminates from it —
// the engine's own EC2 calls, AMI lookups and prices.
func (n policyNames) launcherPolicy() policyDocument {
	owner := n.bucketOwnerCondition()
	st := []policyStatement{
		whoAmIStatement(),
		n.sweepTablesStatement(),
		{
			Sid: "SweepObjects", Effect: "Allow",
			Action:   []string{"s3:GetObject", "s3:PutObject"},
			Resource: []string{n.bucketARN() + "/sweeps/*"}, Condition: owner,
		},
		{
			Sid: "ReadLogs", Effect: "Allow",
			Action:   []string{"s3:GetObject"},
			Resource: []string{n.bucketARN() + "/" + logsPrefix + "*"}, Condition: owner,
		},
		{
			Sid: "ListSweepObjectsAndLogs", Effect: "Allow",
			Action:   []string{"s3:ListBucket"},
			Resource: []string{n.bucketARN()},
			Condition: map[string]map[string]any{
				"StringLike":   {"s3:prefix": []string{"sweeps/*", logsPrefix + "*"}},
				"StringEquals": {"s3:ResourceAccount": n.account},
			},
		},
		{
			Sid: "InvokeOrchestrator", Effect: "Allow",
			Action:   []string{"lambda:InvokeFunction"},
			Resource: []string{n.functionARN()},
		},
	}
	st = append(st, n.ec2Statements(n.account)...)
	return newPolicy(append(st,
		policyStatement{
			Sid: "Prices", Effect: "Allow",
			Action:   []string{"pricing:GetProducts", "ec2:DescribeSpotPriceHistory"},
			Resource: []string{"*"},
		},
	)...)
}

// ciLauncherPolicy is what a principal needs to launch sweeps into a deployed spawn and
// follow them (launch --wait, status, results), and nothing that deploys: a CI role's
// policy. Read from what those commands call: the caller's identity; the sweep record
// (created with PutItem after an UpdateItem of the running index the watchdog reads,
// read with GetItem while waiting); the instance items (Query); the params object
// (written once by launch, read back by results and status); invoking the orchestrator.
// Prices are left out: without the Price List API and spot history, status and results
// price an instance the engine did not price from the embedded table.
func (n policyNames) ciLauncherPolicy() policyDocument {
	return newPolicy(
		whoAmIStatement(),
		policyStatement{
			Sid: "SweepRecords", Effect: "Allow",
			Action:   []string{"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"},
			Resource: []string{n.tableARN(n.table)},
		},
		policyStatement{
			Sid: "InstanceItems", Effect: "Allow",
			Action:   []string{"dynamodb:Query"},
			Resource: []string{n.tableARN(n.instancesTable)},
		},
		policyStatement{
			Sid: "SweepParams", Effect: "Allow",
			Action:    []string{"s3:PutObject", "s3:GetObject"},
			Resource:  []string{n.bucketARN() + "/" + paramsKey("*")},
			Condition: n.bucketOwnerCondition(),
		},
		policyStatement{
			Sid: "StartOrchestrator", Effect: "Allow",
			Action:   []string{"lambda:InvokeFunction"},
			Resource: []string{n.functionARN()},
		},
	)
}

// computeDeployerPolicy is what the --compute-profile user needs in a compute account.
func (n policyNames) computeDeployerPolicy(computeAccount string) policyDocument {
	p := newPolicy(
		whoAmIStatement(),
		n.roleStatement(computeAccount, crossAccountRoleName, instanceRoleName),
		n.instanceProfileStatement(computeAccount),
	)
	p.Statement = append(p.Statement, n.spotRoleStatements(computeAccount)...)
	return p
}

// storedPolicy is a policy document as IAM returns it, decoded: IAM URL-encodes it (kumo
// does not).
func storedPolicy(doc *string) string {
	s := aws.ToString(doc)
	if d, err := url.PathUnescape(s); err == nil {
		return d
	}
	return s
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
