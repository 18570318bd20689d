// Deploying and destroying spawn's IAM roles and spawnd-role's instance profile, in the
// orchestrator's account and in a compute account.

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
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

// loadPrevious keeps what a previous deploy wrote into this region's orchestrator
// policy, so a deploy without the flags does not undo it: every compute account it
// allowed, with --compute-profile's added (a deploy without it does not cut off sweeps
// already running in another account), and the allow-lists, unless --allow-instance-types
// or --allow-regions replace them.
func (d *deployer) loadPrevious(ctx context.Context) error {
	accounts := map[string]bool{}
	out, err := d.iam.GetRolePolicy(ctx, &iam.GetRolePolicyInput{
		RoleName: aws.String(orchestratorRoleName), PolicyName: aws.String(regionPolicyName(d.names.region))})
	switch {
	case err == nil:
		doc := storedPolicy(out.PolicyDocument)
		for _, arn := range assumableRoles(doc) {
			if parts := strings.Split(arn, ":"); len(parts) == 6 && parts[4] != "" {
				accounts[parts[4]] = true
			}
		}
		d.allowBefore = recordedAllowLists(doc)
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
	d.names.allow = allowLists{
		InstanceTypes: d.allowTypes.apply(d.allowBefore.InstanceTypes),
		Regions:       d.allowRegions.apply(d.allowBefore.Regions),
	}
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

// IAM is global and the roles keep SPEC.md's names, while a role's policy names one
// region's table, bucket and function. So each deployed region keeps an inline policy
// of its own on each role, spawn-<region>: deploying a second region adds to the roles
// instead of replacing the first region's grants, destroying one region removes only its
// policy, and a role (with spawnd-role's instance profile) goes with the last region.
func regionPolicyName(region string) string { return rolePolicyName + "-" + region }

// regionPolicy matches the inline policies deploy writes, spawn-<region>.
var regionPolicy = regexp.MustCompile(`^` + rolePolicyName + `-[a-z]{2}(-[a-z]+)+-[0-9]+$`)

// spawnTags mark what deploy created: deploy adopts, and destroy removes, only what
// carries them, so a role of the same name made by someone else is never taken over.
func spawnTags() []iamtypes.Tag {
	return []iamtypes.Tag{{Key: aws.String(tagManaged), Value: aws.String("true")}}
}

func taggedAsSpawns(tags []iamtypes.Tag) bool {
	for _, t := range tags {
		if aws.ToString(t.Key) == tagManaged && aws.ToString(t.Value) == "true" {
			return true
		}
	}
	return false
}

// profileIsSpawns: the instance profile carries spawn's tag. kumo (v0.33.1) drops the
// tags of CreateInstanceProfile, so on an endpoint override an untagged profile that
// holds only spawnd-role, itself tagged as spawn's, is taken as spawn's too; against AWS
// the tag is required.
func (d *deployer) profileIsSpawns(ctx context.Context, api deployIAMAPI, p *iamtypes.InstanceProfile) (bool, error) {
	if taggedAsSpawns(p.Tags) {
		return true, nil
	}
	if !d.emulated || len(p.Tags) > 0 || len(p.Roles) != 1 || aws.ToString(p.Roles[0].RoleName) != instanceRoleName {
		return false, nil
	}
	out, err := api.GetRole(ctx, &iam.GetRoleInput{RoleName: aws.String(instanceRoleName)})
	if isNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("reading role %s: %w", instanceRoleName, err)
	}
	return taggedAsSpawns(out.Role.Tags), nil
}

// checkIAMIsSpawns refuses, before deploy changes anything, a role or instance profile
// of spawn's names that spawn did not create or that holds grants spawn did not put
// there: adopting it would keep those grants (a spawnd-role with AdministratorAccess
// would stay admin) under a deploy that reports "unchanged".
func (d *deployer) checkIAMIsSpawns(ctx context.Context) error {
	type target struct {
		api      deployIAMAPI
		roles    []string
		instance bool // spawnd-role's instance profile too
	}
	targets := []target{{d.iam, []string{orchestratorRoleName, instanceRoleName}, true}}
	if c := d.compute; c != nil {
		roles := []string{crossAccountRoleName}
		if c.account != d.names.account {
			roles = append(roles, instanceRoleName)
		}
		targets = append(targets, target{c.iam, roles, c.account != d.names.account})
	}
	for _, t := range targets {
		for _, name := range t.roles {
			out, err := t.api.GetRole(ctx, &iam.GetRoleInput{RoleName: aws.String(name)})
			if isNotFound(err) {
				continue
			}
			if err != nil {
				return fmt.Errorf("reading role %s: %w", name, err)
			}
			if err := d.checkRoleIsSpawns(ctx, t.api, out.Role); err != nil {
				return err
			}
		}
		if !t.instance {
			continue
		}
		out, err := t.api.GetInstanceProfile(ctx, &iam.GetInstanceProfileInput{InstanceProfileName: aws.String(instanceRoleName)})
		if isNotFound(err) {
			continue
		}
		if err != nil {
			return fmt.Errorf("reading instance profile %s: %w", instanceRoleName, err)
		}
		if ours, err := d.profileIsSpawns(ctx, t.api, out.InstanceProfile); err != nil {
			return err
		} else if !ours {
			return fmt.Errorf("instance profile %s exists but is not spawn's (it has no %s=true tag, so spawn did not create it), and spawn will not adopt it: "+
				"if nothing else uses it, delete it (aws iam remove-role-from-instance-profile, then aws iam delete-instance-profile --instance-profile-name %s) and run deploy again",
				instanceRoleName, tagManaged, instanceRoleName)
		}
	}
	return nil
}

// checkRoleIsSpawns refuses a role deploy did not create or that carries a policy deploy
// did not write (any but spawn-<region>), saying what is wrong and what to do.
func (d *deployer) checkRoleIsSpawns(ctx context.Context, api deployIAMAPI, role *iamtypes.Role) error {
	name := aws.ToString(role.RoleName)
	if !taggedAsSpawns(role.Tags) {
		return fmt.Errorf("role %s exists but is not spawn's (it has no %s=true tag, so spawn did not create it), and spawn will not adopt it: "+
			"if nothing else uses it, delete it (its policies and instance profile first) and run deploy again", name, tagManaged)
	}
	attached, err := attachedPolicies(ctx, api, name)
	if err != nil {
		return err
	}
	if len(attached) > 0 {
		return fmt.Errorf("role %s has managed policies that spawn did not attach (%s), which every sweep would run with: "+
			"detach them (aws iam detach-role-policy --role-name %s --policy-arn <arn>) and run deploy again", name, strings.Join(attached, ", "), name)
	}
	inline, err := inlinePolicies(ctx, api, name)
	if err != nil {
		return err
	}
	var extra []string
	for _, p := range inline {
		if !regionPolicy.MatchString(p) && p != regionPolicyName(d.names.region) {
			extra = append(extra, p)
		}
	}
	if len(extra) > 0 {
		return fmt.Errorf("role %s has inline policies that spawn did not write (%s): "+
			"delete them (aws iam delete-role-policy --role-name %s --policy-name <name>) and run deploy again", name, strings.Join(extra, ", "), name)
	}
	return nil
}

// inlinePolicies lists every inline policy name of a role.
func inlinePolicies(ctx context.Context, api deployIAMAPI, role string) ([]string, error) {
	var names []string
	in := &iam.ListRolePoliciesInput{RoleName: aws.String(role)}
	for {
		out, err := api.ListRolePolicies(ctx, in)
		if err != nil {
			return nil, fmt.Errorf("listing role %s's policies: %w", role, err)
		}
		names = append(names, out.PolicyNames...)
		if !out.IsTruncated || out.Marker == nil {
			return names, nil
		}
		in.Marker = out.Marker
	}
}

// attachedPolicies lists the ARNs of every managed policy attached to a role.
func attachedPolicies(ctx context.Context, api deployIAMAPI, role string) ([]string, error) {
	var arns []string
	in := &iam.ListAttachedRolePoliciesInput{RoleName: aws.String(role)}
	for {
		out, err := api.ListAttachedRolePolicies(ctx, in)
		if err != nil {
			return nil, fmt.Errorf("listing role %s's attached policies: %w", role, err)
		}
		for _, p := range out.AttachedPolicies {
			arns = append(arns, aws.ToString(p.PolicyArn))
		}
		if !out.IsTruncated || out.Marker == nil {
			return arns, nil
		}
		in.Marker = out.Marker
	}
}

// ensureRole creates the role (tagged as spawn's) with its trust policy and this
// region's inline policy, or brings both up to date on a role checkIAMIsSpawns found to
// be spawn's. It returns the role's ARN.
func (d *deployer) ensureRole(ctx context.Context, api deployIAMAPI, account, name string, trust, policy policyDocument) (string, error) {
	arn := d.names.roleARN(account, name)
	out, err := api.GetRole(ctx, &iam.GetRoleInput{RoleName: aws.String(name)})
	action := actionUnchanged
	switch {
	case isNotFound(err):
		action = actionCreated
		if !d.dryRun {
			if arn, err = d.createRole(ctx, api, name, trust); err != nil {
				return "", err
			}
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
	changed, err := d.ensureRegionPolicy(ctx, api, name, policy, action == actionCreated)
	if err != nil {
		return "", err
	}
	if changed && action == actionUnchanged {
		action = actionUpdated
	}
	d.report(resourceResult{Kind: kindRole, Name: name, ARN: arn, Action: action})
	return arn, nil
}

func (d *deployer) createRole(ctx context.Context, api deployIAMAPI, name string, trust policyDocument) (string, error) {
	var out *iam.CreateRoleOutput
	err := d.retryPropagation(ctx, "creating role "+name, isInvalidPrincipal, func() error {
		var err error
		out, err = api.CreateRole(ctx, &iam.CreateRoleInput{
			RoleName:                 aws.String(name),
			AssumeRolePolicyDocument: aws.String(trust.json()),
			Description:              aws.String("spawn: " + roleDescription(name)),
			Tags:                     spawnTags(),
		})
		return err
	})
	if err != nil {
		return "", fmt.Errorf("creating role %s: %w", name, err)
	}
	return aws.ToString(out.Role.Arn), nil
}

// ensureRegionPolicy writes this region's inline policy on the role when it is missing
// or differs; the other regions' policies are theirs and stay.
func (d *deployer) ensureRegionPolicy(ctx context.Context, api deployIAMAPI, role string, policy policyDocument, created bool) (bool, error) {
	pname := regionPolicyName(d.names.region)
	put := created
	if !created {
		out, err := api.GetRolePolicy(ctx, &iam.GetRolePolicyInput{RoleName: aws.String(role), PolicyName: aws.String(pname)})
		switch {
		case isNotFound(err):
			put = true
		case err != nil:
			return false, fmt.Errorf("reading role %s's policy %s: %w", role, pname, err)
		default:
			put = !samePolicy(aws.ToString(out.PolicyDocument), policy.json())
		}
	}
	if put && !d.dryRun {
		if _, err := api.PutRolePolicy(ctx, &iam.PutRolePolicyInput{
			RoleName: aws.String(role), PolicyName: aws.String(pname), PolicyDocument: aws.String(policy.json()),
		}); err != nil {
			return false, fmt.Errorf("writing role %s's policy %s: %w", role, pname, err)
		}
	}
	return put, nil
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

// ensureInstanceRole is spawnd-role and its instance profile (tagged as spawn's) in account.
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
			cout, err := api.CreateInstanceProfile(ctx, &iam.CreateInstanceProfileInput{InstanceProfileName: name, Tags: spawnTags()})
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

// notSpawns is the reason destroy gives for leaving a resource of spawn's name alone.
const notSpawns = "not spawn's: it has no " + tagManaged + "=true tag (deploy did not create it), so destroy leaves it alone"

// roleRegions reads a role for destroy: nil when it is missing or not spawn's (both
// reported skipped), else the regions' policies it still holds besides this region's.
func (d *deployer) roleRegions(ctx context.Context, api deployIAMAPI, account, name string) (role *iamtypes.Role, others []string, err error) {
	out, err := api.GetRole(ctx, &iam.GetRoleInput{RoleName: aws.String(name)})
	if isNotFound(err) {
		d.notFound(kindRole, name, d.names.roleARN(account, name))
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("reading role %s: %w", name, err)
	}
	if !taggedAsSpawns(out.Role.Tags) {
		d.report(resourceResult{Kind: kindRole, Name: name, ARN: aws.ToString(out.Role.Arn), Action: actionSkipped, Reason: notSpawns})
		return nil, nil, nil
	}
	inline, err := inlinePolicies(ctx, api, name)
	if err != nil {
		return nil, nil, err
	}
	for _, p := range inline {
		if regionPolicy.MatchString(p) && p != regionPolicyName(d.names.region) {
			others = append(others, strings.TrimPrefix(p, rolePolicyName+"-"))
		}
	}
	return out.Role, others, nil
}

// deleteRole removes this region's policy from a role deploy created; with no other
// region's policy left, it removes the role with every policy on it.
func (d *deployer) deleteRole(ctx context.Context, api deployIAMAPI, account, name string) error {
	role, others, err := d.roleRegions(ctx, api, account, name)
	if role == nil || err != nil {
		return err
	}
	arn := aws.ToString(role.Arn)
	if len(others) > 0 {
		pname := regionPolicyName(d.names.region)
		if _, err := api.DeleteRolePolicy(ctx, &iam.DeleteRolePolicyInput{RoleName: aws.String(name), PolicyName: aws.String(pname)}); err != nil && !isNotFound(err) {
			return fmt.Errorf("deleting role %s's policy %s: %w", name, pname, err)
		}
		d.report(resourceResult{Kind: kindRole, Name: name, ARN: arn, Action: actionUpdated,
			Reason: "removed this region's policy " + pname + "; kept for " + strings.Join(others, ", ")})
		return nil
	}
	inline, err := inlinePolicies(ctx, api, name)
	if err != nil {
		return err
	}
	for _, p := range inline {
		if _, err := api.DeleteRolePolicy(ctx, &iam.DeleteRolePolicyInput{RoleName: aws.String(name), PolicyName: aws.String(p)}); err != nil && !isNotFound(err) {
			return fmt.Errorf("deleting role %s's policy %s: %w", name, p, err)
		}
	}
	attached, err := attachedPolicies(ctx, api, name)
	if err != nil {
		return err
	}
	for _, p := range attached {
		if _, err := api.DetachRolePolicy(ctx, &iam.DetachRolePolicyInput{RoleName: aws.String(name), PolicyArn: aws.String(p)}); err != nil && !isNotFound(err) {
			return fmt.Errorf("detaching policy %s from role %s: %w", p, name, err)
		}
	}
	if _, err := api.DeleteRole(ctx, &iam.DeleteRoleInput{RoleName: aws.String(name)}); err != nil && !isNotFound(err) {
		return fmt.Errorf("deleting role %s: %w", name, err)
	}
	d.report(resourceResult{Kind: kindRole, Name: name, ARN: arn, Action: actionDeleted})
	return nil
}

// deleteInstanceRole removes spawnd-role's instance profile, then the role, when this
// is the role's last region; otherwise only this region's policy.
func (d *deployer) deleteInstanceRole(ctx context.Context, api deployIAMAPI, account string) error {
	name := aws.String(instanceRoleName)
	arn := "arn:" + d.names.partition + ":iam::" + account + ":instance-profile/" + instanceRoleName
	out, err := api.GetRole(ctx, &iam.GetRoleInput{RoleName: name})
	if err == nil && taggedAsSpawns(out.Role.Tags) {
		inline, err := inlinePolicies(ctx, api, instanceRoleName)
		if err != nil {
			return err
		}
		for _, p := range inline {
			if regionPolicy.MatchString(p) && p != regionPolicyName(d.names.region) {
				d.report(resourceResult{Kind: kindInstanceProfile, Name: instanceRoleName, ARN: arn, Action: actionSkipped,
					Reason: "kept: " + instanceRoleName + " still serves " + strings.TrimPrefix(p, rolePolicyName+"-")})
				return d.deleteRole(ctx, api, account, instanceRoleName)
			}
		}
	} else if err != nil && !isNotFound(err) {
		return fmt.Errorf("reading role %s: %w", instanceRoleName, err)
	}
	prof, err := api.GetInstanceProfile(ctx, &iam.GetInstanceProfileInput{InstanceProfileName: name})
	ours := false
	if err == nil {
		if ours, err = d.profileIsSpawns(ctx, api, prof.InstanceProfile); err != nil {
			return err
		}
	}
	switch {
	case isNotFound(err):
		d.notFound(kindInstanceProfile, instanceRoleName, arn)
	case err != nil:
		return fmt.Errorf("reading instance profile %s: %w", instanceRoleName, err)
	case !ours:
		d.report(resourceResult{Kind: kindInstanceProfile, Name: instanceRoleName, ARN: aws.ToString(prof.InstanceProfile.Arn),
			Action: actionSkipped, Reason: notSpawns})
	default:
		arn = aws.ToString(prof.InstanceProfile.Arn)
		for _, r := range prof.InstanceProfile.Roles {
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
