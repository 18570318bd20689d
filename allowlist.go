// The deployment's allow-lists (deploy --allow-instance-types, --allow-regions): the
// instance types and regions its sweeps may launch. Deploy writes them into the
// RunInstances statements of every role that launches (policy.go, ec2Statements) and
// records them in the deployment item; launch checks every item and every fallback
// candidate against the recorded lists before anything is written. The engine does not
// check: the policy is the backstop.

package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iam"
)

// allowLists are a deployment's lists; an empty list allows any type or region.
type allowLists struct {
	// InstanceTypes are types or patterns in which * stands for any run of characters,
	// as in IAM's StringLike (ec2:InstanceType).
	InstanceTypes []string
	Regions       []string
}

// allowAny given alone to an --allow-* flag removes that restriction.
const allowAny = "*"

// allowChange is what deploy was asked to do with one list: keep the recorded one (the
// flag not given), or replace it (list nil: no restriction).
type allowChange struct {
	given bool
	list  []string
}

func (c allowChange) apply(recorded []string) []string {
	if !c.given {
		return recorded
	}
	return c.list
}

// parseAllowInstanceTypes reads --allow-instance-types: comma-separated types or patterns.
func parseAllowInstanceTypes(flag, value string) (allowChange, error) {
	return parseAllowList(flag, value, func(e string) error {
		if validInstanceTypePattern(e) {
			return nil
		}
		return fmt.Errorf("%s: %q is not an instance type or a pattern of one: give types such as t3.micro or patterns such as t3.*, separated by commas", flag, e)
	})
}

// parseAllowRegions reads --allow-regions: comma-separated region names.
func parseAllowRegions(flag, value string) (allowChange, error) {
	return parseAllowList(flag, value, func(e string) error {
		if regionShape.MatchString(e) {
			return nil
		}
		hint := "give region names such as us-east-1, separated by commas"
		if s := closest(e, awsRegions[:]); s != "" {
			hint = fmt.Sprintf("did you mean %q?", s)
		}
		return fmt.Errorf("%s: %q is not an AWS region: %s", flag, e, hint)
	})
}

