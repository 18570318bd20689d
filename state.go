package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
)

// Sweep statuses.
const (
	statusInitializing = "INITIALIZING"
	statusRunning      = "RUNNING"
	statusCompleted    = "COMPLETED"
	statusFailed       = "FAILED"
	statusCancelled    = "CANCELLED"
)

// Item outcomes (docs/design.md promise 5). An item without an outcome is pending or running.
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

// counts are the item counts kept in the record (the `counts` of status and list JSON).
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
	LaunchedAt   time.Time `dynamodbav:"launched_at,omitempty" json:"launched_at,omitzero"`
	// Deadline is launch time + TTL (zero: no TTL); past Deadline+grace the orchestrator terminates.
	Deadline time.Time `dynamodbav:"deadline,omitempty" json:"deadline,omitzero"`
	// DeadlineClock names the clock Deadline is on (sinceMark.Clock); an engine on
	// another clock moves it to its own, later, never earlier.
	DeadlineClock string  `dynamodbav:"deadline_clock,omitempty" json:"deadline_clock,omitempty"`
	PriceHourly   float64 `dynamodbav:"price_hourly,omitempty" json:"price_hourly,omitempty"`
	PriceSource   string  `dynamodbav:"price_source,omitempty" json:"price_source,omitempty"`
	// LaunchTries and NotBefore pace a launch that failed for capacity or throttling: it is
	// retried with the same ClientToken, not before NotBefore.
	LaunchTries int       `dynamodbav:"launch_tries,omitempty" json:"launch_tries,omitempty"`
	NotBefore   time.Time `dynamodbav:"not_before,omitempty" json:"not_before,omitzero"`
	// WaitReason says why the launch waits, for status: "vCPU quota (VcpuLimitExceeded)".
	WaitReason string `dynamodbav:"wait_reason,omitempty" json:"wait_reason,omitempty"`
	// IdleAlarm is set once the idle-timeout alarm exists, so a failed PutMetricAlarm is retried.
	IdleAlarm bool `dynamodbav:"idle_alarm,omitempty" json:"idle_alarm,omitempty"`
	// Seen is set once DescribeInstances has shown the instance: from then on, an instance
	// EC2 no longer shows has ended (EC2 forgets terminated instances), while one never
	// seen may just not be visible yet.
	Seen bool `dynamodbav:"seen,omitempty" json:"seen,omitempty"`
	// Unseen marks when an engine first missed a launched instance EC2 has never shown;
	// Ended when it first saw the instance ended with no report (or no readable result)
	// yet (its slot is free from then on). Each is measured only on the clock that set it.
	Unseen *sinceMark `dynamodbav:"unseen,omitempty" json:"unseen,omitempty"`
	Ended  *sinceMark `dynamodbav:"ended,omitempty" json:"ended,omitempty"`
	// Unsettled marks when a token that may have launched was first missed after its
	// launch was refused (or by a cancel): the refusal is final, or the next candidate
	// tried, once EC2 has not shown an instance for its consistency window since.
	// Propagating marks a reservation's first refusal that may be IAM propagation
	// (launch_errors.go). Each wait has its own mark, so one never ends another early.
	Unsettled   *sinceMark `dynamodbav:"unsettled,omitempty" json:"unsettled,omitempty"`
	Propagating *sinceMark `dynamodbav:"propagating,omitempty" json:"propagating,omitempty"`
	// Capacity fallback (fallback.go): Candidate is which of the item's candidates the
	// entry launches now (ClientToken, Region, InstanceType and Spot are its); Tried is
	// how many candidates from the first it has launched, so every token it may have
	// used is known (each derives from sweep, index, attempt and candidate); Refused: the
	// current candidate was refused for capacity or quota (WaitReason says which), and
	// its token is being settled as not launched before the next candidate is tried.
	Candidate int  `dynamodbav:"candidate,omitempty" json:"candidate,omitempty"`
	Tried     int  `dynamodbav:"tried,omitempty" json:"tried,omitempty"`
	Refused   bool `dynamodbav:"refused,omitempty" json:"refused,omitempty"`
}

