package main

import (
	"context"
	"errors"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// Sweep statuses (SPEC.md).
const (
	statusInitializing = "INITIALIZING"
	statusRunning      = "RUNNING"
	statusCompleted    = "COMPLETED"
	statusFailed       = "FAILED"
	statusCancelled    = "CANCELLED"
)

// Item outcomes (SPEC.md promise 5). An item without an outcome is pending or running.
const (
	outcomeSucceeded = "succeeded"
	outcomeFailed    = "failed"
	outcomeExpired   = "expired"
	outcomeCancelled = "cancelled"
	outcomeUnknown   = "unknown"
)

func terminalStatus(s string) bool {
	return s == statusCompleted || s == statusFailed || s == statusCancelled
}

var (
	errSweepExists   = errors.New("sweep already exists")
	errSweepNotFound = errors.New("sweep not found")
	// errStaleVersion: a conditional write lost to a newer one; reload and decide again.
	errStaleVersion = errors.New("sweep record changed since it was read")
	// errLeaseHeld: another orchestrator holds a live lease on the sweep.
	errLeaseHeld = errors.New("another orchestrator holds the sweep's lease")
)

// counts are the item counts kept in the record (SPEC.md `counts`).
type counts struct {
	Pending   int `dynamodbav:"pending" json:"pending"`
	Running   int `dynamodbav:"running" json:"running"`
	Succeeded int `dynamodbav:"succeeded" json:"succeeded"`
	Failed    int `dynamodbav:"failed" json:"failed"`
	Expired   int `dynamodbav:"expired" json:"expired"`
	Cancelled int `dynamodbav:"cancelled" json:"cancelled"`
	Unknown   int `dynamodbav:"unknown" json:"unknown"`
}

// aliveInstance is one slot of max_concurrent: an instance launched (or being launched)
// and not yet given an outcome. InstanceID is empty between reserving the slot and
// RunInstances answering; ClientToken makes the launch safe to repeat after a crash.
type aliveInstance struct {
	Index        int       `dynamodbav:"index" json:"index"`
	Attempt      int       `dynamodbav:"attempt" json:"attempt"`
	InstanceID   string    `dynamodbav:"instance_id,omitempty" json:"instance_id,omitempty"`
	Region       string    `dynamodbav:"region" json:"region"`
	InstanceType string    `dynamodbav:"instance_type" json:"instance_type"`
	ClientToken  string    `dynamodbav:"client_token" json:"client_token"`
	Spot         bool      `dynamodbav:"spot,omitempty" json:"spot,omitempty"`
	ReservedAt   time.Time `dynamodbav:"reserved_at" json:"reserved_at"`
	LaunchedAt   time.Time `dynamodbav:"launched_at,omitempty" json:"launched_at,omitempty"`
	// Deadline is launch time + TTL (zero: no TTL); past Deadline+grace the orchestrator terminates.
	Deadline    time.Time `dynamodbav:"deadline,omitempty" json:"deadline,omitempty"`
	PriceHourly float64   `dynamodbav:"price_hourly,omitempty" json:"price_hourly,omitempty"`
	// LaunchTries and NotBefore pace a launch that failed for capacity or throttling: it is
	// retried with the same ClientToken, not before NotBefore.
	LaunchTries int       `dynamodbav:"launch_tries,omitempty" json:"launch_tries,omitempty"`
	NotBefore   time.Time `dynamodbav:"not_before,omitempty" json:"not_before,omitempty"`
	// IdleAlarm is set once the idle-timeout alarm exists, so a failed PutMetricAlarm is retried.
	IdleAlarm bool `dynamodbav:"idle_alarm,omitempty" json:"idle_alarm,omitempty"`
}

// retryItem is an index queued to launch again, with the attempt it will launch as
// (each attempt has its own ClientToken).
type retryItem struct {
	Index   int `dynamodbav:"index" json:"index"`
	Attempt int `dynamodbav:"attempt" json:"attempt"`
}

// sweep is the record in the orchestration table. It grows with max_concurrent
// (Alive) and with RetryQueue, never with the number of items.
type sweep struct {
	SweepID        string `dynamodbav:"sweep_id" json:"sweep_id"`
	SweepName      string `dynamodbav:"sweep_name" json:"sweep_name"`
	UserID         string `dynamodbav:"user_id" json:"user_id"`
	CreatedAt      string `dynamodbav:"created_at" json:"created_at"` // RFC 3339 UTC, sorts as time
	UpdatedAt      string `dynamodbav:"updated_at" json:"updated_at"`
	CompletedAt    string `dynamodbav:"completed_at,omitempty" json:"completed_at,omitempty"`
	S3Bucket       string `dynamodbav:"s3_bucket" json:"s3_bucket"`
	S3ParamsKey    string `dynamodbav:"s3_params_key" json:"s3_params_key"`
	ParamsChecksum string `dynamodbav:"params_sha256" json:"params_sha256"`
	MaxConcurrent  int    `dynamodbav:"max_concurrent" json:"max_concurrent"`
	LaunchDelay    string `dynamodbav:"launch_delay" json:"launch_delay"`   // Go duration, "0s" default
	PollInterval   string `dynamodbav:"poll_interval" json:"poll_interval"` // Go duration, "10s" default
	TTL            string `dynamodbav:"ttl,omitempty" json:"ttl,omitempty"` // sweep-wide default TTL (--ttl)
	IdleTimeout    string `dynamodbav:"idle_timeout,omitempty" json:"idle_timeout,omitempty"`
	TotalParams    int    `dynamodbav:"total_params" json:"total_params"`
	Region         string `dynamodbav:"region" json:"region"`
	AWSAccountID   string `dynamodbav:"aws_account_id" json:"aws_account_id"`
	Status         string `dynamodbav:"status" json:"status"`
	NextToLaunch   int    `dynamodbav:"next_to_launch" json:"next_to_launch"`
	Launched       int    `dynamodbav:"launched" json:"launched"`
	Failed         int    `dynamodbav:"failed" json:"failed"`
	ErrorMessage   string `dynamodbav:"error_message,omitempty" json:"error_message,omitempty"`

	Version         int64           `dynamodbav:"version" json:"version"`
	CancelRequested bool            `dynamodbav:"cancel_requested" json:"cancel_requested"`
	LeaseOwner      string          `dynamodbav:"lease_owner,omitempty" json:"lease_owner,omitempty"`
	LeaseExpiresAt  time.Time       `dynamodbav:"lease_expires_at,omitempty" json:"lease_expires_at,omitempty"`
	LeaseRenewedAt  time.Time       `dynamodbav:"lease_renewed_at,omitempty" json:"lease_renewed_at,omitempty"`
	Counts          counts          `dynamodbav:"counts" json:"counts"`
	Alive           []aliveInstance `dynamodbav:"alive" json:"alive"`
	// RetryQueue holds indexes to launch again (spot interruption, resume --retry-failed)
	// before NextToLaunch moves on.
	RetryQueue []retryItem `dynamodbav:"retry_queue,omitempty" json:"retry_queue,omitempty"`
	// EstimatedCostUSD is Σ runtime × hourly price of every instance that has ended,
	// the running ones are added at read time.
	EstimatedCostUSD float64 `dynamodbav:"estimated_cost_usd" json:"estimated_cost_usd"`
}

// instanceRecord is one item of the instances table: one per index and attempt's
// latest state (HASH sweep_id, RANGE index).
type instanceRecord struct {
	SweepID      string    `dynamodbav:"sweep_id" json:"-"`
	Index        int       `dynamodbav:"index" json:"index"`
	InstanceID   string    `dynamodbav:"instance_id" json:"instance_id"`
	Region       string    `dynamodbav:"region" json:"region"`
	InstanceType string    `dynamodbav:"instance_type" json:"instance_type"`
	State        string    `dynamodbav:"state" json:"state"`     // EC2 state last seen
	Outcome      string    `dynamodbav:"outcome" json:"outcome"` // empty while running
	Attempt      int       `dynamodbav:"attempt" json:"attempt"`
	LaunchedAt   time.Time `dynamodbav:"launched_at" json:"launched_at"`
	TerminatedAt time.Time `dynamodbav:"terminated_at,omitempty" json:"terminated_at,omitempty"`
	ExitCode     *int      `dynamodbav:"exit_code,omitempty" json:"exit_code,omitempty"`
	ErrorMessage string    `dynamodbav:"error_message,omitempty" json:"error_message,omitempty"`
	PriceHourly  float64   `dynamodbav:"price_hourly,omitempty" json:"price_hourly,omitempty"`
	PriceSource  string    `dynamodbav:"price_source,omitempty" json:"price_source,omitempty"`
	CostUSD      float64   `dynamodbav:"cost_usd,omitempty" json:"cost_usd,omitempty"`
}

// sweepStore is the sweep record and the per-instance items. The DynamoDB implementation
// (dynamoStore) is the real one; the engine's unit tests use a fake with the same fencing.
type sweepStore interface {
	// createSweep writes a new record; errSweepExists if the id is taken.
	createSweep(ctx context.Context, s *sweep) error
	// loadSweep reads the record (strongly consistent); errSweepNotFound if absent.
	loadSweep(ctx context.Context, id string) (*sweep, error)
	// saveSweep writes s if the stored version still equals s.Version, then sets
	// s.Version to the new version; errStaleVersion otherwise (reload and decide again).
	saveSweep(ctx context.Context, s *sweep) error
	// requestCancel sets cancel_requested and bumps the version (so every in-flight fenced
	// write of an orchestrator fails and it reloads); it needs no version and always wins.
	requestCancel(ctx context.Context, id string) (*sweep, error)
	// putInstance writes the instance item of (sweep, index); a write never replaces a
	// later attempt's item with an earlier one.
	putInstance(ctx context.Context, rec *instanceRecord) error
	// listInstances returns every instance item of the sweep, by index.
	listInstances(ctx context.Context, sweepID string) ([]instanceRecord, error)
	// listSweeps pages through a user's sweeps newest first (the GSI, never a Scan);
	// status filters when not empty; startKey/nextKey are opaque page tokens.
	listSweeps(ctx context.Context, userID, status string, limit int, startKey string) (sweeps []sweep, nextKey string, err error)
}

// gsiUserCreated is the index that lists a user's sweeps newest first.
const gsiUserCreated = "user_id-created_at-index"

// sweepTableInput is the orchestration table of SPEC.md: HASH sweep_id, a GSI on
// (user_id, created_at), on-demand billing. deploy and the tests create it from here.
func sweepTableInput(name string) *dynamodb.CreateTableInput {
	return &dynamodb.CreateTableInput{
		TableName:   aws.String(name),
		BillingMode: types.BillingModePayPerRequest,
		AttributeDefinitions: []types.AttributeDefinition{
			{AttributeName: aws.String("sweep_id"), AttributeType: types.ScalarAttributeTypeS},
			{AttributeName: aws.String("user_id"), AttributeType: types.ScalarAttributeTypeS},
			{AttributeName: aws.String("created_at"), AttributeType: types.ScalarAttributeTypeS},
		},
		KeySchema: []types.KeySchemaElement{
			{AttributeName: aws.String("sweep_id"), KeyType: types.KeyTypeHash},
		},
		GlobalSecondaryIndexes: []types.GlobalSecondaryIndex{{
			IndexName: aws.String(gsiUserCreated),
			KeySchema: []types.KeySchemaElement{
				{AttributeName: aws.String("user_id"), KeyType: types.KeyTypeHash},
				{AttributeName: aws.String("created_at"), KeyType: types.KeyTypeRange},
			},
			Projection: &types.Projection{ProjectionType: types.ProjectionTypeAll},
		}},
	}
}

// instancesTableInput is the per-instance table: HASH sweep_id, RANGE index (N).
func instancesTableInput(name string) *dynamodb.CreateTableInput {
	return &dynamodb.CreateTableInput{
		TableName:   aws.String(name),
		BillingMode: types.BillingModePayPerRequest,
		AttributeDefinitions: []types.AttributeDefinition{
			{AttributeName: aws.String("sweep_id"), AttributeType: types.ScalarAttributeTypeS},
			{AttributeName: aws.String("index"), AttributeType: types.ScalarAttributeTypeN},
		},
		KeySchema: []types.KeySchemaElement{
			{AttributeName: aws.String("sweep_id"), KeyType: types.KeyTypeHash},
			{AttributeName: aws.String("index"), KeyType: types.KeyTypeRange},
		},
	}
}
