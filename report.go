package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// An instance reports how its command ended twice: an exit record in S3, then the
// spawn:exit-code tag. The tag is cheap to read (DescribeInstances returns it) but EC2
// shows it seconds late and forgets it with the instance about an hour after it ends;
// the exit record lasts as long as the sweep's objects. docs/design.md, promise 5.

// exitReportPrefix is where the exit records of one item's instances live. The record's
// name is the writer's aws:userid ("<role id>:<instance id>" for an instance role), so
// the instance role may write only objects that name the instance itself, and the engine
// believes a record only under the name of the instance it expects.
func exitReportPrefix(sweepID string, index int) string {
	return fmt.Sprintf("sweeps/%s/exit/%d/", sweepID, index)
}

// resultPrefix is where the result objects (the metrics the command wrote to
// SPAWN_RESULT_FILE) of one item's instances live, named like exit records by the
// writer's aws:userid.
func resultPrefix(sweepID string, index int) string {
	return fmt.Sprintf("sweeps/%s/results/%d/", sweepID, index)
}

// exitReportKey is the record of the instance whose credentials have userID.
func exitReportKey(sweepID string, index int, userID string) string {
	return exitReportPrefix(sweepID, index) + userID + ".json"
}

// exitReport is the record's body: {"exit_code": 0, "ran_seconds": 812.4}.
type exitReport struct {
	ExitCode *int `json:"exit_code"`
	// RanSeconds is the instance's uptime when it wrote the record (its /proc/uptime):
	// a duration on one clock, so the cost of an instance EC2 no longer shows needs no
	// comparison of two machines' clocks.
	RanSeconds float64 `json:"ran_seconds,omitempty"`
}

// maxExitReportBytes bounds what the engine reads of a record: a real one is ~40 bytes.
const maxExitReportBytes = 4096

// exitReportWait is how long an ended instance's report may take to appear (its tag is
// eventually consistent, and the instance writes the record in its last seconds) before
// the item is recorded unknown. SPAWN_EXIT_REPORT_WAIT (a Go duration) shortens it for
// tests.
const exitReportWait = time.Minute

// s3Reports is the part of the S3 client reading exit records needs.
type s3Reports interface {
	s3Lister
	GetObject(ctx context.Context, in *s3.GetObjectInput, optFns ...func(*s3.Options)) (*s3.GetObjectOutput, error)
}

// readExitReport finds the exit record instanceID wrote for item index, if any: nil
// with no error when there is none (yet).
func readExitReport(ctx context.Context, api s3Reports, bucket, sweepID string, index int, instanceID string) (*exitReport, error) {
	if instanceID == "" {
		return nil, nil
	}
	key, err := findNamedObject(ctx, api, bucket, exitReportPrefix(sweepID, index), ".json", instanceID)
	if err != nil || key == "" {
		return nil, err
	}
	out, err := api.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	if err != nil {
		if apiErrorCode(err) == "NoSuchKey" {
			return nil, nil
		}
		return nil, fmt.Errorf("reading exit record %s: %w", key, err)
	}
	defer out.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(out.Body, maxExitReportBytes+1))
	if err != nil {
		return nil, fmt.Errorf("reading exit record %s: %w", key, err)
	}
	return parseExitReport(raw), nil
}

// s3Lister lists a bucket's objects.
type s3Lister interface {
	ListObjectsV2(ctx context.Context, in *s3.ListObjectsV2Input, optFns ...func(*s3.Options)) (*s3.ListObjectsV2Output, error)
}

// findNamedObject is the key of the object directly under prefix that instanceID's
// credentials name ("<role id>:<instance id>" + ext), or "" when there is none.
func findNamedObject(ctx context.Context, api s3Lister, bucket, prefix, ext, instanceID string) (string, error) {
	suffix := ":" + instanceID + ext
	p := s3.NewListObjectsV2Paginator(api, &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String(prefix)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return "", fmt.Errorf("listing s3://%s/%s: %w", bucket, prefix, err)
		}
		for _, obj := range page.Contents {
			if k := aws.ToString(obj.Key); strings.HasSuffix(k, suffix) && !strings.Contains(strings.TrimPrefix(k, prefix), "/") {
				return k, nil
			}
		}
	}
	return "", nil
}

// logPrefix is where the logs of one item's instances live: under logs/, the one prefix
// the bucket's lifecycle rule expires (params, results and exit records are kept).
func logPrefix(sweepID string, index int) string {
	return fmt.Sprintf("logs/%s/%d/", sweepID, index)
}

// parseExitReport reads a record's body; a record that is not one (too big, not JSON,
// no exit code, a code outside 0..255) counts as a report of nothing: the item ends
// unknown, as with no report at all.
func parseExitReport(raw []byte) *exitReport {
	var r exitReport
	if len(raw) > maxExitReportBytes || json.Unmarshal(raw, &r) != nil || r.ExitCode == nil || *r.ExitCode < 0 || *r.ExitCode > 255 {
		return &exitReport{}
	}
	if r.RanSeconds < 0 || math.IsNaN(r.RanSeconds) || r.RanSeconds > 366*24*3600 {
		r.RanSeconds = 0
	}
	return &r
}