// sinceMark is when an engine first saw a condition, and on which clock: Lambda's
// (every invocation's clock is synchronised by AWS) or one host's. A mark set on another
// clock is set again, so no wait compares two machines' clocks.
type sinceMark struct {
	At    time.Time `dynamodbav:"at" json:"at"`
	Clock string    `dynamodbav:"clock" json:"clock"`
}

// slotsUsed counts the entries that hold a slot: all but those whose instance ended
// and whose report is awaited.
func slotsUsed(sw *sweep) int {
	n := 0
	for _, e := range sw.Alive {
		if e.Ended == nil {
			n++
		}
	}
	return n
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

	// Detached: the sweep is driven by the function (the watchdog continues it when its
	// chain dies), not by a --no-detach process (which `spawn resume` continues).
	Detached bool `dynamodbav:"detached" json:"detached"`
	// LastStepAt is when an orchestrator last made a step (its clock: a display). It
	// lives in the lease item (lease.go), as do the lease's times.
	LastStepAt time.Time `dynamodbav:"-" json:"last_step_at,omitzero"`

	// CancelUnreached names the regions the last cancel attempt could not reach (region →
	// what they answered), so a `spawn cancel` beside the holder can say so.
	CancelUnreached map[string]string `dynamodbav:"cancel_unreached,omitempty" json:"cancel_unreached,omitempty"`
	// CancelUnresolved counts the launches that attempt could not find or rule out yet.
	CancelUnresolved int `dynamodbav:"cancel_unresolved,omitempty" json:"cancel_unresolved,omitempty"`

	Version         int64           `dynamodbav:"version" json:"version"`
	CancelRequested bool            `dynamodbav:"cancel_requested" json:"cancel_requested"`
	LeaseOwner      string          `dynamodbav:"lease_owner,omitempty" json:"lease_owner,omitempty"`
	LeaseEpoch      int64           `dynamodbav:"lease_epoch,omitempty" json:"lease_epoch,omitempty"`
	LeaseExpiresAt  time.Time       `dynamodbav:"-" json:"lease_expires_at,omitzero"`
	LeaseRenewedAt  time.Time       `dynamodbav:"-" json:"lease_renewed_at,omitzero"`
	Counts          counts          `dynamodbav:"counts" json:"counts"`
	Alive           []aliveInstance `dynamodbav:"alive" json:"alive"`
	// RetryQueue holds indexes to launch again (spot interruption, resume --retry-failed)
	// before NextToLaunch moves on.
	RetryQueue []retryItem `dynamodbav:"retry_queue,omitempty" json:"retry_queue,omitempty"`
	// EstimatedCostUSD is Σ runtime × hourly price of every instance that has ended,
	// the running ones are added at read time.
	EstimatedCostUSD float64 `dynamodbav:"estimated_cost_usd" json:"estimated_cost_usd"`
	// AMIs are the default AMIs the orchestrator resolved ("region/instance-type" → id),
	// kept so that every item and every retried launch (same ClientToken, same
	// parameters) uses the same image even if a newer one is published mid-sweep.
	AMIs map[string]string `dynamodbav:"amis,omitempty" json:"amis,omitempty"`
}

