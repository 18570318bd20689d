package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"
	"github.com/peterbourgon/ff/v3"
	"github.com/peterbourgon/ff/v3/ffcli"
	"github.com/rs/zerolog"
)

// Every user-facing error is ONE line: what was wrong, then what to do, joined by
// one ": " (never " — ", never a parenthesised hint), lower-case, with no trailing
// period:
//
//	--param-file runs.json: no such file: check the path
//	runs.json line 4, params[0].ttl: "2 hours" is not a duration: use a Go duration like 90m
//
// The place comes first when there is one (a flag, a file and line, a key). A usage
// error may add a second line naming the help command (run 'spawn launch --help').
// The command layer hands main one error type, *cliError, which carries the exit code;
// errors the engine returns keep their own words and exit 1.

// Exit codes (docs/design.md, exit codes).
const (
	exitOK      = 0
	exitRuntime = 1
	exitUsage   = 2
	exitSweep   = 3 // --wait: the sweep ended FAILED or CANCELLED, or with failed items
)

// errSilent marks an error whose message was already shown to the user.
var errSilent = errors.New("")

// cliError is an error for the user: the line shown, the exit code, and the error it
// explains (kept for errors.Is and errors.As).
type cliError struct {
	code int
	msg  string // the line shown; empty: err's own message
	help string // the command whose --help the second line names; empty: no second line
	err  error
}

func (e *cliError) Error() string {
	if e.msg != "" {
		return e.msg
	}
	return e.err.Error()
}

func (e *cliError) Unwrap() error { return e.err }

// usageErrorf is an input or usage error: exit code 2.
func usageErrorf(format string, args ...any) error {
	return &cliError{code: exitUsage, err: fmt.Errorf(format, args...)}
}

// withExitCode wraps err so that main exits with code.
func withExitCode(code int, err error) error {
	if err == nil {
		return nil
	}
	return &cliError{code: code, err: err}
}

// explain shows msg for err, a runtime error (exit 1) the user can act on.
func explain(err error, format string, args ...any) error {
	return &cliError{code: exitRuntime, msg: fmt.Sprintf(format, args...), err: err}
}

// withHelp adds the second line naming the help of cmd ("spawn launch") to a usage error.
func withHelp(cmd string, err error) error {
	return &cliError{code: exitUsage, help: cmd, err: err}
}

func exitCode(err error) int {
	if err == nil {
		return exitOK
	}
	var ce *cliError
	if errors.As(err, &ce) {
		return ce.code
	}
	var pe *paramError
	if errors.As(err, &pe) {
		return exitUsage
	}
	if errors.Is(err, flag.ErrHelp) {
		return exitUsage
	}
	return exitRuntime
}

// printError writes err as main shows it: "spawn: " and one line, and for a usage
// error that names its command, the line naming the help.
func printError(w io.Writer, err error) {
	if err == nil || errors.Is(err, errSilent) || err.Error() == "" {
		return
	}
	fmt.Fprintf(w, "spawn: %s\n", err)
	var ce *cliError
	if errors.As(err, &ce) && ce.help != "" {
		fmt.Fprintf(w, "run '%s --help'\n", ce.help)
	}
}

// rootConfig holds the global flags; every command shares it.
type rootConfig struct {
	region         string
	profile        string
	endpointURL    string
	output         string
	logLevel       string
	table          string
	instancesTable string
	bucket         string
	function       string

	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	log    zerolog.Logger
	// clock paces status --watch and --wait (the engine's clock, so tests control it).
	clock clock
	// helpFor is the command whose help the user asked for, or whose flags failed.
	helpFor *ffcli.Command
}

// registerGlobal binds the global flags on fs. Every command's flag set gets them,
// so they are accepted before or after the command name, as the AWS CLI does.
func (r *rootConfig) registerGlobal(fs *flag.FlagSet) {
	fs.StringVar(&r.region, "region", r.region, "AWS region (default: the profile's or AWS_REGION)")
	fs.StringVar(&r.profile, "profile", r.profile, "AWS shared-config profile")
	fs.StringVar(&r.endpointURL, "endpoint-url", r.endpointURL, "endpoint URL for every AWS service (an emulator)")
	fs.StringVar(&r.output, "output", r.output, "output format: text or json (results: also csv; status and results: also markdown)")
	fs.StringVar(&r.logLevel, "log-level", r.logLevel, "log level: debug, info, warn, error")
	fs.StringVar(&r.table, "table", r.table, "DynamoDB table of sweep records")
	fs.StringVar(&r.instancesTable, "instances-table", r.instancesTable, "DynamoDB table of per-instance items")
	fs.StringVar(&r.bucket, "bucket", r.bucket, "S3 bucket for params and logs (default spawn-sweeps-<account>-<region>)")
	fs.StringVar(&r.function, "function", r.function, "orchestrator Lambda function name")
}

