// Deploying the orchestrator function: its code and configuration, its invoke settings,
// and the health check that ends every deploy.

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	lambdatypes "github.com/aws/aws-sdk-go-v2/service/lambda/types"
)

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
	out, err := d.lambda.GetFunction(ctx, &lambda.GetFunctionInput{FunctionName: aws.String(name)})
	created := false
	switch {
	case isNotFound(err):
		arn := d.names.functionARN()
		if d.dryRun {
			d.report(resourceResult{Kind: kindFunction, Name: name, ARN: arn, Action: actionCreated})
			return arn, nil
		}
		arn, err = d.createFunction(ctx, pkg, roleARN)
		if !errors.Is(err, errFunctionExists) {
			if err != nil {
				return "", err
			}
			d.report(resourceResult{Kind: kindFunction, Name: name, ARN: arn, Action: actionCreated})
			return arn, nil
		}
		// An earlier attempt of this create landed (its answer was lost): it is ours, and
		// is brought up to date like an existing one.
		created = true
		if err := d.waitFunction(ctx, name, true); err != nil {
			return "", err
		}
		if out, err = d.lambda.GetFunction(ctx, &lambda.GetFunctionInput{FunctionName: aws.String(name)}); err != nil {
			return "", fmt.Errorf("reading function %s: %w", name, err)
		}
	case err != nil:
		return "", fmt.Errorf("reading function %s: %w", name, err)
	}
	arn := aws.ToString(out.Configuration.FunctionArn)
	action, err := d.updateFunction(ctx, out.Configuration, pkg, roleARN)
	if err != nil {
		return "", err
	}
	if created {
		action = actionCreated
	}
	d.report(resourceResult{Kind: kindFunction, Name: name, ARN: arn, Action: action})
	return arn, nil
}

// errFunctionExists: CreateFunction found the function already there.
var errFunctionExists = errors.New("function exists")

// updateFunction brings an existing function's code and configuration to what deploy
// wants, and says whether anything changed.
func (d *deployer) updateFunction(ctx context.Context, cfg *lambdatypes.FunctionConfiguration, pkg *bootstrapPackage, roleARN string) (string, error) {
	name := d.names.function
	codeChanged := aws.ToString(cfg.CodeSha256) != pkg.sha256 ||
		len(cfg.Architectures) != 1 || cfg.Architectures[0] != pkg.arch
	update, configChanged := d.functionUpdate(cfg, roleARN)
	if !codeChanged && !configChanged {
		return actionUnchanged, nil
	}
	if d.dryRun {
		return actionUpdated, nil
	}
	if codeChanged {
		if err := d.waitFunction(ctx, name, false); err != nil {
			return "", err
		}
		if _, err := d.lambda.UpdateFunctionCode(ctx, &lambda.UpdateFunctionCodeInput{
			FunctionName: aws.String(name), ZipFile: pkg.zip, Architectures: []lambdatypes.Architecture{pkg.arch},
		}, uploadOptions(pkg)); err != nil {
			return "", fmt.Errorf("updating function %s's code: %w", name, err)
		}
	}
	if configChanged {
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
	if err := d.waitFunction(ctx, name, false); err != nil {
		return "", err
	}
	return actionUpdated, nil
}

// uploadRate is the slowest uplink a code upload is given time for: 16 KiB/s, about
// 128 kbit/s.
const uploadRate = 16 << 10

// uploadOptions give a call that sends the code (~6 MB in one request) an attempt
// timeout that fits the zip at uploadRate on top of the usual one: the per-attempt
// timeout bounds an answer that never comes, not a slow upload.
func uploadOptions(pkg *bootstrapPackage) func(*lambda.Options) {
	base, err := awsTimeout()
	if err != nil {
		base = defaultAWSTimeout
	}
	timeout := base + time.Duration(len(pkg.zip)/uploadRate+1)*time.Second
	return func(o *lambda.Options) {
		o.HTTPClient = awshttp.NewBuildableClient().WithTimeout(timeout)
	}
}

// createFunction creates the function, retrying while the just-created role is not yet
// assumable by Lambda, and waits until it is active.
func (d *deployer) createFunction(ctx context.Context, pkg *bootstrapPackage, roleARN string) (string, error) {
	name := d.names.function
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
		Environment:   &lambdatypes.Environment{Variables: d.functionEnv()},
		Code:          &lambdatypes.FunctionCode{ZipFile: pkg.zip},
		Description:   aws.String("spawn sweep orchestrator"),
	}
	var cout *lambda.CreateFunctionOutput
	err := d.retryPropagation(ctx, "creating function "+name, isRoleNotAssumable, func() error {
		var err error
		cout, err = d.lambda.CreateFunction(ctx, in, uploadOptions(pkg))
		return err
	})
	if apiErrorCode(err) == "ResourceConflictException" {
		return "", errFunctionExists
	}
	if err != nil {
		return "", fmt.Errorf("creating function %s: %w", name, err)
	}
	if err := d.waitFunction(ctx, name, true); err != nil {
		return "", err
	}
	return aws.ToString(cout.FunctionArn), nil
}

// functionUpdate is the configuration update that brings the function to what deploy
// wants, and whether anything differs.
func (d *deployer) functionUpdate(cfg *lambdatypes.FunctionConfiguration, roleARN string) (*lambda.UpdateFunctionConfigurationInput, bool) {
	update := &lambda.UpdateFunctionConfigurationInput{FunctionName: aws.String(d.names.function)}
	changed := false
	if cfg.Runtime != lambdatypes.RuntimeProvidedal2023 || aws.ToString(cfg.Handler) != "bootstrap" {
		update.Runtime, update.Handler, changed = lambdatypes.RuntimeProvidedal2023, aws.String("bootstrap"), true
	}
	if aws.ToInt32(cfg.Timeout) != functionTimeout {
		update.Timeout, changed = aws.Int32(functionTimeout), true
	}
	if d.memoryMB != 0 && aws.ToInt32(cfg.MemorySize) != d.memoryMB {
		update.MemorySize, changed = aws.Int32(d.memoryMB), true
	}
	if aws.ToString(cfg.Role) != roleARN {
		update.Role, changed = aws.String(roleARN), true
	}
	var have map[string]string
	if cfg.Environment != nil {
		have = cfg.Environment.Variables
	}
	if env := d.functionEnv(); !sameEnv(have, env) {
		update.Environment, changed = &lambdatypes.Environment{Variables: env}, true
	}
	return update, changed
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
			return fmt.Errorf("health check of function %s (%w): see its logs in /aws/lambda/%s", name, err, name)
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