// instanceRecord is one item of the instances table: one per index and attempt's
// latest state (HASH sweep_id, RANGE index).
type instanceRecord struct {
	SweepID      string    `dynamodbav:"sweep_id" json:"-"`
	Index        int       `dynamodbav:"index" json:"index"`
	InstanceID   string    `dynamodbav:"instance_id" json:"instance_id"`
	Region       string    `dynamodbav:"region" json:"region"`
	InstanceType string    `dynamodbav:"instance_type" json:"instance_type"`
	Spot         bool      `dynamodbav:"spot,omitempty" json:"spot,omitempty"` // the market it ran in
	State        string    `dynamodbav:"state" json:"state"`                   // EC2 state last seen
	Outcome      string    `dynamodbav:"outcome" json:"outcome"`               // empty while running
	Attempt      int       `dynamodbav:"attempt" json:"attempt"`
	LaunchedAt   time.Time `dynamodbav:"launched_at" json:"launched_at"`
	TerminatedAt time.Time `dynamodbav:"terminated_at,omitempty" json:"terminated_at,omitzero"`
	ExitCode     *int      `dynamodbav:"exit_code,omitempty" json:"exit_code,omitempty"`
	ErrorMessage string    `dynamodbav:"error_message,omitempty" json:"error_message,omitempty"`
	PriceHourly  float64   `dynamodbav:"price_hourly,omitempty" json:"price_hourly,omitempty"`
	PriceSource  string    `dynamodbav:"price_source,omitempty" json:"price_source,omitempty"`
	CostUSD      float64   `dynamodbav:"cost_usd,omitempty" json:"cost_usd,omitempty"`
	// Metrics are the numbers the instance's result object held, read when the item got
	// its outcome; ResultError says why a result (or part of it) could not be used.
	Metrics     map[string]float64 `dynamodbav:"metrics,omitempty" json:"metrics,omitempty"`
	ResultError string             `dynamodbav:"result_error,omitempty" json:"result_error,omitempty"`
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
	// beatLease writes the sweep's lease item (lease.go) unless it holds a later epoch:
	// errLeaseLost then (another orchestrator took the lease).
	beatLease(ctx context.Context, b leaseBeat) error
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

// The default names of spawn's tables (docs/design.md, Resources); --table and
// --instances-table, or SPAWN_TABLE and SPAWN_INSTANCES_TABLE in the function, override them.
const (
	defaultTable          = "spawn-sweep-orchestration"
	defaultInstancesTable = "spawn-sweep-instances"
)

// sweepTableInput is the orchestration table (docs/design.md, Resources): HASH sweep_id, a GSI on
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

// recordTimeLayout is RFC 3339 with a fixed-width fraction: created_at is the GSI's
// range key, and RFC3339Nano's trimmed fractions would not sort as time.
const recordTimeLayout = "2006-01-02T15:04:05.000Z07:00"

// formatRecordTime formats t for the record's string time fields (created_at, updated_at,
// completed_at).
func formatRecordTime(t time.Time) string { return t.UTC().Format(recordTimeLayout) }

// dynamoAPI is the part of the DynamoDB client the store uses.
type dynamoAPI interface {
	GetItem(ctx context.Context, in *dynamodb.GetItemInput, optFns ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error)
	PutItem(ctx context.Context, in *dynamodb.PutItemInput, optFns ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error)
	UpdateItem(ctx context.Context, in *dynamodb.UpdateItemInput, optFns ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error)
	Query(ctx context.Context, in *dynamodb.QueryInput, optFns ...func(*dynamodb.Options)) (*dynamodb.QueryOutput, error)
}

// deploymentItemID keys the deployment item in the sweep table: what deploy made there,
// so a launch uploads to the bucket deploy created, never to one whose name it derived
// (that name may be another account's bucket). Like the running index, its key is no
// sweep id's and it has no user_id, so `list` never sees it.
const deploymentItemID = "#deployment"

type deploymentItem struct {
	SweepID  string `dynamodbav:"sweep_id"`
	Bucket   string `dynamodbav:"bucket"`
	Function string `dynamodbav:"function"`
	Account  string `dynamodbav:"account"`
	Region   string `dynamodbav:"region"`
	// ComputeAccounts are the accounts whose SpawnSweepCrossAccountRole the orchestrator
	// may assume (deploy --compute-profile): a launch with --compute-profile runs only in
	// one of them, or in Account itself.
	ComputeAccounts []string `dynamodbav:"compute_accounts,omitempty"`
	// AllowedInstanceTypes and AllowedRegions are deploy's allow-lists (allowlist.go):
	// launch refuses an item outside them; absent, any.
	AllowedInstanceTypes []string `dynamodbav:"allowed_instance_types,omitempty"`
	AllowedRegions       []string `dynamodbav:"allowed_regions,omitempty"`
}

// allowLists are the recorded allow-lists; none without a deployment item.
func (it *deploymentItem) allowLists() allowLists {
	if it == nil {
		return allowLists{}
	}
	return allowLists{InstanceTypes: it.AllowedInstanceTypes, Regions: it.AllowedRegions}
}

// readDeployment reads the deployment item of table; nil when deploy wrote none (a
// deployment older than the item). A missing table is the caller's to explain.
func readDeployment(ctx context.Context, db dynamoAPI, table string) (*deploymentItem, error) {
	out, err := db.GetItem(ctx, &dynamodb.GetItemInput{
		TableName: aws.String(table),
		Key:       map[string]types.AttributeValue{"sweep_id": &types.AttributeValueMemberS{Value: deploymentItemID}},
	})
	if err != nil || len(out.Item) == 0 {
		return nil, err
	}
	var it deploymentItem
	if err := attributevalue.UnmarshalMap(out.Item, &it); err != nil {
		return nil, fmt.Errorf("decoding the deployment item of table %s: %w", table, err)
	}
	return &it, nil
}

// dynamoStore is the sweepStore on DynamoDB: the record in table, one item per instance
// in instancesTable. Every record write is conditional on the version it read.
type dynamoStore struct {
	db             dynamoAPI
	table          string
	instancesTable string
	now            func() time.Time
	// pageLimit caps the items per Query page (0: DynamoDB's 1 MB pages); tests set it
	// to prove that every page is read.
	pageLimit int32
}

func newDynamoStore(db dynamoAPI, table, instancesTable string) *dynamoStore {
	return &dynamoStore{db: db, table: table, instancesTable: instancesTable, now: time.Now}
}

var _ sweepStore = (*dynamoStore)(nil)

// marshalItem omits zero times, so an unset lease or launch time is absent from the
// item rather than stored as year 1.
func marshalItem(v any) (map[string]types.AttributeValue, error) {
	return attributevalue.MarshalMapWithOptions(v, func(o *attributevalue.EncoderOptions) { o.OmitEmptyTime = true })
}

func isConditionFailed(err error) bool {
	var ccf *types.ConditionalCheckFailedException
	return errors.As(err, &ccf)
}

func (d *dynamoStore) createSweep(ctx context.Context, s *sweep) error {
	// DynamoDB refuses an empty string as an index key (user_id keys the list index), and
	// a record without its owner could never be listed or checked for ownership.
	if s.UserID == "" {
		return fmt.Errorf("sweep %s has no user_id (the identity that launched it): refusing to create a record no one owns", s.SweepID)
	}
	now := formatRecordTime(d.now())
	rec := *s
	rec.Version = 1
	if rec.CreatedAt == "" {
		rec.CreatedAt = now
	}
	rec.UpdatedAt = now
	item, err := marshalItem(&rec)
	if err != nil {
		return fmt.Errorf("encoding sweep %s: %w", s.SweepID, err)
	}
	if err := checkItemSize("sweep "+s.SweepID, item); err != nil {
		return err
	}
	// Indexed first: a crash in between leaves an id the watchdog drops, never a sweep it
	// does not know.
	if err := d.markRunning(ctx, s.SweepID); err != nil {
		return err
	}
	_, err = d.db.PutItem(ctx, &dynamodb.PutItemInput{
		TableName:                aws.String(d.table),
		Item:                     item,
		ConditionExpression:      aws.String("attribute_not_exists(#id)"),
		ExpressionAttributeNames: map[string]string{"#id": "sweep_id"},
	})
	if isConditionFailed(err) && !d.createLanded(ctx, &rec) {
		return fmt.Errorf("%w: %s: choose another sweep id", errSweepExists, s.SweepID)
	}
	if err != nil && !isConditionFailed(err) {
		return fmt.Errorf("creating sweep %s in table %s: %w", s.SweepID, d.table, err)
	}
	if rec.LeaseOwner != "" {
		if err := d.beatLease(ctx, beatOf(&rec)); err != nil {
			return err
		}
	}
	*s = rec
	return nil
}

// createLanded tells a create whose earlier attempt landed (its answer was lost and the
// SDK's retry met the condition) from an id taken by another sweep: the stored record
// is this one, untouched since.
func (d *dynamoStore) createLanded(ctx context.Context, rec *sweep) bool {
	cur, err := d.loadSweep(ctx, rec.SweepID)
	return err == nil && cur.Version == 1 && cur.CreatedAt == rec.CreatedAt && cur.UpdatedAt == rec.UpdatedAt &&
		cur.UserID == rec.UserID && cur.ParamsChecksum == rec.ParamsChecksum
}

func (d *dynamoStore) loadSweep(ctx context.Context, id string) (*sweep, error) {
	// The lease item is read beside the record, not after it: one round trip's time.
	type beatRead struct {
		b   *leaseBeat
		err error
	}
	beat := make(chan beatRead, 1)
	go func() {
		b, err := d.loadBeat(ctx, id)
		beat <- beatRead{b, err}
	}()
	out, err := d.db.GetItem(ctx, &dynamodb.GetItemInput{
		TableName:      aws.String(d.table),
		Key:            map[string]types.AttributeValue{"sweep_id": &types.AttributeValueMemberS{Value: id}},
		ConsistentRead: aws.Bool(true),
	})
	if err != nil {
		return nil, fmt.Errorf("reading sweep %s from table %s: %w", id, d.table, err)
	}
	if len(out.Item) == 0 {
		return nil, fmt.Errorf("%w: %s", errSweepNotFound, id)
	}
	var s sweep
	if err := attributevalue.UnmarshalMap(out.Item, &s); err != nil {
		return nil, fmt.Errorf("decoding sweep %s: %w", id, err)
	}
	br := <-beat
	if br.err != nil {
		return nil, br.err
	}
	applyBeat(&s, br.b)
	return &s, nil
}

func (d *dynamoStore) saveSweep(ctx context.Context, s *sweep) error {
	rec := *s
	rec.Version = s.Version + 1
	rec.UpdatedAt = formatRecordTime(d.now())
	item, err := marshalItem(&rec)
	if err != nil {
		return fmt.Errorf("encoding sweep %s: %w", s.SweepID, err)
	}
	if err := checkItemSize("saving sweep "+s.SweepID, item); err != nil {
		return err
	}
	// A missing record fails the same condition; the caller's reload then says not found.
	_, err = d.db.PutItem(ctx, &dynamodb.PutItemInput{
		TableName:                 aws.String(d.table),
		Item:                      item,
		ConditionExpression:       aws.String("#v = :v"),
		ExpressionAttributeNames:  map[string]string{"#v": "version"},
		ExpressionAttributeValues: map[string]types.AttributeValue{":v": numberAV(s.Version)},
	})
	if isConditionFailed(err) {
		return fmt.Errorf("saving sweep %s at version %d: %w", s.SweepID, s.Version, errStaleVersion)
	}
	if err != nil {
		return fmt.Errorf("saving sweep %s to table %s: %w", s.SweepID, d.table, err)
	}
	s.Version = rec.Version
	s.UpdatedAt = rec.UpdatedAt
	if terminalStatus(rec.Status) {
		// Best effort: an id left behind is dropped by the next watchdog.
		_ = d.unmarkRunning(ctx, s.SweepID)
	}
	return nil
}

func (d *dynamoStore) requestCancel(ctx context.Context, id string) (*sweep, error) {
	out, err := d.db.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:           aws.String(d.table),
		Key:                 map[string]types.AttributeValue{"sweep_id": &types.AttributeValueMemberS{Value: id}},
		UpdateExpression:    aws.String("SET #c = :t, #v = #v + :one, #u = :now"),
		ConditionExpression: aws.String("attribute_exists(#id)"),
		ExpressionAttributeNames: map[string]string{
			"#c": "cancel_requested", "#v": "version", "#u": "updated_at", "#id": "sweep_id",
		},
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":t":   &types.AttributeValueMemberBOOL{Value: true},
			":one": numberAV(1),
			":now": &types.AttributeValueMemberS{Value: formatRecordTime(d.now())},
		},
		ReturnValues: types.ReturnValueAllNew,
	})
	if isConditionFailed(err) {
		return nil, fmt.Errorf("%w: %s", errSweepNotFound, id)
	}
	if err != nil {
		return nil, fmt.Errorf("requesting cancel of sweep %s in table %s: %w", id, d.table, err)
	}
	var s sweep
	if err := attributevalue.UnmarshalMap(out.Attributes, &s); err != nil {
		return nil, fmt.Errorf("decoding sweep %s: %w", id, err)
	}
	return &s, nil
}

