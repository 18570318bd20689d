package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// An instance reports how its command ended twice: an exit record in S3, then the
// spawn:exit-code tag. The tag is cheap to read (DescribeInstances returns it) but EC2
// shows it seconds late and forgets it with the instance about an hour after it ends;
// the exit record lasts as long as the sweep's objects. docs/design.md, promise 5.

// exitReportPrefix is where the exit records of one launch attempt of an item live.
// The record's name is the writer's aws:userid ("<role id>:<instance id>" for an
// instance role), so the instance role may write only objects that name the instance
// itself, and the engine believes a record only under the name of the instance it
// expects (or, for an attempt whose instance id it never learned, the one record there).
func exitReportPrefix(sweepID string, index, attempt int) string {
	return fmt.Sprintf("sweeps/%s/exit/%d/%d/", sweepID, index, attempt)
}

// resultPrefix is where the result objects (the metrics the command wrote to
// SPAWN_RESULT_FILE) of one item's instances live, named like exit records by the
// writer's aws:userid.
func resultPrefix(sweepID string, index int) string {
	return fmt.Sprintf("sweeps/%s/results/%d/", sweepID, index)
}

// exitReportKey is the record of the instance whose credentials have userID.
func exitReportKey(sweepID string, index, attempt int, userID string) string {
	return exitReportPrefix(sweepID, index, attempt) + userID + ".json"
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
func readExitReport(ctx context.Context, api s3Reports, bucket, sweepID string, index, attempt int, instanceID string) (*exitReport, error) {
	if instanceID == "" {
		return nil, nil
	}
	raw, err := readNamedObject(ctx, api, bucket, exitReportPrefix(sweepID, index, attempt), instanceID, maxExitReportBytes, "exit record")
	if err != nil || raw == nil {
		return nil, err
	}
	return parseExitReport(raw), nil
}

// readNamedObject reads (at most limit+1 bytes of) the object under prefix that
// instanceID's credentials name: nil with no error when there is none (yet).
func readNamedObject(ctx context.Context, api s3Reports, bucket, prefix, instanceID string, limit int, what string) ([]byte, error) {
	key, err := findNamedObject(ctx, api, bucket, prefix, ".json", instanceID)
	if err != nil || key == "" {
		return nil, err
	}
	out, err := api.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	if err != nil {
		if apiErrorCode(err) == "NoSuchKey" {
			return nil, nil
		}
		return nil, fmt.Errorf("reading %s %s: %w", what, key, err)
	}
	defer out.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(out.Body, int64(limit)+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s %s: %w", what, key, err)
	}
	return raw, nil
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

// exitReporter is the instance that left the one exit record of a launch attempt, or ""
// (none, or more than one: nothing is believed then). A launch whose answer was lost and
// whose instance EC2 forgot before anyone looked is known by it.
func exitReporter(ctx context.Context, api s3Lister, bucket, sweepID string, index, attempt int) (string, error) {
	prefix := exitReportPrefix(sweepID, index, attempt)
	out, err := api.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String(prefix), MaxKeys: aws.Int32(2)})
	if err != nil {
		return "", fmt.Errorf("listing s3://%s/%s: %w", bucket, prefix, err)
	}
	if len(out.Contents) != 1 {
		return "", nil
	}
	name := strings.TrimSuffix(strings.TrimPrefix(aws.ToString(out.Contents[0].Key), prefix), ".json")
	_, id, ok := strings.Cut(name, ":")
	if !ok || !strings.HasPrefix(id, "i-") || strings.ContainsAny(id, "/:") {
		return "", nil
	}
	return id, nil
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

// The result: a JSON object of metrics the command wrote to SPAWN_RESULT_FILE
// ({"loss": 0.12, "acc": 0.97}). The engine keeps its numbers in the instance item, so
// it is bounded well below DynamoDB's 400 KB item: at most maxResultMetrics names of at
// most maxMetricNameBytes each.
const (
	maxResultBytes     = 64 << 10
	maxResultMetrics   = 100
	maxMetricNameBytes = 128
	maxResultProblem   = 400 // bytes of ResultError
)

// itemResult is what the engine keeps of a result: its numbers, and why the rest (or
// all of it) could not be used.
type itemResult struct {
	Metrics map[string]float64
	Problem string
}

// readResult finds and reads the result instanceID wrote for item index: nil with no
// error when there is none.
func readResult(ctx context.Context, api s3Reports, bucket, sweepID string, index int, instanceID string) (*itemResult, error) {
	if instanceID == "" {
		return nil, nil
	}
	raw, err := readNamedObject(ctx, api, bucket, resultPrefix(sweepID, index), instanceID, maxResultBytes, "result")
	if err != nil || raw == nil {
		return nil, err
	}
	r := parseResult(raw)
	return &r, nil
}

// parseResult keeps the finite numbers of a result object and says what it dropped: a
// result that is too big or not a JSON object gives no metrics at all.
func parseResult(raw []byte) itemResult {
	if len(raw) > maxResultBytes {
		return itemResult{Problem: fmt.Sprintf("the result is over %d KB: write a JSON object of a few metrics", maxResultBytes>>10)}
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
		return itemResult{Problem: `the result is not a JSON object: write one such as {"loss": 0.12}`}
	}
	names := make([]string, 0, len(obj))
	for k := range obj {
		names = append(names, k)
	}
	sort.Strings(names)
	r := itemResult{Metrics: map[string]float64{}}
	var bad, badNames, over []string
	for _, k := range names {
		var v *float64 // null leaves it nil
		switch {
		case !metricNameOK(k):
			badNames = append(badNames, strconv.Quote(ellipsizeBytes(k, 40)))
		case json.Unmarshal(obj[k], &v) != nil || v == nil || math.IsNaN(*v) || math.IsInf(*v, 0):
			bad = append(bad, strconv.Quote(k))
		case len(r.Metrics) >= maxResultMetrics:
			over = append(over, k)
		default:
			r.Metrics[k] = *v
		}
	}
	var problems []string
	if len(bad) > 0 {
		problems = append(problems, "dropped, not finite numbers: "+strings.Join(bad, ", "))
	}
	if len(badNames) > 0 {
		problems = append(problems, fmt.Sprintf("dropped, not metric names of 1 to %d bytes without control characters: %s", maxMetricNameBytes, strings.Join(badNames, ", ")))
	}
	if len(over) > 0 {
		problems = append(problems, fmt.Sprintf("dropped %d metrics past the first %d", len(over), maxResultMetrics))
	}
	if len(r.Metrics) == 0 {
		r.Metrics = nil
	}
	if len(problems) > 0 {
		r.Problem = ellipsizeBytes(strings.Join(problems, "; "), maxResultProblem)
	}
	return r
}

// metricNameOK: a name fits the instance item and prints on one line.
func metricNameOK(k string) bool {
	if k == "" || len(k) > maxMetricNameBytes || !utf8.ValidString(k) {
		return false
	}
	return !strings.ContainsFunc(k, unicode.IsControl)
}

// ellipsizeBytes cuts s to at most n bytes (on a rune boundary), marking the cut with "…".
func ellipsizeBytes(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n - len("…")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
