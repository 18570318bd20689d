package main

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials/stscreds"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatch"
	cwtypes "github.com/aws/aws-sdk-go-v2/service/cloudwatch/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/sts"
)

// ec2API is the part of EC2 the engine uses, per region (and per account).
type ec2API interface {
	RunInstances(ctx context.Context, in *ec2.RunInstancesInput, optFns ...func(*ec2.Options)) (*ec2.RunInstancesOutput, error)
	DescribeInstances(ctx context.Context, in *ec2.DescribeInstancesInput, optFns ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error)
	TerminateInstances(ctx context.Context, in *ec2.TerminateInstancesInput, optFns ...func(*ec2.Options)) (*ec2.TerminateInstancesOutput, error)
}

// alarmAPI creates and deletes the idle-timeout alarms.
type alarmAPI interface {
	PutMetricAlarm(ctx context.Context, in *cloudwatch.PutMetricAlarmInput, optFns ...func(*cloudwatch.Options)) (*cloudwatch.PutMetricAlarmOutput, error)
	DeleteAlarms(ctx context.Context, in *cloudwatch.DeleteAlarmsInput, optFns ...func(*cloudwatch.Options)) (*cloudwatch.DeleteAlarmsOutput, error)
}

func alarmName(sweepID string, index int) string {
	return fmt.Sprintf("spawn-%s-%d", sweepID, index)
}

// The shape of an idle-timeout alarm, as CloudWatch and EC2 allow it. With basic
// monitoring (what spawn's launches use: detailed monitoring costs per instance) EC2
// publishes CPUUtilization every 5 minutes (EC2 User Guide, "Manage detailed monitoring
// for your EC2 instances"), so a shorter period would leave the alarm in
// INSUFFICIENT_DATA. PutMetricAlarm refuses Period × EvaluationPeriods over 86,400 s for
// periods under an hour, and over 604,800 s for any period (CloudWatch API reference,
// PutMetricAlarm, Period): an idle timeout past a day is counted in hours, and one past
// 7 days cannot be expressed at all.
const (
	idleBasicPeriod  = 300  // s: EC2's basic-monitoring interval
	idleHourPeriod   = 3600 // s: the shortest period whose window may pass a day
	idleShortWindow  = 86400
	idleLongWindow   = 604800
	minIdleTimeout   = idleBasicPeriod * time.Second
	maxIdleTimeout   = idleLongWindow * time.Second
	idleDayTimeout   = idleShortWindow * time.Second
	idleMissingData  = "notBreaching"
	idleAlarmPartDef = "aws"
)

// idleAlarmShape is the period and the number of periods of the alarm for idle, rounded
// up to whole periods, or why no alarm can express it (the parser refuses it then).
func idleAlarmShape(idle time.Duration) (period, periods int32, err error) {
	switch {
	case idle < minIdleTimeout:
		return 0, 0, fmt.Errorf("%s is under %s: EC2 publishes the CPU use an idle alarm watches every 5 minutes (basic monitoring); give at least 5m", shortDuration(idle), shortDuration(minIdleTimeout))
	case idle > maxIdleTimeout:
		return 0, 0, fmt.Errorf("%s is over 7d, the longest window a CloudWatch alarm evaluates (Period × EvaluationPeriods ≤ 604,800 s): give at most 7d, or a ttl", shortDuration(idle))
	case idle <= idleDayTimeout:
		period = idleBasicPeriod
	default:
		period = idleHourPeriod
	}
	step := time.Duration(period) * time.Second
	return period, int32((idle + step - 1) / step), nil
}

func idleShapeErr(idle time.Duration) error {
	_, _, err := idleAlarmShape(idle)
	return err
}

// partitionedAlarms is a CloudWatch client that knows its partition (from STS), for the
// alarm action's ARN.
type partitionedAlarms struct {
	alarmAPI
	partition string
}

func (p partitionedAlarms) awsPartition() string { return p.partition }

// alarmPartition is the partition of the account api acts in: "aws" for a client that
// does not say (the tests' fakes).
func alarmPartition(api alarmAPI) string {
	if p, ok := api.(interface{ awsPartition() string }); ok && p.awsPartition() != "" {
		return p.awsPartition()
	}
	return idleAlarmPartDef
}