// putInstance drops a write whose attempt is older than the stored one: it carries
// older news (a retried invocation finishing late) and must not hide the newer attempt.
func (d *dynamoStore) putInstance(ctx context.Context, rec *instanceRecord) error {
	item, err := marshalItem(rec)
	if err != nil {
		return fmt.Errorf("encoding instance %d of sweep %s: %w", rec.Index, rec.SweepID, err)
	}
	_, err = d.db.PutItem(ctx, &dynamodb.PutItemInput{
		TableName:                 aws.String(d.instancesTable),
		Item:                      item,
		ConditionExpression:       aws.String("attribute_not_exists(#id) OR #a <= :a"),
		ExpressionAttributeNames:  map[string]string{"#id": "sweep_id", "#a": "attempt"},
		ExpressionAttributeValues: map[string]types.AttributeValue{":a": numberAV(int64(rec.Attempt))},
	})
	if isConditionFailed(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("saving instance %d of sweep %s to table %s: %w", rec.Index, rec.SweepID, d.instancesTable, err)
	}
	return nil
}

func (d *dynamoStore) listInstances(ctx context.Context, sweepID string) ([]instanceRecord, error) {
	var recs []instanceRecord
	var start map[string]types.AttributeValue
	for {
		in := &dynamodb.QueryInput{
			TableName:                 aws.String(d.instancesTable),
			KeyConditionExpression:    aws.String("#id = :id"),
			ExpressionAttributeNames:  map[string]string{"#id": "sweep_id"},
			ExpressionAttributeValues: map[string]types.AttributeValue{":id": &types.AttributeValueMemberS{Value: sweepID}},
			ConsistentRead:            aws.Bool(true),
			ExclusiveStartKey:         start,
		}
		if d.pageLimit > 0 {
			in.Limit = aws.Int32(d.pageLimit)
		}
		out, err := d.db.Query(ctx, in)
		if err != nil {
			return nil, fmt.Errorf("listing instances of sweep %s in table %s: %w", sweepID, d.instancesTable, err)
		}
		page := make([]instanceRecord, 0, len(out.Items))
		if err := attributevalue.UnmarshalListOfMaps(out.Items, &page); err != nil {
			return nil, fmt.Errorf("decoding instances of sweep %s: %w", sweepID, err)
		}
		recs = append(recs, page...)
		if len(out.LastEvaluatedKey) == 0 {
			return recs, nil
		}
		start = out.LastEvaluatedKey
	}
}

