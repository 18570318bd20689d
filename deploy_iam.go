// Deploying and destroying spawn's IAM roles and spawnd-role's instance profile, in the
// orchestrator's account and in a compute account.

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"sort"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	iamtypes "github.com/aws/aws-sdk-go-v2/service/iam/types"
)

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