// idleAlarmInput is the alarm that terminates instanceID once its CPU stayed under
// idleThreshold for idle. Missing data counts as not idle: an instance that is booting,
// or whose metrics come late, is never terminated for the gap.
func idleAlarmInput(name, instanceID, region, partition string, idle time.Duration) (*cloudwatch.PutMetricAlarmInput, error) {
	period, periods, err := idleAlarmShape(idle)
	if err != nil {
		return nil, err
	}
	return &cloudwatch.PutMetricAlarmInput{
		AlarmName:          aws.String(name),
		AlarmDescription:   aws.String(fmt.Sprintf("spawn: terminate %s after %s below %.0f%% CPU", instanceID, idle, idleThreshold)),
		Namespace:          aws.String("AWS/EC2"),
		MetricName:         aws.String("CPUUtilization"),
		Dimensions:         []cwtypes.Dimension{{Name: aws.String("InstanceId"), Value: aws.String(instanceID)}},
		Statistic:          cwtypes.StatisticAverage,
		Period:             aws.Int32(period),
		EvaluationPeriods:  aws.Int32(periods),
		DatapointsToAlarm:  aws.Int32(periods),
		Threshold:          aws.Float64(idleThreshold),
		ComparisonOperator: cwtypes.ComparisonOperatorLessThanThreshold,
		TreatMissingData:   aws.String(idleMissingData),
		AlarmActions:       []string{"arn:" + partition + ":automate:" + region + ":ec2:terminate"},
	}, nil
}

// ensureAlarm creates the idle-timeout alarm of a running instance once; a failure is
// retried next step.
func (o *orchestrator) ensureAlarm(ctx context.Context, sw *sweep, e *aliveInstance) {
	idle := o.idleTimeoutOf(sw, e.Index)
	if o.alarmsFor == nil || idle <= 0 || e.IdleAlarm || e.InstanceID == "" {
		return
	}
	api, err := o.alarmsFor(ctx, e.Region)
	if err != nil {
		return
	}
	log := o.log.With().Str("sweep_id", sw.SweepID).Int("index", e.Index).Logger()
	in, err := idleAlarmInput(alarmName(sw.SweepID, e.Index), e.InstanceID, e.Region, alarmPartition(api), idle)
	if err != nil {
		// The parser refuses such a timeout; a sweep launched before it did gets no
		// alarm rather than a call CloudWatch would refuse every step.
		log.Debug().Err(err).Msg("no idle alarm can express this idle timeout")
		return
	}
	if _, err = api.PutMetricAlarm(ctx, in); err != nil {
		log.Warn().Err(err).Msg("creating the idle alarm; retrying next step")
		return
	}
	e.IdleAlarm = true
}

func (o *orchestrator) deleteAlarm(ctx context.Context, sw *sweep, e *aliveInstance) {
	if o.alarmsFor == nil || !e.IdleAlarm {
		return
	}
	if api, err := o.alarmsFor(ctx, e.Region); err == nil {
		_, err = api.DeleteAlarms(ctx, &cloudwatch.DeleteAlarmsInput{AlarmNames: []string{alarmName(sw.SweepID, e.Index)}})
		if err != nil {
			o.log.Warn().Err(err).Str("sweep_id", sw.SweepID).Int("index", e.Index).Msg("deleting the idle alarm")
		}
	}
}

func findByToken(ctx context.Context, api ec2API, token string) (*ec2types.Instance, error) {
	insts, err := describeInstances(ctx, api, []ec2types.Filter{{Name: aws.String("client-token"), Values: []string{token}}})
	if err != nil {
		return nil, err
	}
	// Some backends ignore filters: only the token itself decides.
	for i := range insts {
		if aws.ToString(insts[i].ClientToken) == token {
			return &insts[i], nil
		}
	}
	return nil, nil
}