// regionShape is a region name's form (us-east-1, ap-southeast-7, us-gov-west-1): a list
// compiled in would refuse a region newer than the binary.
var regionShape = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-[0-9]+$`)

func parseAllowList(flag, value string, check func(string) error) (allowChange, error) {
	if strings.TrimSpace(value) == allowAny {
		return allowChange{given: true}, nil
	}
	var list []string
	for _, e := range strings.Split(value, ",") {
		e = strings.TrimSpace(e)
		switch {
		case e == "":
			return allowChange{}, fmt.Errorf("%s %q has an empty entry: separate the entries with single commas, or give %s alone to allow any", flag, value, allowAny)
		case e == allowAny:
			return allowChange{}, fmt.Errorf("%s %q holds %s, which allows any: give %s alone to remove the restriction, or only the entries to allow", flag, value, allowAny, allowAny)
		}
		if err := check(e); err != nil {
			return allowChange{}, err
		}
		if !slices.Contains(list, e) {
			list = append(list, e)
		}
	}
	return allowChange{given: true, list: list}, nil
}

// validInstanceTypePattern is a type (validInstanceType), or a pattern of one: lower-case
// letters, digits, dashes and at most one dot, with * for any run of them (t3.*, *.large,
// c6i.*xlarge). IAM's other wildcard, ?, is not taken: launch matches * only.
func validInstanceTypePattern(s string) bool {
	if !strings.Contains(s, allowAny) {
		return validInstanceType(s)
	}
	if strings.Count(s, ".") > 1 || strings.Trim(s, allowAny) == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '*') {
			return false
		}
	}
	return true
}

// matchesPattern reports whether s matches pattern, * standing for any run of characters
// (none included), every other character for itself: IAM's StringLike without ?.
func matchesPattern(pattern, s string) bool {
	parts := strings.Split(pattern, allowAny)
	if len(parts) == 1 {
		return pattern == s
	}
	first, last := parts[0], parts[len(parts)-1]
	if len(s) < len(first)+len(last) || !strings.HasPrefix(s, first) || !strings.HasSuffix(s, last) {
		return false
	}
	s = s[len(first) : len(s)-len(last)]
	for _, p := range parts[1 : len(parts)-1] {
		i := strings.Index(s, p)
		if i < 0 {
			return false
		}
		s = s[i+len(p):]
	}
	return true
}

func (a allowLists) typeAllowed(t string) bool {
	return len(a.InstanceTypes) == 0 || slices.ContainsFunc(a.InstanceTypes, func(p string) bool { return matchesPattern(p, t) })
}

func (a allowLists) regionAllowed(r string) bool {
	return len(a.Regions) == 0 || slices.Contains(a.Regions, r)
}

// checkHomeRegion refuses a region list that leaves out the deployment's own region:
// every item that names no region runs there.
func (a allowLists) checkHomeRegion(flag, region string) error {
	if a.regionAllowed(region) {
		return nil
	}
	return fmt.Errorf("%s %s leaves out %s, the region this deployment is in and where every item without a region runs: add %s to the list",
		flag, strings.Join(a.Regions, ","), region, region)
}

// checkItems refuses the first item with a candidate (its first launch or a capacity
// fallback) whose type or region the lists do not allow. region is the sweep's: a
// candidate that names none runs there.
func (a allowLists) checkItems(items []item, region string) error {
	if len(a.InstanceTypes) == 0 && len(a.Regions) == 0 {
		return nil
	}
	for i := range items {
		for k, c := range candidatesOf(items[i]) {
			verb := "asks for"
			if k > 0 {
				verb = "falls back to"
			}
			if !a.typeAllowed(c.InstanceType) {
				return a.refusal(items[i].Index, verb, "instance type", c.InstanceType, a.InstanceTypes, "--allow-instance-types")
			}
			if r := cmp.Or(c.Region, region); !a.regionAllowed(r) {
				return a.refusal(items[i].Index, verb, "region", r, a.Regions, "--allow-regions")
			}
		}
	}
	return nil
}

func (a allowLists) refusal(index int, verb, what, value string, allowed []string, flag string) error {
	return fmt.Errorf("item %d %s %s %s, which this deployment does not allow (it allows %s): use an allowed %s, or ask whoever deploys spawn to add it with 'spawn deploy %s %s'",
		index, verb, what, value, strings.Join(allowed, ", "), what, flag, strings.Join(append(slices.Clone(allowed), value), ","))
}

// recordedAllowLists reads the lists a deploy wrote into a launching role's policy
// document (ec2Statements): the conditions of its LaunchOnlyTaggedInstances statement.
func recordedAllowLists(doc string) allowLists {
	var p struct {
		Statement []struct {
			Sid       string                    `json:"Sid"`
			Condition map[string]map[string]any `json:"Condition"`
		} `json:"Statement"`
	}
	if json.Unmarshal([]byte(doc), &p) != nil {
		return allowLists{}
	}
	for _, st := range p.Statement {
		if st.Sid == sidLaunchTagged {
			return allowLists{
				InstanceTypes: stringList(st.Condition["StringLike"][keyInstanceType]),
				Regions:       stringList(st.Condition["StringEquals"][keyRequestedRegion]),
			}
		}
	}
	return allowLists{}
}

// reportAllowLists adds one line for each list this deploy writes, keeps or removes,
// saying what it allows; none for a list that neither the previous deploy nor this one
// set. The lists live in the deployment item of the sweep table, whose ARN the line gives.
// A line also names the other regions whose policy lets the shared role launch more.
func (d *deployer) reportAllowLists(ctx context.Context) error {
	others, err := d.otherRegionsLists(ctx)
	if err != nil {
		return err
	}
	for _, l := range []struct {
		name, anything string
		before, after  []string
		of             func(allowLists) []string
	}{
		{"instance-types", "any instance type", d.allowBefore.InstanceTypes, d.names.allow.InstanceTypes, func(a allowLists) []string { return a.InstanceTypes }},
		{"regions", "any region", d.allowBefore.Regions, d.names.allow.Regions, func(a allowLists) []string { return a.Regions }},
	} {
		action := actionUnchanged
		switch {
		case len(l.before) == 0 && len(l.after) == 0:
			continue
		case len(l.before) == 0:
			action = actionCreated
		case len(l.after) == 0:
			action = actionDeleted
		case !slices.Equal(slices.Sorted(slices.Values(l.before)), slices.Sorted(slices.Values(l.after))):
			action = actionUpdated
		}
		reason := "allows " + strings.Join(l.after, ", ")
		if len(l.after) == 0 {
			reason = "removed: " + l.anything + " may launch"
		}
		var wider []string
		for _, o := range others {
			if allowsMore(l.of(o.lists), l.after) {
				wider = append(wider, o.region)
			}
		}
		if len(wider) > 0 {
			reason += fmt.Sprintf("; IAM does not enforce it while %s's policy for %s allows more: deploy there with the same list",
				orchestratorRoleName, strings.Join(wider, ", "))
		}
		d.report(resourceResult{Kind: kindAllowList, Name: l.name, ARN: d.names.tableARN(d.names.table), Action: action, Reason: reason})
	}
	return nil
}

// regionLists are another region's allow-lists, as its policy on the orchestrator role has them.
type regionLists struct {
	region string
	lists  allowLists
}

// otherRegionsLists reads the lists of every other region's policy on the orchestrator
// role, when this deploy has lists: every region's function runs as that one role, and
// IAM allows what any of its policies allows, so a list binds the role only where every
// region's policy is as narrow.
func (d *deployer) otherRegionsLists(ctx context.Context) ([]regionLists, error) {
	if len(d.names.allow.InstanceTypes) == 0 && len(d.names.allow.Regions) == 0 {
		return nil, nil
	}
	names, err := inlinePolicies(ctx, d.iam, orchestratorRoleName)
	if isNotFound(err) {
		return nil, nil // a dry run of a first deploy: no role yet
	}
	if err != nil {
		return nil, err
	}
	var out []regionLists
	for _, p := range names {
		if !regionPolicy.MatchString(p) || p == regionPolicyName(d.names.region) {
			continue
		}
		got, err := d.iam.GetRolePolicy(ctx, &iam.GetRolePolicyInput{RoleName: aws.String(orchestratorRoleName), PolicyName: aws.String(p)})
		if err != nil {
			return nil, fmt.Errorf("reading role %s's policy %s: %w", orchestratorRoleName, p, err)
		}
		out = append(out, regionLists{strings.TrimPrefix(p, rolePolicyName+"-"), recordedAllowLists(storedPolicy(got.PolicyDocument))})
	}
	return out, nil
}

// allowsMore reports whether the list theirs allows something mine leaves out: mine
// restricts and theirs does not, or an entry of theirs no entry of mine covers (an
// entry is covered when one of mine matches it as written, * included: t3.* covers
// t3.micro and t3.mi*).
func allowsMore(theirs, mine []string) bool {
	if len(mine) == 0 {
		return false
	}
	if len(theirs) == 0 {
		return true
	}
	for _, e := range theirs {
		if !slices.ContainsFunc(mine, func(p string) bool { return matchesPattern(p, e) }) {
			return true
		}
	}
	return false
}
