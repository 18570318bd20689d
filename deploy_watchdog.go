package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/eventbridge"
	ebtypes "github.com/aws/aws-sdk-go-v2/service/eventbridge/types"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
)

// The watchdog's schedule: an EventBridge rule that sends the function {"watchdog": true}
// every five minutes, and the function's permission for EventBridge to invoke it
// (watchdog.go is what the function then does).

const (
	kindSchedule   = "schedule"
	kindPermission = "permission"

	// defaultWatchdogRule is the rule of the default function; another function's rule
	// is named after it, so two deployments in one region never share a rule.
	defaultWatchdogRule = "spawn-sweep-watchdog"
	watchdogSchedule    = "rate(5 minutes)"
	watchdogInput       = `{"watchdog": true}`
	watchdogTargetID    = "spawn-orchestrator"
	// watchdogStatementID names the statement of the function's resource policy that lets
	// the rule invoke it.
	watchdogStatementID = "spawn-sweep-watchdog"
)

// deployEventsAPI is the EventBridge part of deploy and destroy.
type deployEventsAPI interface {
	DescribeRule(context.Context, *eventbridge.DescribeRuleInput, ...func(*eventbridge.Options)) (*eventbridge.DescribeRuleOutput, error)
	PutRule(context.Context, *eventbridge.PutRuleInput, ...func(*eventbridge.Options)) (*eventbridge.PutRuleOutput, error)
	ListTargetsByRule(context.Context, *eventbridge.ListTargetsByRuleInput, ...func(*eventbridge.Options)) (*eventbridge.ListTargetsByRuleOutput, error)
	PutTargets(context.Context, *eventbridge.PutTargetsInput, ...func(*eventbridge.Options)) (*eventbridge.PutTargetsOutput, error)
	RemoveTargets(context.Context, *eventbridge.RemoveTargetsInput, ...func(*eventbridge.Options)) (*eventbridge.RemoveTargetsOutput, error)
	DeleteRule(context.Context, *eventbridge.DeleteRuleInput, ...func(*eventbridge.Options)) (*eventbridge.DeleteRuleOutput, error)
}

// deployPermissionAPI is the function resource-policy part of deploy.
type deployPermissionAPI interface {
	GetPolicy(context.Context, *lambda.GetPolicyInput, ...func(*lambda.Options)) (*lambda.GetPolicyOutput, error)
	AddPermission(context.Context, *lambda.AddPermissionInput, ...func(*lambda.Options)) (*lambda.AddPermissionOutput, error)
	RemovePermission(context.Context, *lambda.RemovePermissionInput, ...func(*lambda.Options)) (*lambda.RemovePermissionOutput, error)
}

// watchdogRule is the rule's name for this deployment's function.
func (n policyNames) watchdogRule() string {
	if n.function == defaultFunction {
		return defaultWatchdogRule
	}
	return n.function + "-watchdog"
}

func (n policyNames) watchdogRuleARN() string {
	return n.arn("events", n.region, n.account, "rule/"+n.watchdogRule())
}

// ensureWatchdog makes the rule (every five minutes, enabled), its one target (the
// function, with the watchdog's input) and the function's permission for the rule.
func (d *deployer) ensureWatchdog(ctx context.Context, fnARN string) error {
	name, ruleARN := d.names.watchdogRule(), d.names.watchdogRuleARN()
	action, err := d.ensureRule(ctx, name)
	if err == nil {
		var targetAction string
		if targetAction, err = d.ensureTarget(ctx, name, fnARN); err == nil && action == actionUnchanged {
			action = targetAction
		}
	}
	if err != nil {
		return d.optionalStep(kindSchedule, name, ruleARN, err)
	}
	d.report(resourceResult{Kind: kindSchedule, Name: name, ARN: ruleARN, Action: action})
	action, err = d.ensureInvokePermission(ctx, ruleARN)
	if err != nil {
		return d.optionalStep(kindPermission, watchdogStatementID, fnARN, err)
	}
	d.report(resourceResult{Kind: kindPermission, Name: watchdogStatementID, ARN: fnARN, Action: action})
	return nil
}

func (d *deployer) ensureRule(ctx context.Context, name string) (string, error) {
	out, err := d.events.DescribeRule(ctx, &eventbridge.DescribeRuleInput{Name: aws.String(name)})
	action := actionUnchanged
	switch {
	case isNotFound(err):
		action = actionCreated
	case err != nil:
		return "", fmt.Errorf("reading rule %s: %w", name, err)
	case aws.ToString(out.ScheduleExpression) != watchdogSchedule || out.State != ebtypes.RuleStateEnabled:
		action = actionUpdated
	}
	if action != actionUnchanged && !d.dryRun {
		if _, err := d.events.PutRule(ctx, &eventbridge.PutRuleInput{
			Name:               aws.String(name),
			ScheduleExpression: aws.String(watchdogSchedule),
			State:              ebtypes.RuleStateEnabled,
			Description:        aws.String("spawn: continues every detached sweep nobody drives"),
		}); err != nil {
			return "", fmt.Errorf("writing rule %s: %w", name, err)
		}
	}
	return action, nil
}

