package main

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
)

// Tag keys spawn puts on every instance.
const (
	tagSweepID    = "spawn:sweep-id"
	tagSweepIndex = "spawn:sweep-index"
	tagAttempt    = "spawn:attempt"
	tagManaged    = "spawn:managed"
	tagTTL        = "spawn:ttl"
	tagExitCode   = "spawn:exit-code"
	tagName       = "Name"
)

// clientToken makes RunInstances idempotent per (sweep, index, attempt): a launch retried
// after a crash or a timeout finds the instance the first call made. 64 hex characters,
// EC2's maximum.
func clientToken(sweepID string, index, attempt int) string {
	h := sha256.New()
	fmt.Fprintf(h, "spawn\x00%s\x00%d\x00%d", sweepID, index, attempt)
	return hex.EncodeToString(h.Sum(nil))
}

// fixedTags are the tags every instance carries besides its params. The parser counts
// this same list against EC2's 50-tag limit, so the count and the real tags never drift.
func fixedTags(sweepID, sweepName string, index, attempt int, ttl time.Duration) []ec2types.Tag {
	tags := []ec2types.Tag{
		{Key: aws.String(tagSweepID), Value: aws.String(sweepID)},
		{Key: aws.String(tagSweepIndex), Value: aws.String(strconv.Itoa(index))},
		{Key: aws.String(tagAttempt), Value: aws.String(strconv.Itoa(attempt))},
		{Key: aws.String(tagManaged), Value: aws.String("true")},
		{Key: aws.String(tagName), Value: aws.String(instanceName(sweepName, index))},
	}
	if ttl > 0 {
		tags = append(tags, ec2types.Tag{Key: aws.String(tagTTL), Value: aws.String(shortDuration(ttl))})
	}
	return tags
}

// instanceTags is every tag of one instance: the fixed ones, then one per param.
func instanceTags(sw *sweep, it item, attempt int, ttl time.Duration) []ec2types.Tag {
	tags := fixedTags(sw.SweepID, sw.SweepName, it.Index, attempt, ttl)
	for _, p := range it.Params {
		tags = append(tags, ec2types.Tag{Key: aws.String(paramTagPrefix + p.Key), Value: aws.String(p.Value)})
	}
	return tags
}

func instanceName(sweepName string, index int) string {
	name := sweepName + "-" + strconv.Itoa(index)
	if utf8.RuneCountInString(name) > maxTagValueLen {
		r := []rune(name)
		name = string(r[len(r)-maxTagValueLen:])
	}
	return name
}

// itemTTL is the item's own TTL, else the sweep-wide one (0: none).
func itemTTL(sw *sweep, it item) time.Duration {
	if it.TTL > 0 {
		return it.TTL
	}
	if sw.TTL != "" {
		if d, err := parseDuration(sw.TTL); err == nil && d > 0 {
			return d
		}
	}
	return 0
}

// runInstancesInput is the one RunInstances call that launches item it. it.AMI must be
// resolved already (resolveAMI).
func runInstancesInput(sw *sweep, it item, attempt int) *ec2.RunInstancesInput {
	ttl := itemTTL(sw, it)
	tags := instanceTags(sw, it, attempt, ttl)
	in := &ec2.RunInstancesInput{
		MinCount:                          aws.Int32(1),
		MaxCount:                          aws.Int32(1),
		ImageId:                           aws.String(it.AMI),
		InstanceType:                      ec2types.InstanceType(it.InstanceType),
		InstanceInitiatedShutdownBehavior: ec2types.ShutdownBehaviorTerminate,
		ClientToken:                       aws.String(candidateToken(sw.SweepID, it.Index, attempt, it.Candidate)),
		UserData:                          aws.String(base64.StdEncoding.EncodeToString([]byte(userDataScript(sw, it, attempt, ttl)))),
		// The script reads its instance id and region with IMDSv2 tokens; v1 is not needed.
		MetadataOptions: &ec2types.InstanceMetadataOptionsRequest{
			HttpTokens:   ec2types.HttpTokensStateRequired,
			HttpEndpoint: ec2types.InstanceMetadataEndpointStateEnabled,
		},
		TagSpecifications: []ec2types.TagSpecification{
			{ResourceType: ec2types.ResourceTypeInstance, Tags: tags},
			{ResourceType: ec2types.ResourceTypeVolume, Tags: tags},
		},
	}
	if it.KeyName != "" {
		in.KeyName = aws.String(it.KeyName)
	}
	if it.SubnetID != "" {
		in.SubnetId = aws.String(it.SubnetID)
	}
	if len(it.SecurityGroupIDs) > 0 {
		in.SecurityGroupIds = slices.Clone(it.SecurityGroupIDs)
	}
	if it.IAMInstanceProfile != "" {
		if strings.HasPrefix(it.IAMInstanceProfile, "arn:") {
			in.IamInstanceProfile = &ec2types.IamInstanceProfileSpecification{Arn: aws.String(it.IAMInstanceProfile)}
		} else {
			in.IamInstanceProfile = &ec2types.IamInstanceProfileSpecification{Name: aws.String(it.IAMInstanceProfile)}
		}
	}
	if it.Spot {
		spot := &ec2types.SpotMarketOptions{
			SpotInstanceType:             ec2types.SpotInstanceTypeOneTime,
			InstanceInterruptionBehavior: ec2types.InstanceInterruptionBehaviorTerminate,
		}
		if it.SpotMaxPrice != "" {
			spot.MaxPrice = aws.String(it.SpotMaxPrice)
		}
		in.InstanceMarketOptions = &ec2types.InstanceMarketOptionsRequest{MarketType: ec2types.MarketTypeSpot, SpotOptions: spot}
	}
	return in
}