// listSweeps reads the GSI newest first. It stops at limit (≤ 0: no limit) and then
// returns a token built from the last sweep returned, so the next page starts right
// after it whatever the filter skipped.
func (d *dynamoStore) listSweeps(ctx context.Context, userID, status string, limit int, startKey string) ([]sweep, string, error) {
	start, err := decodePageToken(startKey)
	if err != nil {
		return nil, "", err
	}
	in := &dynamodb.QueryInput{
		TableName:                 aws.String(d.table),
		IndexName:                 aws.String(gsiUserCreated),
		KeyConditionExpression:    aws.String("#u = :u"),
		ExpressionAttributeNames:  map[string]string{"#u": "user_id"},
		ExpressionAttributeValues: map[string]types.AttributeValue{":u": &types.AttributeValueMemberS{Value: userID}},
		ScanIndexForward:          aws.Bool(false),
	}
	if status != "" {
		in.FilterExpression = aws.String("#s = :s")
		in.ExpressionAttributeNames["#s"] = "status"
		in.ExpressionAttributeValues[":s"] = &types.AttributeValueMemberS{Value: status}
	}
	var got []sweep
	for {
		if limit > 0 {
			// Without a filter every item read is returned, so read only what is needed;
			// with one, read a larger page rather than many tiny ones.
			n := limit - len(got)
			if status != "" {
				n = max(n, 100)
			}
			in.Limit = aws.Int32(int32(min(n, 1000)))
		}
		if d.pageLimit > 0 && (in.Limit == nil || *in.Limit > d.pageLimit) {
			in.Limit = aws.Int32(d.pageLimit)
		}
		in.ExclusiveStartKey = start
		out, err := d.db.Query(ctx, in)
		if err != nil {
			return nil, "", fmt.Errorf("listing sweeps of %s in table %s: %w", userID, d.table, err)
		}
		for i, it := range out.Items {
			var s sweep
			if err := attributevalue.UnmarshalMap(it, &s); err != nil {
				return nil, "", fmt.Errorf("decoding a sweep of %s: %w", userID, err)
			}
			got = append(got, s)
			if limit > 0 && len(got) == limit {
				if i == len(out.Items)-1 && len(out.LastEvaluatedKey) == 0 {
					return got, "", nil
				}
				return got, encodePageToken(s), nil
			}
		}
		if len(out.LastEvaluatedKey) == 0 {
			return got, "", nil
		}
		start = out.LastEvaluatedKey
	}
}