// newFlagSet returns a command's flag set with the global flags on it. The flag
// package writes nothing: a parse error is returned as one line with the help command,
// and --help prints the command's help (usage).
func (r *rootConfig) newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(strings.TrimSpace("spawn "+name), flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	r.registerGlobal(fs)
	return fs
}

// command builds a subcommand with the global flags and the shared pre-run checks.
// Its help shows examples, one command line each.
func (r *rootConfig) command(name, shortUsage, shortHelp string, examples []string, fs *flag.FlagSet, exec func(ctx context.Context, args []string) error) *ffcli.Command {
	return &ffcli.Command{
		Name:       name,
		ShortUsage: shortUsage,
		ShortHelp:  shortHelp,
		LongHelp:   strings.Join(examples, "\n"),
		UsageFunc:  r.usage,
		FlagSet:    fs,
		Exec: func(ctx context.Context, args []string) error {
			// The flag package stops at a positional sweep id; sweepIDArg parses the
			// flags after it. Parse them here too, so setup checks --output and
			// --log-level wherever they stand (sweepIDArg reports a parse error).
			if len(args) > 1 {
				_ = fs.Parse(args[1:])
			}
			if err := r.setup(name); err != nil {
				return err
			}
			return exec(ctx, args)
		},
	}
}

func newRootConfig(stdin io.Reader, stdout, stderr io.Writer) *rootConfig {
	return &rootConfig{
		output:         "text",
		logLevel:       "info",
		table:          defaultTable,
		instancesTable: defaultInstancesTable,
		function:       defaultFunction,
		stdin:          stdin,
		stdout:         stdout,
		stderr:         stderr,
		clock:          realClock{},
	}
}

func runCLI(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	return newRootConfig(stdin, stdout, stderr).run(ctx, args)
}

// run parses the command line, then runs the command it names.
func (r *rootConfig) run(ctx context.Context, args []string) error {
	root := &ffcli.Command{
		ShortUsage: "spawn [global flags] <command> [flags]",
		ShortHelp:  "parameter sweeps on EC2 that keep going when the laptop closes",
		UsageFunc:  r.usage,
		FlagSet:    r.newFlagSet(""),
		// Only the root reads SPAWN_* env, so a flag on the command line always wins over env.
		Options: []ff.Option{ff.WithEnvVarPrefix("SPAWN")},
		Subcommands: []*ffcli.Command{
			// In the order a user meets them.
			newDeployCmd(r),
			newLaunchCmd(r),
			newStatusCmd(r),
			newListCmd(r),
			newLogsCmd(r),
			newResultsCmd(r),
			newCancelCmd(r),
			newResumeCmd(r),
			newDestroyCmd(r),
			newVersionCmd(r),
		},
	}
	root.Exec = func(_ context.Context, args []string) error {
		if len(args) == 0 {
			fmt.Fprint(r.stderr, r.usage(root))
			return withExitCode(exitUsage, errSilent)
		}
		names := make([]string, len(root.Subcommands))
		for i, c := range root.Subcommands {
			names[i] = c.Name
		}
		return withHelp("spawn", fmt.Errorf("unknown command %q: use one of %s", args[0], strings.Join(names, ", ")))
	}
	// The flag package calls a command's usage when its flags fail to parse or ask for
	// help: r.usage notes which command that was.
	r.helpFor = root
	err := root.Parse(args)
	if err == nil {
		err = root.Run(ctx)
	} else if !errors.Is(err, flag.ErrHelp) {
		// ff prefixes the flag package's own line with one of its own.
		if u := errors.Unwrap(err); u != nil && strings.HasPrefix(err.Error(), "error parsing commandline arguments: ") {
			err = u
		}
		return withHelp(r.helpFor.FlagSet.Name(), err)
	}
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(r.stderr, r.usage(r.helpFor))
		return nil
	}
	return err
}