// shellQuote single-quotes s for bash: inside single quotes nothing is special, and a
// quote in s is written as close-quote, backslash-quote, open-quote, so no value can run code.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// envExports is the part of the script that sets the item's environment.
func envExports(sw *sweep, it item, attempt int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "export SPAWN_SWEEP_ID=%s\n", shellQuote(sw.SweepID))
	fmt.Fprintf(&b, "export SPAWN_SWEEP_INDEX=%d\n", it.Index)
	fmt.Fprintf(&b, "export SPAWN_ATTEMPT=%d\n", attempt)
	for _, p := range it.Params {
		// Keys hold only [A-Za-z0-9_] (checked by the parser), so PARAM_<key> is a name.
		fmt.Fprintf(&b, "export %s%s=%s\n", paramEnvPrefix, p.Key, shellQuote(p.Value))
	}
	return b.String()
}

// userDataScriptBody is everything after the exports; fixed text, so the parser can
// bound the script's size without writing it.
const userDataScriptBody = `
spawn_dir=${SPAWN_DIR:-/var/lib/spawn}
mkdir -p "$spawn_dir" && cd "$spawn_dir" || shutdown -h now
log=$spawn_dir/item.log
# The workload may write a JSON object of metrics here ({"loss": 0.12}); it is uploaded
# as the item's result.
export SPAWN_RESULT_FILE=$spawn_dir/result.json
rm -f "$SPAWN_RESULT_FILE"
bash -c "$spawn_command" >"$log" 2>&1 </dev/null
rc=$?

imds=http://169.254.169.254/latest
token=$(curl -sS -m 5 -X PUT "$imds/api/token" -H 'X-aws-ec2-metadata-token-ttl-seconds: 600')
instance_id=$(curl -sS -m 5 -H "X-aws-ec2-metadata-token: $token" "$imds/meta-data/instance-id")
region=$(curl -sS -m 5 -H "X-aws-ec2-metadata-token: $token" "$imds/meta-data/placement/region")

# Objects are named by this instance's credentials (role id:instance id), the only
# names its role may write. The log first, then the result (when the command wrote one),
# then the exit record (the engine reads it as "finished", so the result must be there
# before; it outlasts EC2's memory of the instance, about an hour after it ends), then
# the exit-code tag.
user_id=$(aws sts get-caller-identity --region "$region" --query UserId --output text)
for try in 1 2 3; do
  [ -n "$user_id" ] || break
  aws s3 cp "$log" "$spawn_log_url$user_id.log" $spawn_bucket_region --only-show-errors && break
  sleep $((try * 5))
done
for try in 1 2 3; do
  [ -n "$user_id" ] && [ -f "$SPAWN_RESULT_FILE" ] || break
  aws s3 cp "$SPAWN_RESULT_FILE" "$spawn_result_url$user_id.json" $spawn_bucket_region --only-show-errors && break
  sleep $((try * 5))
done
printf '{"exit_code":%d,"ran_seconds":%s}\n' "$rc" "$(cut -d' ' -f1 /proc/uptime)" >"$spawn_dir/exit.json"
for try in 1 2 3; do
  [ -n "$user_id" ] || break
  aws s3 cp "$spawn_dir/exit.json" "$spawn_exit_url$user_id.json" $spawn_bucket_region --only-show-errors && break
  sleep $((try * 5))
done
for try in 1 2 3; do
  aws ec2 create-tags --region "$region" --resources "$instance_id" --tags "Key=` + tagExitCode + `,Value=$rc" && break
  sleep $((try * 5))
done
shutdown -h now
`