func describeByIDs(ctx context.Context, api ec2API, ids []string) (map[string]ec2types.Instance, error) {
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	// A filter (not InstanceIds) so that an id not yet visible is simply absent rather
	// than failing the whole call with InvalidInstanceID.NotFound.
	out := map[string]ec2types.Instance{}
	for start := 0; start < len(ids); start += 100 {
		chunk := ids[start:min(start+100, len(ids))]
		insts, err := describeInstances(ctx, api, []ec2types.Filter{{Name: aws.String("instance-id"), Values: chunk}})
		if err != nil {
			return nil, err
		}
		for _, inst := range insts {
			if id := aws.ToString(inst.InstanceId); want[id] {
				out[id] = inst
			}
		}
	}
	if err := fillMissingTags(ctx, api, out); err != nil {
		// An ended instance whose report could not be read is left for the next step, as
		// if not yet visible: a failed call must not decide its outcome. A running one
		// needs no tags to stay running.
		for id, inst := range out {
			if len(inst.Tags) == 0 && inst.State != nil && endedState(inst.State.Name) {
				delete(out, id)
			}
		}
	}
	return out, nil
}

// endedState: the instance no longer runs its workload.
func endedState(s ec2types.InstanceStateName) bool {
	switch s {
	case ec2types.InstanceStateNameShuttingDown, ec2types.InstanceStateNameTerminated,
		ec2types.InstanceStateNameStopping, ec2types.InstanceStateNameStopped:
		return true
	}
	return false
}

// tagDescriber is EC2's DescribeTags, which the SDK client has and the engine's fakes
// need not.
type tagDescriber interface {
	DescribeTags(ctx context.Context, in *ec2.DescribeTagsInput, optFns ...func(*ec2.Options)) (*ec2.DescribeTagsOutput, error)
}

// fillMissingTags reads the tags of instances that came back with none. AWS always
// returns an instance's tags (ours are set at launch, so never none); some emulators
// keep tags but leave them out of DescribeInstances, and without this every outcome
// there would be "unknown". One call covers every such instance; an error leaves them
// as they were and is returned.
func fillMissingTags(ctx context.Context, api ec2API, insts map[string]ec2types.Instance) error {
	td, ok := api.(tagDescriber)
	if !ok {
		return nil
	}
	var ids []string
	for id, inst := range insts {
		if len(inst.Tags) == 0 {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	sort.Strings(ids)
	out, err := td.DescribeTags(ctx, &ec2.DescribeTagsInput{Filters: []ec2types.Filter{
		{Name: aws.String("resource-id"), Values: ids},
		{Name: aws.String("resource-type"), Values: []string{"instance"}},
	}})
	if err != nil {
		return err
	}
	for _, t := range out.Tags {
		id := aws.ToString(t.ResourceId)
		inst, ok := insts[id]
		if !ok {
			continue
		}
		inst.Tags = append(inst.Tags, ec2types.Tag{Key: t.Key, Value: t.Value})
		insts[id] = inst
	}
	return nil
}

// findSweepInstances lists the sweep's instances that are not yet shutting down, by tag.
// The returned tags are checked too: an ignored filter must never widen a terminate.
func findSweepInstances(ctx context.Context, api ec2API, sweepID string) ([]string, error) {
	insts, err := describeInstances(ctx, api, []ec2types.Filter{
		{Name: aws.String("tag:spawn:sweep-id"), Values: []string{sweepID}},
		{Name: aws.String("tag:spawn:managed"), Values: []string{"true"}},
		{Name: aws.String("instance-state-name"), Values: []string{"pending", "running", "stopping", "stopped"}},
	})
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, inst := range insts {
		if !ownedBy(&inst, sweepID) {
			continue
		}
		switch inst.State.Name {
		case ec2types.InstanceStateNameShuttingDown, ec2types.InstanceStateNameTerminated:
			continue
		}
		ids = append(ids, aws.ToString(inst.InstanceId))
	}
	return ids, nil
}

// ownedBy: the instance carries the tags every launch of the sweep gives it
// (spawn:managed=true and spawn:sweep-id, from RunInstances' TagSpecifications, so they
// come with the instance). The engine terminates, alarms and reads outcomes only of
// instances it verified so: an id in the record (which anyone who may write the table
// can write) or an exit record never makes it act on another instance.
func ownedBy(inst *ec2types.Instance, sweepID string) bool {
	var managed, ours bool
	for _, t := range inst.Tags {
		switch aws.ToString(t.Key) {
		case tagManaged:
			managed = aws.ToString(t.Value) == "true"
		case tagSweepID:
			ours = aws.ToString(t.Value) == sweepID
		}
	}
	return managed && ours
}

func describeInstances(ctx context.Context, api ec2API, filters []ec2types.Filter) ([]ec2types.Instance, error) {
	in := &ec2.DescribeInstancesInput{Filters: filters}
	var out []ec2types.Instance
	for range 1000 {
		page, err := api.DescribeInstances(ctx, in)
		if err != nil {
			return nil, err
		}
		for _, r := range page.Reservations {
			out = append(out, r.Instances...)
		}
		if aws.ToString(page.NextToken) == "" || aws.ToString(page.NextToken) == aws.ToString(in.NextToken) {
			break
		}
		in.NextToken = page.NextToken
	}
	return out, nil
}

// terminateEach terminates ids, and names those EC2 does not know
// (InvalidInstanceID.NotFound fails a whole call: the rest are then terminated one by
// one): an instance it forgot about an hour after it ended, or one it does not show yet.
func terminateEach(ctx context.Context, api ec2API, ids []string) (notFound []string, err error) {
	err = terminate(ctx, api, ids)
	if apiErrorCode(err) != "InvalidInstanceID.NotFound" {
		return nil, err
	}
	for _, id := range ids {
		switch err := terminate(ctx, api, []string{id}); {
		case apiErrorCode(err) == "InvalidInstanceID.NotFound":
			notFound = append(notFound, id)
		case err != nil:
			return notFound, err
		}
	}
	return notFound, nil
}

func terminate(ctx context.Context, api ec2API, ids []string) error {
	for start := 0; start < len(ids); start += 500 {
		_, err := api.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: ids[start:min(start+500, len(ids))]})
		if err != nil {
			return err
		}
	}
	return nil
}

