package main

import (
	"sort"
	"strings"
	"testing"
)

// Where AWS documents each condition key the generated policies use. No emulator here
// evaluates a condition, so a key AWS does not know would fail open or closed only on
// AWS: every key must be in this list, with its source.
var documentedConditionKeys = map[string]string{
	// IAM User Guide, "AWS global condition context keys":
	// https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_condition-keys.html
	// (aws:userid is also a policy variable: "IAM policy elements: Variables and tags").
	"aws:SecureTransport": "global", "aws:TagKeys": "global", "aws:RequestTag/": "global", "aws:userid": "global",
	// https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_condition-keys.html#condition-keys-requestedregion
	// (the region of the endpoint called; EC2 User Guide, "Example policies to control
	// access the Amazon EC2 API": "supported by all Amazon EC2 API actions").
	"aws:RequestedRegion": "global",
	// Service Authorization Reference, Amazon S3:
	// https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazons3.html
	"s3:prefix": "s3", "s3:ResourceAccount": "s3",
	// Service Authorization Reference, IAM:
	// https://docs.aws.amazon.com/service-authorization/latest/reference/list_awsidentityandaccessmanagementiam.html
	"iam:AWSServiceName": "iam", "iam:PassedToService": "iam",
	// Service Authorization Reference, Amazon EC2:
	// https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonec2.html
	"ec2:ResourceTag/": "ec2", "ec2:CreateAction": "ec2", "ec2:SourceInstanceARN": "ec2",
	// ec2:InstanceType is a key of the instance resource type, which RunInstances
	// authorizes (the same page; EC2 User Guide, "Example policies to control access the
	// Amazon EC2 API", Launch instances: "only of a specific type").
	"ec2:InstanceType": "ec2",
	// Not in IAM's list of global keys, and the one exception here: the form AWS's own
	// answers give for an instance acting only on itself (aws:ARN = ${ec2:SourceInstanceARN});
	// a Resource of the variable alone is refused as not an ARN. See instancePolicy.
	"aws:ARN": "undocumented, see instancePolicy",
	// Service Authorization Reference, AWS STS:
	// https://docs.aws.amazon.com/service-authorization/latest/reference/list_awssecuritytokenservice.html
	"sts:ExternalId": "sts",
}

// documented reports whether key is listed, a tag key (".../Name") by its prefix.
func documented(key string) bool {
	if _, ok := documentedConditionKeys[key]; ok {
		return true
	}
	if i := strings.Index(key, "/"); i > 0 {
		_, ok := documentedConditionKeys[key[:i+1]]
		return ok
	}
	return false
}

// TestPoliciesUseOnlyDocumentedConditionKeys: every condition key in every generated
// policy (roles, trusts, bucket, deploying and launching users) is one AWS documents.
func TestPoliciesUseOnlyDocumentedConditionKeys(t *testing.T) {
	n := examplePolicyNames()
	n.computeAccounts = []string{"444455556666"}
	n.allow = allowLists{InstanceTypes: []string{"t3.*"}, Regions: []string{"us-east-1"}} // every key in use
	docs := map[string]policyDocument{
		"orchestrator": n.orchestratorPolicy(), "instance": n.instancePolicy(n.account), "cross-account": n.crossAccountPolicy("444455556666"),
		"cross-account trust": n.crossAccountTrustPolicy("arn:aws:iam::111122223333:role/" + orchestratorRoleName),
		"lambda trust":        lambdaTrustPolicy(), "ec2 trust": ec2TrustPolicy(), "bucket": n.bucketPolicy(),
		"deployer": n.deployerPolicy(), "compute deployer": n.computeDeployerPolicy("444455556666"),
		"launcher": n.launcherPolicy(), "ci launcher": n.ciLauncherPolicy(),
	}
	used := map[string]bool{}
	for name, doc := range docs {
		for _, st := range doc.Statement {
			for _, keys := range st.Condition {
				for key := range keys {
					used[key] = true
					if !documented(key) {
						t.Errorf("%s policy, statement %s: condition key %q is not one AWS documents (documentedConditionKeys)", name, st.Sid, key)
					}
				}
			}
		}
	}
	// Policy variables (${key}) in resources and values are condition keys too.
	for name, doc := range docs {
		js := doc.json()
		for _, part := range strings.Split(js, "${")[1:] {
			key := part[:strings.Index(part, "}")]
			used[key] = true
			if !documented(key) {
				t.Errorf("%s policy: policy variable ${%s} is not a key AWS documents", name, key)
			}
		}
	}
	var list []string
	for k := range used {
		list = append(list, k)
	}
	sort.Strings(list)
	if len(list) == 0 {
		t.Fatal("no condition key found: the walk is broken")
	}
	t.Logf("condition keys in use: %s", strings.Join(list, ", "))
}
