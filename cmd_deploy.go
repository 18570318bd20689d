package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/peterbourgon/ff/v3/ffcli"
)

type deployFlags struct {
	computeProfile string
	bootstrap      string
	memory         int
	dryRun         bool
	// allowTypes and allowRegions are the allow-lists as given; a flag not given keeps
	// the list the deployment recorded.
	allowTypes, allowRegions string
}

// allowChanges reads --allow-instance-types and --allow-regions, those given.
func (f *deployFlags) allowChanges(fs *flag.FlagSet) (types, regions allowChange, err error) {
	fs.Visit(func(fl *flag.Flag) {
		switch {
		case err != nil:
		case fl.Name == "allow-instance-types":
			types, err = parseAllowInstanceTypes("--"+fl.Name, f.allowTypes)
		case fl.Name == "allow-regions":
			regions, err = parseAllowRegions("--"+fl.Name, f.allowRegions)
		}
	})
	return types, regions, withExitCode(exitUsage, err)
}

func newDeployCmd(r *rootConfig) *ffcli.Command {
	fs := r.newFlagSet("deploy")
	var f deployFlags
	fs.StringVar(&f.computeProfile, "compute-profile", "", "profile of the account where instances run, when it is another account")
	fs.StringVar(&f.bootstrap, "bootstrap", "", "Linux build of spawn to deploy as the function (default: this executable, when it is a Linux build)")
	fs.IntVar(&f.memory, "memory", 0, fmt.Sprintf("function memory in MB (default %d for a new function; an existing function keeps its own)", defaultMemoryMB))
	fs.BoolVar(&f.dryRun, "dry-run", false, "print what would be created or updated and change nothing")
	fs.StringVar(&f.allowTypes, "allow-instance-types", "", "the only instance types sweeps may launch, comma-separated, * a wildcard (t3.*,c6i.large); * alone: any (default: the deployment's list, else any)")
	fs.StringVar(&f.allowRegions, "allow-regions", "", "the only regions sweeps may launch in, comma-separated, this one included; * alone: any (default: the deployment's list, else any)")
	return r.command("deploy", "spawn deploy [--compute-profile P] [--bootstrap FILE] [--memory MB] [--allow-instance-types LIST] [--allow-regions LIST] [--dry-run]",
		"create or update every AWS resource spawn needs, then health-check the function",
		[]string{"spawn deploy --region eu-west-1", "spawn deploy --dry-run --output json",
			"spawn deploy --allow-instance-types 't3.*,c6i.large' --allow-regions us-east-1,us-west-2"}, fs,
		func(ctx context.Context, args []string) error {
			if err := noArgs(fs, args); err != nil {
				return err
			}
			if f.memory != 0 && (f.memory < 128 || f.memory > 10240) {
				return usageErrorf("--memory %d is out of range: Lambda takes 128 to 10240 MB", f.memory)
			}
			allowTypes, allowRegions, err := f.allowChanges(fs)
			if err != nil {
				return err
			}
			// A bootstrap Lambda cannot run is an input error: exit 2.
			path, err := selfBootstrap(f.bootstrap)
			if err != nil {
				return withExitCode(exitUsage, err)
			}
			if _, _, err := elfArchitecture(path); err != nil {
				return withExitCode(exitUsage, err)
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
			d.allowTypes, d.allowRegions = allowTypes, allowRegions
			home := allowLists{Regions: allowRegions.list}
			if err := home.checkHomeRegion("--allow-regions", d.names.region); err != nil {
				return withExitCode(exitUsage, err)
			}
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
		"remove every AWS resource deploy created, with the sweeps' data",
		[]string{"spawn destroy", "spawn destroy --yes --force"}, fs,
		func(ctx context.Context, args []string) error {
			if err := noArgs(fs, args); err != nil {
				return err
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
		cfg, account, err := r.profileAccount(ctx, "--compute-profile", computeProfile, dep.region)
		if err != nil {
			return nil, err
		}
		d.compute = &computeTarget{account: account, iam: iam.NewFromConfig(cfg)}
	}
	return d, nil
}

// confirmDestroy asks on a terminal; without one the user must pass --yes.
func (r *rootConfig) confirmDestroy(n policyNames) error {
	if !isTerminal(r.stdin) {
		return usageErrorf("destroy deletes the function, roles, tables and bucket %s with every sweep's data, and stdin is not a terminal to ask: pass --yes to confirm", n.bucket)
	}
	fmt.Fprintf(r.stderr, "This deletes function %s, this region's policies on roles %s and %s (the roles too, if no other region uses them), tables %s and %s, and bucket %s with all its objects.\nType yes to continue: ",
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
