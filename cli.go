package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go/logging"
	"github.com/mattn/go-isatty"
	"github.com/peterbourgon/ff/v3"
	"github.com/peterbourgon/ff/v3/ffcli"
	"github.com/rs/zerolog"
)

// Exit codes of SPEC.md.
const (
	exitOK      = 0
	exitRuntime = 1
	exitUsage   = 2
	exitSweep   = 3 // --wait: the sweep ended FAILED or CANCELLED, or with failed items
)

// errSilent marks an error whose message was already shown to the user.
var errSilent = errors.New("")

// exitError carries an exit code with the error that caused it.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// usageErrorf is an input or usage error: exit code 2.
func usageErrorf(format string, args ...any) error {
	return &exitError{code: exitUsage, err: fmt.Errorf(format, args...)}
}

// withExitCode wraps err so that main exits with code.
func withExitCode(code int, err error) error {
	if err == nil {
		return nil
	}
	return &exitError{code: code, err: err}
}

func exitCode(err error) int {
	if err == nil {
		return exitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	if errors.Is(err, flag.ErrHelp) {
		return exitUsage
	}
	return exitRuntime
}

// rootConfig holds the global flags of SPEC.md; every command shares it.
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
}

const (
	defaultTable          = "spawn-sweep-orchestration"
	defaultInstancesTable = "spawn-sweep-instances"
	defaultFunction       = "spawn-sweep-orchestrator"
)

// registerGlobal binds the global flags on fs. Every command's flag set gets them,
// so they are accepted before or after the command name, as the AWS CLI does.
func (r *rootConfig) registerGlobal(fs *flag.FlagSet) {
	fs.StringVar(&r.region, "region", r.region, "AWS region (default: the profile's or AWS_REGION)")
	fs.StringVar(&r.profile, "profile", r.profile, "AWS shared-config profile")
	fs.StringVar(&r.endpointURL, "endpoint-url", r.endpointURL, "endpoint URL for every AWS service (an emulator)")
	fs.StringVar(&r.output, "output", r.output, "output format: text or json")
	fs.StringVar(&r.logLevel, "log-level", r.logLevel, "log level: debug, info, warn, error")
	fs.StringVar(&r.table, "table", r.table, "DynamoDB table of sweep records")
	fs.StringVar(&r.instancesTable, "instances-table", r.instancesTable, "DynamoDB table of per-instance items")
	fs.StringVar(&r.bucket, "bucket", r.bucket, "S3 bucket for params and logs (default spawn-sweeps-<account>-<region>)")
	fs.StringVar(&r.function, "function", r.function, "orchestrator Lambda function name")
}

// newFlagSet returns a command's flag set with the global flags on it.
func (r *rootConfig) newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet("spawn "+name, flag.ContinueOnError)
	fs.SetOutput(r.stderr)
	r.registerGlobal(fs)
	return fs
}

// command builds a subcommand with the global flags and the shared pre-run checks.
func (r *rootConfig) command(name, shortUsage, shortHelp string, fs *flag.FlagSet, exec func(ctx context.Context, args []string) error) *ffcli.Command {
	return &ffcli.Command{
		Name:       name,
		ShortUsage: shortUsage,
		ShortHelp:  shortHelp,
		FlagSet:    fs,
		Exec: func(ctx context.Context, args []string) error {
			if err := r.setup(); err != nil {
				return err
			}
			return exec(ctx, args)
		},
	}
}

func runCLI(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	r := &rootConfig{
		output:         "text",
		logLevel:       "info",
		table:          defaultTable,
		instancesTable: defaultInstancesTable,
		function:       defaultFunction,
		stdin:          stdin,
		stdout:         stdout,
		stderr:         stderr,
	}
	rootFS := flag.NewFlagSet("spawn", flag.ContinueOnError)
	rootFS.SetOutput(stderr)
	r.registerGlobal(rootFS)

	root := &ffcli.Command{
		ShortUsage: "spawn [global flags] <command> [flags]",
		ShortHelp:  "parameter sweeps on EC2 that keep going when the laptop closes",
		FlagSet:    rootFS,
		// Only the root reads SPAWN_* env, so a flag on the command line always wins over env.
		Options: []ff.Option{ff.WithEnvVarPrefix("SPAWN")},
		Subcommands: []*ffcli.Command{
			// In the order a user meets them.
			newDeployCmd(r),
			newLaunchCmd(r),
			newStatusCmd(r),
			newListCmd(r),
			newLogsCmd(r),
			newCancelCmd(r),
			newResumeCmd(r),
			newDestroyCmd(r),
			newVersionCmd(r),
		},
		Exec: func(context.Context, []string) error { return flag.ErrHelp },
	}
	if err := root.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return usageErrorf("%v (run 'spawn --help' for usage)", err)
	}
	err := root.Run(ctx)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(stderr, ffcli.DefaultUsageFunc(root))
		return withExitCode(exitUsage, errSilent)
	}
	return err
}

// setup validates the global flags and builds the logger; it runs before every command.
func (r *rootConfig) setup() error {
	switch r.output {
	case "text", "json":
	default:
		return usageErrorf("--output %q is not supported: use text or json", r.output)
	}
	lvl, err := zerolog.ParseLevel(strings.ToLower(r.logLevel))
	if err != nil || r.logLevel == "" {
		return usageErrorf("--log-level %q is not a level: use debug, info, warn or error", r.logLevel)
	}
	r.log = newLogger(r.stderr, lvl, false)
	return nil
}

