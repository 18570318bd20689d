package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sts"
)

// `launch --compute-profile P` runs a sweep's instances in P's account: the record's
// aws_account_id is P's account, and the orchestrator reaches it through that account's
// SpawnSweepCrossAccountRole (ec2.go, awsClients). The role trusts only the orchestrator
// role, so the CLI itself cannot run such a sweep (--no-detach is refused), and the
// account must be one deploy set up: that is checked before anything is created.

// profileAccount loads profile's configuration in region and asks STS whose account its
// credentials are. flag names the flag that gave the profile, for the error.
func (r *rootConfig) profileAccount(ctx context.Context, flag, profile, region string) (aws.Config, string, error) {
	cfg, err := loadAWSConfig(ctx, profile, region, r.endpointURL, r.log)
	if err != nil {
		if cause := errors.Unwrap(err); cause != nil {
			err = cause
		}
		return aws.Config{}, "", usageErrorf("%s %s cannot be loaded (%v): check that profile in ~/.aws/config", flag, profile, err)
	}
	id, err := sts.NewFromConfig(cfg).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil {
		return aws.Config{}, "", fmt.Errorf("no usable AWS credentials for %s %s (%w): check that profile in ~/.aws/config, or log in with 'aws sso login --profile %s'", flag, profile, shortErr(err), profile)
	}
	return cfg, aws.ToString(id.Account), nil
}

// shortErr keeps an SDK error's operation, code and message (shortError) as an error.
func shortErr(err error) error { return fmt.Errorf("%s", shortError(err)) }

// sweepAccount is the account a launch's instances run in: the caller's, or with
// --compute-profile, that profile's once checkComputeAccount allows it.
func (r *rootConfig) sweepAccount(ctx context.Context, profile string, d *deployment) (string, error) {
	if profile == "" {
		return d.accountID, nil
	}
	_, account, err := r.profileAccount(ctx, "--compute-profile", profile, d.region)
	if err != nil {
		return "", err
	}
	return account, checkComputeAccount(profile, account, d)
}

// openLaunch opens the deployment and the engine, and resolves the account the
// instances run in: the deployment's allow-lists and the compute account are checked
// before anything is uploaded or recorded. An item the lists refuse is refused like a
// bad file (exit 2): the file has to change, or the deployment.
func (r *rootConfig) openLaunch(ctx context.Context, req *launchRequest) (*deployment, *engineDeps, string, error) {
	d, deps, err := r.cliEngine(ctx)
	if err != nil {
		return nil, nil, "", err
	}
	if err := d.recorded.allowLists().checkItems(req.Items, d.region); err != nil {
		return nil, nil, "", withExitCode(exitUsage, err)
	}
	account, err := r.sweepAccount(ctx, req.ComputeProfile, d)
	if err != nil {
		return nil, nil, "", err
	}
	return d, deps, account, nil
}

// orchestratorAccount is the account the orchestrator runs in: the one deploy recorded,
// else the caller's.
func (d *deployment) orchestratorAccount() string {
	if d.recorded != nil && d.recorded.Account != "" {
		return d.recorded.Account
	}
	return d.accountID
}

// checkComputeAccount refuses a compute account the orchestrator cannot reach: one that
// is not its own and that no deploy recorded (no SpawnSweepCrossAccountRole there for it
// to assume, or no grant in its policy to assume it).
func checkComputeAccount(profile, account string, d *deployment) error {
	if account == d.orchestratorAccount() {
		return nil
	}
	if d.recorded != nil && slices.Contains(d.recorded.ComputeAccounts, account) {
		return nil
	}
	return fmt.Errorf("--compute-profile %s is account %s, which the deployment in %s (account %s) has not set up for sweeps: run 'spawn deploy --compute-profile %s' (it creates %s there), then launch again",
		profile, account, d.region, d.orchestratorAccount(), profile, crossAccountRoleName)
}

// crossAccount says whether a sweep in account runs through the cross-account role.
func (d *deployment) crossAccount(account string) bool {
	return account != "" && d.orchestratorAccount() != "" && account != d.orchestratorAccount()
}

// refuseCrossAccountHere refuses to run sweep id in this process (resume --no-detach)
// when its instances are in another account: only the orchestrator function may assume
// that account's role, so the run would fail at its first EC2 call. Nothing is changed.
func refuseCrossAccountHere(ctx context.Context, deps *engineDeps, d *deployment, id string) error {
	sw, err := deps.store.loadSweep(ctx, id)
	if err != nil {
		return explainStoreError(err, d, d.table, id)
	}
	if !d.crossAccount(sw.AWSAccountID) {
		return nil
	}
	return usageErrorf("sweep %s runs its instances in account %s through %s, which trusts only the orchestrator function, not this process: resume it without --no-detach",
		id, sw.AWSAccountID, crossAccountRoleName)
}

// crossCancelWait bounds how long `spawn cancel` waits for the orchestrator function to
// end a sweep in another account.
const crossCancelWait = 5 * time.Minute

// cancelThroughFunction cancels a sweep whose instances are in another account. Only the
// orchestrator function may assume that account's role, so the CLI records the cancel,
// starts the function (a running holder sees the cancel at its next step, a new one at
// its first) and waits for the sweep to end. It reports whether it had already ended.
func (r *rootConfig) cancelThroughFunction(ctx context.Context, deps *engineDeps, id string) (*sweep, bool, error) {
	sw, err := deps.store.requestCancel(ctx, id)
	if err != nil {
		return nil, false, err
	}
	if terminalStatus(sw.Status) {
		return sw, true, nil
	}
	if err := startFunction(ctx, deps, id); err != nil {
		return nil, false, err
	}
	wctx, stop := context.WithTimeout(ctx, crossCancelWait)
	defer stop()
	final, err := waitSweep(wctx, deps.store, id, 2*time.Second, r.clock)
	if err != nil && ctx.Err() == nil {
		return nil, false, fmt.Errorf("sweep %s runs in account %s: its cancel is recorded and the orchestrator function %s was started, but the sweep did not end within %s: follow it with 'spawn status %s --wait', and run 'spawn cancel %s' again if it does not end",
			id, sw.AWSAccountID, deps.function, crossCancelWait, id, id)
	}
	return final, false, err
}
