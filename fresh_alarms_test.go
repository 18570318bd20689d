package main

import (
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/pricing"
)

// An idle-timeout alarm is one CloudWatch evaluates on EC2's basic monitoring: 5-minute
// periods, missing data not idle, the action ARN in the account's partition.
func TestIdleAlarmShape(t *testing.T) {
	for _, tc := range []struct {
		idle          time.Duration
		period, count int32
		err           string
	}{
		{5 * time.Minute, 300, 1, ""},
		{12 * time.Minute, 300, 3, ""},
		{24 * time.Hour, 300, 288, ""},
		{48 * time.Hour, 3600, 48, ""},
		{7 * 24 * time.Hour, 3600, 168, ""},
		{time.Minute, 0, 0, "under 5m"},
		{8 * 24 * time.Hour, 0, 0, "192h is over 7d"},
	} {
		in, err := idleAlarmInput("spawn-x-0", "i-1", "cn-north-1", "aws-cn", tc.idle)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("idle %s: error %v, want %q", tc.idle, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("idle %s: %v", tc.idle, err)
		}
		p, n := aws.ToInt32(in.Period), aws.ToInt32(in.EvaluationPeriods)
		if p != tc.period || n != tc.count || int64(p)*int64(n) > 604800 || (p < 3600 && int64(p)*int64(n) > 86400) {
			t.Errorf("idle %s: period %d × %d", tc.idle, p, n)
		}
		if aws.ToString(in.TreatMissingData) != "notBreaching" {
			t.Errorf("idle %s: TreatMissingData %q", tc.idle, aws.ToString(in.TreatMissingData))
		}
		if want := "arn:aws-cn:automate:cn-north-1:ec2:terminate"; len(in.AlarmActions) != 1 || in.AlarmActions[0] != want {
			t.Errorf("alarm actions %v, want %s", in.AlarmActions, want)
		}
	}
}

// An idle timeout no alarm can express is refused when the file is checked, with the limit.
func TestParamFileRefusesIdleTimeoutsNoAlarmExpresses(t *testing.T) {
	for idle, want := range map[string]string{
		"2m":  "params[0].idle_timeout: 2m is under 5m",
		"8d":  "params[0].idle_timeout: 192h is over 7d, the longest window a CloudWatch alarm evaluates",
		"2d":  "",
		"90m": "",
	} {
		_, err := parseParamFile("p.json", []byte(`{"params": [{"command": "x", "idle_timeout": "`+idle+`"}]}`))
		switch {
		case want == "" && err != nil:
			t.Errorf("idle_timeout %s: %v", idle, err)
		case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
			t.Errorf("idle_timeout %s: error %v, want %q", idle, err, want)
		}
	}
}

// The Price List API is asked in the caller's partition, and not at all where it has none.
func TestPricerFollowsThePartition(t *testing.T) {
	for arn, want := range map[string]string{
		"arn:aws:sts::111122223333:assumed-role/r/s":        "us-east-1",
		"arn:aws-cn:sts::111122223333:assumed-role/r/s":     "cn-northwest-1",
		"arn:aws-us-gov:sts::111122223333:assumed-role/r/s": "",
	} {
		p := newPricer(aws.Config{Region: "us-west-2"}, arn)
		got := ""
		if c, ok := p.pricing.(*pricing.Client); ok {
			got = c.Options().Region
		}
		if got != want {
			t.Errorf("%s: Pricing API in %q, want %q", arn, got, want)
		}
	}
}