// newLogger writes readable console lines on a terminal and JSON lines otherwise
// (always JSON in Lambda, where CloudWatch reads them).
func newLogger(w io.Writer, lvl zerolog.Level, lambda bool) zerolog.Logger {
	out := w
	if f, ok := w.(*os.File); ok && !lambda && isatty.IsTerminal(f.Fd()) {
		out = zerolog.ConsoleWriter{Out: w, TimeFormat: "15:04:05", NoColor: os.Getenv("NO_COLOR") != ""}
	}
	return zerolog.New(out).Level(lvl).With().Timestamp().Logger()
}

func (r *rootConfig) jsonOutput() bool { return r.output == "json" }

// printJSON writes exactly one JSON document on stdout.
func (r *rootConfig) printJSON(v any) error {
	enc := json.NewEncoder(r.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// sdkLogger routes the AWS SDK's own log lines into zerolog at debug level, so a user
// never sees raw SDK output (emulators make the SDK warn about missing checksums).
type sdkLogger struct{ log zerolog.Logger }

func (l sdkLogger) Logf(_ logging.Classification, format string, v ...any) {
	l.log.Debug().Str("component", "aws-sdk").Msgf(format, v...)
}

// awsConfig loads the SDK configuration with --profile, --region and --endpoint-url.
func (r *rootConfig) awsConfig(ctx context.Context) (aws.Config, error) {
	return loadAWSConfig(ctx, r.profile, r.region, r.endpointURL, r.log)
}

// defaultAWSTimeout bounds one HTTP attempt of any AWS call: an answer that never comes
// must not hold a step (and the lease) until Lambda's own timeout. SPAWN_AWS_TIMEOUT
// overrides it (a Go duration).
const defaultAWSTimeout = 30 * time.Second

func awsTimeout() (time.Duration, error) {
	v := os.Getenv("SPAWN_AWS_TIMEOUT")
	if v == "" {
		return defaultAWSTimeout, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, usageErrorf("SPAWN_AWS_TIMEOUT %q is not a positive duration: use e.g. 30s", v)
	}
	return d, nil
}

func loadAWSConfig(ctx context.Context, profile, region, endpoint string, log zerolog.Logger) (aws.Config, error) {
	timeout, err := awsTimeout()
	if err != nil {
		return aws.Config{}, err
	}
	opts := []func(*config.LoadOptions) error{
		config.WithLogger(sdkLogger{log}),
		config.WithHTTPClient(awshttp.NewBuildableClient().WithTimeout(timeout)),
	}
	if profile != "" {
		opts = append(opts, config.WithSharedConfigProfile(profile))
	}
	if region != "" {
		opts = append(opts, config.WithRegion(region))
	}
	if endpoint != "" {
		opts = append(opts, config.WithBaseEndpoint(endpoint))
	}
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return aws.Config{}, fmt.Errorf("loading AWS configuration: %w (check --profile and ~/.aws/config)", err)
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	return cfg, nil
}

// endpointOverridden reports whether S3 (or every service) goes to a custom endpoint,
// in which case S3 must use path-style addressing.
func endpointOverridden(cfg aws.Config) bool {
	return cfg.BaseEndpoint != nil || os.Getenv("AWS_ENDPOINT_URL") != "" || os.Getenv("AWS_ENDPOINT_URL_S3") != ""
}

func newS3Client(cfg aws.Config) *s3.Client {
	path := endpointOverridden(cfg)
	return s3.NewFromConfig(cfg, func(o *s3.Options) { o.UsePathStyle = path })
}

func newVersionCmd(r *rootConfig) *ffcli.Command {
	fs := r.newFlagSet("version")
	return r.command("version", "spawn version", "print version, commit, Go version and os/arch", fs,
		func(ctx context.Context, args []string) error {
			v := versionInfo()
			if r.jsonOutput() {
				return r.printJSON(v)
			}
			fmt.Fprintf(r.stdout, "spawn %s (commit %s, %s, %s/%s)\n", v.Version, v.Commit, v.GoVersion, v.OS, v.Arch)
			return nil
		})
}

type versionDoc struct {
	Version   string `json:"version"`
	Commit    string `json:"commit"`
	GoVersion string `json:"go_version"`
	OS        string `json:"os"`
	Arch      string `json:"arch"`
}

func versionInfo() versionDoc {
	c := commit
	if c == "none" {
		if bi, ok := debug.ReadBuildInfo(); ok {
			for _, s := range bi.Settings {
				if s.Key == "vcs.revision" {
					c = s.Value
				}
			}
		}
	}
	return versionDoc{Version: version, Commit: c, GoVersion: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH}
}

// deployment is what a command that talks to spawn's resources needs: the AWS config,
// the caller's account and identity, and the resource names (flags, env, or defaults).
type deployment struct {
	cfg            aws.Config
	accountID      string
	userID         string // the caller's ARN: sweeps are listed per user
	region         string
	table          string
	instancesTable string
	bucket         string
	function       string
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
		return nil, fmt.Errorf("no usable AWS credentials: %w (run 'aws configure', pass --profile, or set AWS_PROFILE)", err)
	}
	d := &deployment{
		cfg:            cfg,
		accountID:      aws.ToString(id.Account),
		userID:         aws.ToString(id.Arn),
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

// defaultBucketName is SPEC.md's spawn-sweeps-<account-id>-<region>.
func defaultBucketName(accountID, region string) string {
	return "spawn-sweeps-" + accountID + "-" + region
}