// usage is a command's help: what it does, its usage line, its own flags, examples,
// and the global flags named once. The root's help lists the commands and describes
// the global flags.
func (r *rootConfig) usage(c *ffcli.Command) string {
	r.helpFor = c
	global := globalFlagNames()
	isRoot := len(c.Subcommands) > 0
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n\nUSAGE\n  %s\n", c.ShortHelp, c.ShortUsage)
	if isRoot {
		b.WriteString("\nCOMMANDS\n")
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		for _, sc := range c.Subcommands {
			fmt.Fprintf(tw, "  %s\t%s\n", sc.Name, sc.ShortHelp)
		}
		_ = tw.Flush()
	}
	var own strings.Builder
	var globals []string
	tw := tabwriter.NewWriter(&own, 0, 0, 2, ' ', 0)
	c.FlagSet.VisitAll(func(f *flag.Flag) {
		if global[f.Name] && !isRoot {
			globals = append(globals, "--"+f.Name)
			return
		}
		typ, help := flag.UnquoteUsage(f)
		if _, ok := f.Value.(*durationFlag); ok {
			typ = "duration"
		}
		switch f.DefValue {
		case "", "0", "false", "0s":
		default:
			help += fmt.Sprintf(" (default %s)", f.DefValue)
		}
		fmt.Fprintf(tw, "  --%s %s\t%s\n", f.Name, typ, help)
	})
	_ = tw.Flush()
	switch {
	case isRoot:
		b.WriteString("\nGLOBAL FLAGS (before or after the command; each is also read from SPAWN_<FLAG>, e.g. SPAWN_REGION)\n" + own.String())
	case own.Len() > 0:
		b.WriteString("\nFLAGS\n" + own.String())
	}
	if c.LongHelp != "" {
		b.WriteString("\nEXAMPLES\n  " + strings.ReplaceAll(c.LongHelp, "\n", "\n  ") + "\n")
	}
	if isRoot {
		b.WriteString("\nrun 'spawn <command> --help' for a command's own flags and examples\n")
	} else {
		fmt.Fprintf(&b, "\nglobal flags, described by 'spawn --help': %s\n", strings.Join(globals, " "))
	}
	return b.String()
}

// globalFlagNames are the names registerGlobal binds.
func globalFlagNames() map[string]bool {
	fs := flag.NewFlagSet("", flag.ContinueOnError)
	new(rootConfig).registerGlobal(fs)
	names := map[string]bool{}
	fs.VisitAll(func(f *flag.Flag) { names[f.Name] = true })
	return names
}

// csvCommands are the commands whose --output may also be csv; markdownCommands, markdown.
var (
	csvCommands      = map[string]bool{"results": true}
	markdownCommands = map[string]bool{"status": true, "results": true}
)

// setup validates the global flags and builds the logger; it runs before every command
// (name).
func (r *rootConfig) setup(name string) error {
	switch {
	case r.output == "text" || r.output == "json":
	case r.output == "csv" && csvCommands[name]:
	case r.output == "markdown" && markdownCommands[name]:
	case r.output == "csv":
		return usageErrorf("--output csv is for 'spawn results' only: use text or json")
	case r.output == "markdown":
		return usageErrorf("--output markdown is for 'spawn status' and 'spawn results' only: use text or json")
	default:
		return usageErrorf("--output %q is not supported: use text or json (results: also csv; status and results: also markdown)", r.output)
	}
	lvl, err := zerolog.ParseLevel(strings.ToLower(r.logLevel))
	if err != nil || r.logLevel == "" {
		return usageErrorf("--log-level %q is not a level: use debug, info, warn or error", r.logLevel)
	}
	if _, err := awsTimeout(); err != nil {
		return withExitCode(exitUsage, err)
	}
	r.log = newLogger(r.stderr, lvl, false)
	return nil
}

func (r *rootConfig) jsonOutput() bool { return r.output == "json" }