// ensureTarget makes the function the rule's only spawn target, with the watchdog's input.
func (d *deployer) ensureTarget(ctx context.Context, rule, fnARN string) (string, error) {
	if d.dryRun && d.functionPlannedNew() {
		return actionCreated, nil
	}
	out, err := d.events.ListTargetsByRule(ctx, &eventbridge.ListTargetsByRuleInput{Rule: aws.String(rule)})
	if err != nil && !isNotFound(err) {
		return "", fmt.Errorf("reading the targets of rule %s: %w", rule, err)
	}
	if out != nil {
		for _, tg := range out.Targets {
			if aws.ToString(tg.Id) == watchdogTargetID && aws.ToString(tg.Arn) == fnARN && sameJSON(aws.ToString(tg.Input), watchdogInput) {
				return actionUnchanged, nil
			}
		}
	}
	if !d.dryRun {
		if _, err := d.events.PutTargets(ctx, &eventbridge.PutTargetsInput{
			Rule:    aws.String(rule),
			Targets: []ebtypes.Target{{Id: aws.String(watchdogTargetID), Arn: aws.String(fnARN), Input: aws.String(watchdogInput)}},
		}); err != nil {
			return "", fmt.Errorf("pointing rule %s at function %s: %w", rule, fnARN, err)
		}
	}
	return actionUpdated, nil
}

// ensureInvokePermission lets the rule, and only the rule, invoke the function.
func (d *deployer) ensureInvokePermission(ctx context.Context, ruleARN string) (string, error) {
	fn := d.names.function
	if d.dryRun && d.functionPlannedNew() {
		return actionCreated, nil
	}
	out, err := d.permissions.GetPolicy(ctx, &lambda.GetPolicyInput{FunctionName: aws.String(fn)})
	if err != nil && !isNotFound(err) {
		return "", fmt.Errorf("reading function %s's resource policy: %w", fn, err)
	}
	action := actionCreated
	if out != nil {
		switch sourceARN, found := statementSource(aws.ToString(out.Policy), watchdogStatementID); {
		case found && sourceARN == ruleARN:
			return actionUnchanged, nil
		case found:
			action = actionUpdated
			if !d.dryRun {
				if _, err := d.permissions.RemovePermission(ctx, &lambda.RemovePermissionInput{
					FunctionName: aws.String(fn), StatementId: aws.String(watchdogStatementID),
				}); err != nil && !isNotFound(err) {
					return "", fmt.Errorf("replacing function %s's permission %s: %w", fn, watchdogStatementID, err)
				}
			}
		}
	}
	if !d.dryRun {
		if _, err := d.permissions.AddPermission(ctx, &lambda.AddPermissionInput{
			FunctionName:  aws.String(fn),
			StatementId:   aws.String(watchdogStatementID),
			Action:        aws.String("lambda:InvokeFunction"),
			Principal:     aws.String("events.amazonaws.com"),
			SourceArn:     aws.String(ruleARN),
			SourceAccount: aws.String(d.names.account),
		}); err != nil {
			return "", fmt.Errorf("letting rule %s invoke function %s: %w", ruleARN, fn, err)
		}
	}
	return action, nil
}

// statementSource finds statement sid in a resource policy and the rule ARN its
// condition names.
func statementSource(policy, sid string) (sourceARN string, found bool) {
	if p, err := url.PathUnescape(policy); err == nil {
		policy = p
	}
	var doc struct {
		Statement []struct {
			Sid       string
			Condition map[string]map[string]string
		}
	}
	if json.Unmarshal([]byte(policy), &doc) != nil {
		return "", false
	}
	for _, st := range doc.Statement {
		if st.Sid == sid {
			return st.Condition["ArnLike"]["AWS:SourceArn"], true
		}
	}
	return "", false
}

// sameJSON compares two JSON texts by value.
func sameJSON(a, b string) bool {
	var x, y any
	if json.Unmarshal([]byte(a), &x) != nil || json.Unmarshal([]byte(b), &y) != nil {
		return strings.TrimSpace(a) == strings.TrimSpace(b)
	}
	return fmt.Sprint(x) == fmt.Sprint(y)
}

// deleteWatchdog removes the rule's target and the rule (the permission goes with the
// function).
func (d *deployer) deleteWatchdog(ctx context.Context) error {
	name, ruleARN := d.names.watchdogRule(), d.names.watchdogRuleARN()
	// DeleteRule of a rule that is not there may succeed (moto does), so look first:
	// destroy reports only what it deleted.
	if _, err := d.events.DescribeRule(ctx, &eventbridge.DescribeRuleInput{Name: aws.String(name)}); isNotFound(err) {
		d.notFound(kindSchedule, name, ruleARN)
		return nil
	} else if err != nil {
		return fmt.Errorf("reading rule %s: %w", name, err)
	}
	_, err := d.events.RemoveTargets(ctx, &eventbridge.RemoveTargetsInput{Rule: aws.String(name), Ids: []string{watchdogTargetID}})
	if err != nil && !isNotFound(err) {
		return fmt.Errorf("removing the target of rule %s: %w", name, err)
	}
	_, err = d.events.DeleteRule(ctx, &eventbridge.DeleteRuleInput{Name: aws.String(name)})
	switch {
	case isNotFound(err):
		d.notFound(kindSchedule, name, ruleARN)
	case err != nil:
		return fmt.Errorf("deleting rule %s: %w", name, err)
	default:
		d.report(resourceResult{Kind: kindSchedule, Name: name, ARN: ruleARN, Action: actionDeleted})
	}
	return nil
}