// userDataScript is the instance's boot script: it.UserData verbatim when given, else a
// bash script that arms the TTL, exports the item's environment, runs command, uploads
// the log and the result, tags the exit code and powers off (which terminates the instance).
func userDataScript(sw *sweep, it item, attempt int, ttl time.Duration) string {
	if it.UserData != "" {
		return it.UserData
	}
	var b strings.Builder
	b.WriteString("#!/bin/bash\n")
	// Only numbers go into comments: a newline in a comment would end it and run the rest.
	fmt.Fprintf(&b, "# spawn item %d, attempt %d\n", it.Index, attempt)
	if ttl > 0 {
		mins := int64((ttl + time.Minute - 1) / time.Minute)
		b.WriteString("# The TTL is armed before anything else, so a broken command still ends the instance.\n")
		fmt.Fprintf(&b, "shutdown -h +%d || systemd-run --on-active=%dm /usr/sbin/poweroff\n", mins, mins)
	}
	b.WriteString(envExports(sw, it, attempt))
	fmt.Fprintf(&b, "spawn_command=%s\n", shellQuote(it.Command))
	fmt.Fprintf(&b, "spawn_log_url=%s\n", shellQuote("s3://"+sw.S3Bucket+"/"+logPrefix(sw.SweepID, it.Index)))
	fmt.Fprintf(&b, "spawn_result_url=%s\n", shellQuote("s3://"+sw.S3Bucket+"/"+resultPrefix(sw.SweepID, it.Index)))
	fmt.Fprintf(&b, "spawn_exit_url=%s\n", shellQuote("s3://"+sw.S3Bucket+"/"+exitReportPrefix(sw.SweepID, it.Index, attempt)))
	if sw.Region != "" {
		fmt.Fprintf(&b, "spawn_bucket_region=%s\n", shellQuote("--region="+sw.Region))
	} else {
		b.WriteString("spawn_bucket_region=\n")
	}
	b.WriteString(userDataScriptBody)
	return b.String()
}

// userDataEstimate bounds the generated script's size from above: the ids, bucket and
// names are not known while parsing, so they are counted at their longest.
func userDataEstimate(it *item) int {
	const fixed = 1536 + len(userDataScriptBody) // header, TTL line, ids, bucket, region, URLs
	n := fixed + quotedLen(it.Command)
	for _, p := range it.Params {
		n += len("export ") + len(paramEnvPrefix) + len(p.Key) + 2 + quotedLen(p.Value)
	}
	return n
}

func quotedLen(s string) int {
	return len(s) + 2 + 3*strings.Count(s, "'")
}

// ssmGetParameter is the one SSM call resolveAMI needs.
type ssmGetParameter interface {
	GetParameter(ctx context.Context, in *ssm.GetParameterInput, optFns ...func(*ssm.Options)) (*ssm.GetParameterOutput, error)
}

const al2023Parameter = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-"

// resolveAMI reads the latest Amazon Linux 2023 AMI for the instance type's architecture
// from AWS's public SSM parameter (in the client's region).
func resolveAMI(ctx context.Context, api ssmGetParameter, instanceType string) (string, error) {
	name := al2023Parameter + instanceArch(instanceType)
	out, err := api.GetParameter(ctx, &ssm.GetParameterInput{Name: aws.String(name)})
	if err != nil {
		return "", fmt.Errorf("looking up the Amazon Linux 2023 AMI in SSM parameter %s (%w): set \"ami\" in the parameter file to skip the lookup", name, err)
	}
	if out.Parameter == nil || !strings.HasPrefix(aws.ToString(out.Parameter.Value), "ami-") {
		return "", fmt.Errorf("SSM parameter %s holds no AMI id: set \"ami\" in the parameter file", name)
	}
	return aws.ToString(out.Parameter.Value), nil
}

// instanceArch is arm64 for Graviton families (a "g" right after the generation digit:
// m7g, c7gn, t4g, x2gd, im4gn, is4gen, hpc7g) and a1, else x86_64.
func instanceArch(instanceType string) string {
	family, _, _ := strings.Cut(instanceType, ".")
	if family == "a1" {
		return "arm64"
	}
	i := 0
	for i < len(family) && family[i] >= 'a' && family[i] <= 'z' {
		i++
	}
	j := i
	for j < len(family) && family[j] >= '0' && family[j] <= '9' {
		j++
	}
	if i > 0 && j > i && j < len(family) && family[j] == 'g' {
		return "arm64"
	}
	return "x86_64"
}

// resolveAMIs fills the AMI of items that name none: the latest Amazon Linux 2023 for
// the type's architecture in the item's region, looked up once per region and type. An
// item with candidates (capacity fallback) keeps AMI empty: each candidate's region and
// type is resolved into sw.AMIs, where candidateItem finds it.
func (d *engineDeps) resolveAMIs(ctx context.Context, sw *sweep, items []item) error {
	for i := range items {
		it := &items[i]
		if it.AMI != "" || (it.Fallback != nil && it.Fallback.AMIs != nil) {
			continue
		}
		for _, c := range candidatesOf(*it) {
			ami, err := d.defaultAMI(ctx, sw, regionOf(sw, item{Region: c.Region}), c.InstanceType)
			if err != nil {
				return err
			}
			if it.Fallback == nil {
				it.AMI = ami
			}
		}
	}
	return nil
}

// defaultAMI is the region's Amazon Linux 2023 for the type's architecture, looked up
// once per region and type and kept in sw.AMIs (saved with the next fenced write).
func (d *engineDeps) defaultAMI(ctx context.Context, sw *sweep, region, instanceType string) (string, error) {
	key := region + "/" + instanceType
	if ami, ok := sw.AMIs[key]; ok {
		return ami, nil
	}
	cfg := d.cfg.Copy()
	cfg.Region = region
	ami, err := resolveAMI(ctx, ssm.NewFromConfig(cfg), instanceType)
	if err != nil {
		return "", err
	}
	if sw.AMIs == nil {
		sw.AMIs = map[string]string{}
	}
	sw.AMIs[key] = ami
	return ami, nil
}