// pageToken is the GSI's position: its keys plus the table's key.
type pageToken struct {
	SweepID   string `json:"sweep_id"`
	UserID    string `json:"user_id"`
	CreatedAt string `json:"created_at"`
}

func encodePageToken(s sweep) string {
	b, _ := json.Marshal(pageToken{SweepID: s.SweepID, UserID: s.UserID, CreatedAt: s.CreatedAt})
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodePageToken(tok string) (map[string]types.AttributeValue, error) {
	if tok == "" {
		return nil, nil
	}
	var p pageToken
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err == nil {
		err = json.Unmarshal(b, &p)
	}
	if err != nil || p.SweepID == "" || p.UserID == "" || p.CreatedAt == "" {
		return nil, fmt.Errorf("page token %q is not one spawn gave out: start from the first page", tok)
	}
	return map[string]types.AttributeValue{
		"sweep_id":   &types.AttributeValueMemberS{Value: p.SweepID},
		"user_id":    &types.AttributeValueMemberS{Value: p.UserID},
		"created_at": &types.AttributeValueMemberS{Value: p.CreatedAt},
	}, nil
}

func numberAV(n int64) types.AttributeValue {
	return &types.AttributeValueMemberN{Value: strconv.FormatInt(n, 10)}
}

// Params: the parameter file lives in S3, checked by its SHA-256 and cached locally,
// so a re-invocation does not download it again.

// s3API is the part of the S3 client the params store uses.
type s3API interface {
	PutObject(ctx context.Context, in *s3.PutObjectInput, optFns ...func(*s3.Options)) (*s3.PutObjectOutput, error)
	GetObject(ctx context.Context, in *s3.GetObjectInput, optFns ...func(*s3.Options)) (*s3.GetObjectOutput, error)
	HeadObject(ctx context.Context, in *s3.HeadObjectInput, optFns ...func(*s3.Options)) (*s3.HeadObjectOutput, error)
}

type paramsStore struct {
	s3       s3API
	bucket   string
	cacheDir string
}

// newParamsStore uses defaultParamsCacheDir when cacheDir is empty.
func newParamsStore(client s3API, bucket, cacheDir string) *paramsStore {
	if cacheDir == "" {
		cacheDir = defaultParamsCacheDir()
	}
	return &paramsStore{s3: client, bucket: bucket, cacheDir: cacheDir}
}

// defaultParamsCacheDir is the user's cache directory, or /tmp in Lambda, where HOME is
// read-only and /tmp outlives one invocation of a warm instance.
func defaultParamsCacheDir() string {
	if os.Getenv("AWS_LAMBDA_RUNTIME_API") != "" {
		return "/tmp/spawn-cache"
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "spawn")
	}
	return filepath.Join(os.TempDir(), "spawn-cache")
}

