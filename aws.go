package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/logging"
	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"
)

// newLogger writes readable console lines on a terminal and JSON lines otherwise
// (always JSON in Lambda, where CloudWatch reads them).
func newLogger(w io.Writer, lvl zerolog.Level, lambda bool) zerolog.Logger {
	out := w
	if !lambda && isTerminal(w) {
		out = zerolog.ConsoleWriter{Out: w, TimeFormat: "15:04:05", NoColor: os.Getenv("NO_COLOR") != ""}
	}
	return zerolog.New(out).Level(lvl).With().Timestamp().Logger()
}

// sdkLogger routes the AWS SDK's own log lines into zerolog at debug level, so a user
// never sees raw SDK output (emulators make the SDK warn about missing checksums).
type sdkLogger struct{ log zerolog.Logger }

func (l sdkLogger) Logf(_ logging.Classification, format string, v ...any) {
	l.log.Debug().Str("component", "aws-sdk").Msgf(format, v...)
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
		return 0, fmt.Errorf("SPAWN_AWS_TIMEOUT %q is not a positive duration: use e.g. 30s", v)
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
		return aws.Config{}, fmt.Errorf("loading AWS configuration (%w): check --profile and ~/.aws/config", err)
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

// newS3Client is an S3 client for spawn's bucket. With owner set, every request names
// the account the bucket must belong to (x-amz-expected-bucket-owner): a bucket of the
// same name in any other account — a wrong --region, a name someone else took — answers
// 403 instead of receiving params, logs or results. Bucket names are global and S3 ARNs
// carry no account, so IAM alone cannot prevent that.
func newS3Client(cfg aws.Config, owner string) *s3.Client {
	path := endpointOverridden(cfg)
	return s3.NewFromConfig(cfg, func(o *s3.Options) {
		o.UsePathStyle = path
		if owner != "" {
			o.APIOptions = append(o.APIOptions, expectBucketOwner(owner))
		}
	})
}

// expectBucketOwner sets the expected bucket owner on every request that takes one
// (all but CreateBucket), unless the call set it itself.
func expectBucketOwner(owner string) func(*middleware.Stack) error {
	return func(stack *middleware.Stack) error {
		return stack.Build.Add(middleware.BuildMiddlewareFunc("spawnExpectedBucketOwner",
			func(ctx context.Context, in middleware.BuildInput, next middleware.BuildHandler) (middleware.BuildOutput, middleware.Metadata, error) {
				req, ok := in.Request.(*smithyhttp.Request)
				if ok && middleware.GetOperationName(ctx) != "CreateBucket" && req.Header.Get(expectedOwnerHeader) == "" {
					req.Header.Set(expectedOwnerHeader, owner)
				}
				return next.HandleBuild(ctx, in)
			}), middleware.After)
	}
}

const expectedOwnerHeader = "X-Amz-Expected-Bucket-Owner"

// isTerminal reports whether the stream (stdin, stdout or stderr) is a terminal:
// colour, redraws and questions only there.
func isTerminal(w any) bool {
	f, ok := w.(*os.File)
	return ok && (isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd()))
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
	// recorded is the deployment item deploy wrote in the sweep table (cliEngine reads
	// it); nil when there is none.
	recorded *deploymentItem
}

// principalOf is the identity a sweep belongs to: for an assumed-role session its role
// (every session of one role — each CI job's, each SSO login — is the same owner), else
// the caller's ARN itself.
func principalOf(arn string) string {
	// arn:aws:sts::123456789012:assumed-role/RoleName/session-name
	parts := strings.SplitN(arn, ":", 6)
	if len(parts) != 6 || parts[2] != "sts" || !strings.HasPrefix(parts[5], "assumed-role/") {
		return arn
	}
	role, _, _ := strings.Cut(strings.TrimPrefix(parts[5], "assumed-role/"), "/")
	return "arn:" + parts[1] + ":iam::" + parts[4] + ":role/" + role
}

// apiErrorCode is the service's error code ("NoSuchEntity"), or "" for a non-API error.
func apiErrorCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}