// awsClients hands out EC2 and CloudWatch clients per (account, region), cached. A sweep
// in another account is reached through its SpawnSweepCrossAccountRole, with credentials
// the SDK refreshes before they expire.
type awsClients struct {
	base       aws.Config
	ownAccount string
	partition  string

	mu    sync.Mutex
	creds map[string]aws.CredentialsProvider
	ec2   map[string]ec2API
	cw    map[string]alarmAPI
}

func newAWSClients(base aws.Config, ownAccount, partition string) *awsClients {
	return &awsClients{base: base, ownAccount: ownAccount, partition: partition, creds: map[string]aws.CredentialsProvider{},
		ec2: map[string]ec2API{}, cw: map[string]alarmAPI{}}
}

// configFor must be called with c.mu held.
func (c *awsClients) configFor(account, region string) aws.Config {
	cfg := c.base.Copy()
	if region != "" {
		cfg.Region = region
	}
	if account != "" && c.ownAccount != "" && account != c.ownAccount {
		p, ok := c.creds[account]
		if !ok {
			own := c.ownAccount
			p = aws.NewCredentialsCache(stscreds.NewAssumeRoleProvider(sts.NewFromConfig(c.base), crossAccountRoleARN(c.partition, account),
				func(o *stscreds.AssumeRoleOptions) {
					o.ExternalID = aws.String(crossAccountExternalID(own))
					o.RoleSessionName = "spawn-orchestrator"
				}), func(o *aws.CredentialsCacheOptions) { o.ExpiryWindow = 5 * time.Minute })
			c.creds[account] = p
		}
		cfg.Credentials = p
	}
	return cfg
}

func (c *awsClients) ec2For(account, region string) ec2API {
	return cachedClient(c, c.ec2, account, region, func(cfg aws.Config) ec2API { return ec2.NewFromConfig(cfg) })
}

func (c *awsClients) alarmsFor(account, region string) alarmAPI {
	return cachedClient(c, c.cw, account, region, func(cfg aws.Config) alarmAPI {
		return partitionedAlarms{alarmAPI: cloudwatch.NewFromConfig(cfg), partition: c.partition}
	})
}

// cachedClient returns the client of (account, region) from cache, making it once.
func cachedClient[T any](c *awsClients, cache map[string]T, account, region string, make func(aws.Config) T) T {
	c.mu.Lock()
	defer c.mu.Unlock()
	key := account + "/" + region
	if cl, ok := cache[key]; ok {
		return cl
	}
	cl := make(c.configFor(account, region))
	cache[key] = cl
	return cl
}