func paramsKey(sweepID string) string { return "sweeps/" + sweepID + "/params.json" }

const paramsChecksumMeta = "sha256"

// uploadParams writes the params file once: a second upload to the same key is refused
// by IfNoneMatch, unless it is the same bytes (a retried upload), which is fine.
func (p *paramsStore) uploadParams(ctx context.Context, sweepID string, raw []byte) (key, sha256hex string, err error) {
	key = paramsKey(sweepID)
	sum := sha256.Sum256(raw)
	sha256hex = hex.EncodeToString(sum[:])
	_, err = p.s3.PutObject(ctx, &s3.PutObjectInput{
		Bucket:      aws.String(p.bucket),
		Key:         aws.String(key),
		Body:        bytes.NewReader(raw),
		ContentType: aws.String("application/json"),
		Metadata:    map[string]string{paramsChecksumMeta: sha256hex},
		IfNoneMatch: aws.String("*"),
	})
	if err == nil {
		return key, sha256hex, nil
	}
	var apiErr smithy.APIError
	if !errors.As(err, &apiErr) || (apiErr.ErrorCode() != "PreconditionFailed" && apiErr.ErrorCode() != "ConditionalRequestConflict") {
		return "", "", fmt.Errorf("uploading params to s3://%s/%s: %w", p.bucket, key, err)
	}
	head, herr := p.s3.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(p.bucket), Key: aws.String(key)})
	if herr != nil {
		return "", "", fmt.Errorf("uploading params to s3://%s/%s: the object exists and cannot be read: %w", p.bucket, key, herr)
	}
	if head.Metadata[paramsChecksumMeta] != sha256hex {
		return "", "", fmt.Errorf("params of sweep %s already exist at s3://%s/%s with other contents: launch with a new sweep id", sweepID, p.bucket, key)
	}
	return key, sha256hex, nil
}