// printJSON writes exactly one JSON document on stdout.
func (r *rootConfig) printJSON(v any) error {
	enc := json.NewEncoder(r.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// awsConfig loads the SDK configuration with --profile, --region and --endpoint-url.
func (r *rootConfig) awsConfig(ctx context.Context) (aws.Config, error) {
	return loadAWSConfig(ctx, r.profile, r.region, r.endpointURL, r.log)
}

func newVersionCmd(r *rootConfig) *ffcli.Command {
	fs := r.newFlagSet("version")
	return r.command("version", "spawn version", "print version, commit, Go version and os/arch",
		[]string{"spawn version --output json"}, fs,
		func(ctx context.Context, args []string) error {
			if err := noArgs(fs, args); err != nil {
				return err
			}
			v := versionInfo()
			if r.jsonOutput() {
				return r.printJSON(v)
			}
			fmt.Fprintf(r.stdout, "spawn %s (commit %s, %s, %s/%s)\n", v.Version, v.Commit, v.GoVersion, v.OS, v.Arch)
			return nil
		})
}

// openDeployment loads the AWS config and asks STS who the caller is. A missing or
// broken credential chain becomes one clear line.
func (r *rootConfig) openDeployment(ctx context.Context) (*deployment, error) {
	cfg, err := r.awsConfig(ctx)
	if err != nil {
		return nil, err
	}
	id, err := sts.NewFromConfig(cfg).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil {
		return nil, fmt.Errorf("no usable AWS credentials (%w): run 'aws configure', pass --profile, or set AWS_PROFILE", err)
	}
	d := &deployment{
		cfg:            cfg,
		accountID:      aws.ToString(id.Account),
		userID:         principalOf(aws.ToString(id.Arn)),
		region:         cfg.Region,
		table:          r.table,
		instancesTable: r.instancesTable,
		bucket:         r.bucket,
		function:       r.function,
	}
	if d.bucket == "" {
		d.bucket = defaultBucketName(d.accountID, d.region)
	}
	return d, nil
}

// cliEngine opens the deployment and wires the engine for a CLI command.
func (r *rootConfig) cliEngine(ctx context.Context) (*deployment, *engineDeps, error) {
	d, err := r.openDeployment(ctx)
	if err != nil {
		return nil, nil, err
	}
	// The table first: nothing is uploaded to a bucket of a deployment that is not there,
	// and the bucket is the one deploy recorded unless --bucket names another.
	dep, err := readDeployment(ctx, dynamodb.NewFromConfig(d.cfg), d.table)
	if err != nil {
		return nil, nil, explainStoreError(err, d, d.table, "")
	}
	if dep != nil && r.bucket == "" && dep.Bucket != "" {
		d.bucket = dep.Bucket
	}
	d.recorded = dep
	return d, newEngineDeps(d.cfg, d.accountID, d.userID, d.table, d.instancesTable, d.bucket, d.function, r.log), nil
}

// explainStoreError turns the store's errors into what the user can act on: a missing
// table or bucket means spawn is not deployed there (or under other names). An unknown
// sweep id is a runtime error (exit 1): the id is well formed, it just is not there.
// Any other error (access denied, throttling) is returned as it is.
func explainStoreError(err error, d *deployment, table, sweepID string) error {
	var rnf *ddbtypes.ResourceNotFoundException
	switch {
	case errors.As(err, &rnf):
		return explain(err, "no spawn deployment found in %s (table %s does not exist): run 'spawn deploy', or pass the --region or --table it used", d.region, table)
	case missingBucket(err):
		return explain(err, "no spawn deployment found in %s (bucket %s does not exist): run 'spawn deploy', or pass the --region or --bucket it used", d.region, d.bucket)
	case errors.Is(err, errSweepNotFound):
		return explain(err, "sweep %s not found in table %s (%s): check the id with 'spawn list'", sweepID, d.table, d.region)
	}
	return err
}

// missingBucket: S3 models NoSuchBucket for few calls; the others answer a generic API
// error with that code.
func missingBucket(err error) bool {
	var nsb *s3types.NoSuchBucket
	var apiErr smithy.APIError
	return errors.As(err, &nsb) || errors.As(err, &apiErr) && apiErr.ErrorCode() == "NoSuchBucket"
}

// sweepIDArg is the one way a command takes a sweep id: the positional argument or
// --sweep-id, before or after the other flags. The flag package stops at the first
// non-flag, so the flags that follow a positional id are parsed here, on the same set.
func sweepIDArg(fs *flag.FlagSet, flagID *string, args []string) (string, error) {
	var pos string
	if len(args) > 0 {
		pos = args[0]
		if err := fs.Parse(args[1:]); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return "", err
			}
			return "", withHelp(fs.Name(), err)
		}
		if fs.NArg() > 0 {
			return "", unexpectedArg(fs, fs.Arg(0), "one sweep id")
		}
	}
	var id string
	switch {
	case pos != "" && *flagID != "":
		return "", withHelp(fs.Name(), fmt.Errorf("the sweep id is given twice, as %s and --sweep-id %s: give it once", pos, *flagID))
	case pos != "":
		id = pos
	case *flagID != "":
		id = *flagID
	default:
		return "", withHelp(fs.Name(), errors.New("a sweep id is needed: give it as the argument or with --sweep-id, as 'spawn list' shows them"))
	}
	// The table also holds spawn's own items under keys with '#' (the running index, the
	// lease items): an id naming one of those is no sweep's.
	if strings.ContainsFunc(id, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.')
	}) {
		return "", withHelp(fs.Name(), fmt.Errorf("%q is not a sweep id: ids hold only letters, digits, '-', '_' and '.', as 'spawn list' shows them", id))
	}
	return id, nil
}

// unexpectedArg is the one wording for an argument a command does not take.
func unexpectedArg(fs *flag.FlagSet, arg, takes string) error {
	return withHelp(fs.Name(), fmt.Errorf("unexpected argument %q: %s takes %s", arg, fs.Name(), takes))
}

// noArgs refuses any argument of a command that takes only flags.
func noArgs(fs *flag.FlagSet, args []string) error {
	if len(args) > 0 {
		return unexpectedArg(fs, args[0], "no arguments")
	}
	return nil
}