// downloadParams returns the params at key, verified against sha256hex (the record's).
// A cached copy with the right checksum is used unless force; a wrong one is replaced.
func (p *paramsStore) downloadParams(ctx context.Context, key, sha256hex string, force bool) ([]byte, error) {
	if sha256hex == "" {
		return nil, fmt.Errorf("params at s3://%s/%s: the sweep record has no checksum to verify them: launch the sweep again", p.bucket, key)
	}
	cache := p.cachePath(key, sha256hex)
	if !force {
		if b, err := os.ReadFile(cache); err == nil && sha256Hex(b) == sha256hex {
			return b, nil
		}
	}
	out, err := p.s3.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(p.bucket), Key: aws.String(key)})
	if err != nil {
		return nil, fmt.Errorf("downloading params s3://%s/%s: %w", p.bucket, key, err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	if err != nil {
		return nil, fmt.Errorf("downloading params s3://%s/%s: %w", p.bucket, key, err)
	}
	if got := sha256Hex(b); got != sha256hex {
		return nil, fmt.Errorf("params s3://%s/%s have SHA-256 %s but the sweep record says %s: the object changed after launch; launch the sweep again",
			p.bucket, key, got, sha256hex)
	}
	// The cache only saves a download: failing to write it must not fail the sweep.
	_ = writeFileAtomic(cache, b)
	return b, nil
}

// cachePath names the cache file by sweep id and checksum, so a changed file is never
// mistaken for the old one.
func (p *paramsStore) cachePath(key, sha256hex string) string {
	id := strings.TrimSuffix(strings.TrimPrefix(key, "sweeps/"), "/params.json")
	id = strings.NewReplacer("/", "_", "\\", "_", "..", "_").Replace(id)
	return filepath.Join(p.cacheDir, "params", id+"-"+sha256hex+".json")
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// writeFileAtomic writes via a temporary file and rename, so a reader never sees half a file.
func writeFileAtomic(path string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".params-*")
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		os.Remove(f.Name())
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(f.Name())
		return err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		os.Remove(f.Name())
		return err
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// defaultBucketName is spawn-sweeps-<account-id>-<region>.
func defaultBucketName(accountID, region string) string {
	return "spawn-sweeps-" + accountID + "-" + region
}

// done is the number of items with an outcome.
func (c counts) done() int { return c.Succeeded + c.Failed + c.Expired + c.Cancelled + c.Unknown }
