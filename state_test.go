package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

var testEpoch = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func testSweep(id, user string, created time.Time) *sweep {
	return &sweep{
		SweepID:       id,
		SweepName:     "sweep-" + id,
		UserID:        user,
		CreatedAt:     formatRecordTime(created),
		S3Bucket:      "bucket",
		S3ParamsKey:   paramsKey(id),
		MaxConcurrent: 2,
		LaunchDelay:   "0s",
		PollInterval:  "10s",
		TotalParams:   4,
		Region:        "us-east-1",
		AWSAccountID:  "000000000000",
		Status:        statusRunning,
		Counts:        counts{Pending: 4},
	}
}

func TestStoreCreateLoadSave(t *testing.T) {
	st := newTestStore(t)
	ctx := context.Background()
	id := uniqueName("sw")
	s := testSweep(id, "arn:user/a", testEpoch)
	s.Alive = []aliveInstance{{Index: 0, Attempt: 1, Region: "us-east-1", InstanceType: "t3.micro",
		ClientToken: "tok", ReservedAt: testEpoch.Add(time.Second)}}
	if err := st.createSweep(ctx, s); err != nil {
		t.Fatalf("create: %v", err)
	}
	if s.Version != 1 {
		t.Errorf("version after create = %d, want 1", s.Version)
	}
	if err := st.createSweep(ctx, testSweep(id, "arn:user/b", testEpoch)); !errors.Is(err, errSweepExists) {
		t.Fatalf("second create: got %v, want errSweepExists", err)
	}
	if _, err := st.loadSweep(ctx, uniqueName("missing")); !errors.Is(err, errSweepNotFound) {
		t.Fatalf("load unknown: got %v, want errSweepNotFound", err)
	}

	got, err := st.loadSweep(ctx, id)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	if got.UserID != "arn:user/a" || got.Version != 1 || got.Counts.Pending != 4 || len(got.Alive) != 1 {
		t.Fatalf("loaded record = %+v", got)
	}
	// Zero times stay zero and are absent from the item; set ones round-trip.
	if !got.LeaseExpiresAt.IsZero() || !got.LeaseRenewedAt.IsZero() || !got.Alive[0].LaunchedAt.IsZero() {
		t.Errorf("zero times did not round-trip as zero: %+v", got)
	}
	if !got.Alive[0].ReservedAt.Equal(testEpoch.Add(time.Second)) {
		t.Errorf("reserved_at = %v, want %v", got.Alive[0].ReservedAt, testEpoch.Add(time.Second))
	}
	raw, err := st.db.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(st.table),
		Key: map[string]types.AttributeValue{"sweep_id": &types.AttributeValueMemberS{Value: id}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"lease_expires_at", "lease_renewed_at", "lease_owner"} {
		if _, ok := raw.Item[name]; ok {
			t.Errorf("item has %s although it is unset", name)
		}
	}

	// Two readers of version 1: the first save wins, the second is stale.
	other, err := st.loadSweep(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	got.NextToLaunch = 1
	if err := st.saveSweep(ctx, got); err != nil {
		t.Fatalf("save: %v", err)
	}
	if got.Version != 2 {
		t.Errorf("version after save = %d, want 2", got.Version)
	}
	other.Launched = 7
	if err := st.saveSweep(ctx, other); !errors.Is(err, errStaleVersion) {
		t.Fatalf("stale save: got %v, want errStaleVersion", err)
	}
	other, err = st.loadSweep(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	other.Launched = 7
	if err := st.saveSweep(ctx, other); err != nil {
		t.Fatalf("save after reload: %v", err)
	}
	final, err := st.loadSweep(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if final.Version != 3 || final.NextToLaunch != 1 || final.Launched != 7 {
		t.Errorf("final record: version %d next %d launched %d, want 3 1 7", final.Version, final.NextToLaunch, final.Launched)
	}
	// Saving a record that does not exist is refused too (the reload then says not found).
	ghost := testSweep(uniqueName("ghost"), "arn:user/a", testEpoch)
	ghost.Version = 1
	if err := st.saveSweep(ctx, ghost); !errors.Is(err, errStaleVersion) {
		t.Errorf("save of a missing record: got %v, want errStaleVersion", err)
	}
}

func TestStoreRequestCancelFencesHolder(t *testing.T) {
	st := newTestStore(t)
	ctx := context.Background()
	id := uniqueName("sw")
	if err := st.createSweep(ctx, testSweep(id, "arn:user/a", testEpoch)); err != nil {
		t.Fatal(err)
	}
	holder, err := st.loadSweep(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	cancelled, err := st.requestCancel(ctx, id)
	if err != nil {
		t.Fatalf("requestCancel: %v", err)
	}
	if !cancelled.CancelRequested || cancelled.Version != holder.Version+1 || cancelled.SweepName != holder.SweepName {
		t.Errorf("requestCancel returned %+v", cancelled)
	}
	holder.NextToLaunch = 2
	if err := st.saveSweep(ctx, holder); !errors.Is(err, errStaleVersion) {
		t.Fatalf("holder's save after cancel: got %v, want errStaleVersion", err)
	}
	reloaded, err := st.loadSweep(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if !reloaded.CancelRequested || reloaded.NextToLaunch != 0 {
		t.Errorf("reloaded record: cancel_requested %v next_to_launch %d", reloaded.CancelRequested, reloaded.NextToLaunch)
	}
	if _, err := st.requestCancel(ctx, uniqueName("missing")); !errors.Is(err, errSweepNotFound) {
		t.Errorf("requestCancel of unknown id: got %v, want errSweepNotFound", err)
	}
}

func TestLeaseOneOfTwoContendersWins(t *testing.T) {
	st := newTestStore(t)
	ctx := context.Background()
	id := uniqueName("sw")
	if err := st.createSweep(ctx, testSweep(id, "arn:user/a", testEpoch)); err != nil {
		t.Fatal(err)
	}
	now := testEpoch.Add(time.Minute)
	owners := []string{"inv-a", "inv-b"}
	errs := make([]error, len(owners))
	var start, done sync.WaitGroup
	start.Add(1)
	for i, owner := range owners {
		done.Add(1)
		go func() {
			defer done.Done()
			start.Wait()
			_, errs[i] = acquireLease(ctx, st, id, owner, now, defaultLeaseTTL, nil)
		}()
	}
	start.Done()
	done.Wait()

	winners := 0
	for i, err := range errs {
		switch {
		case err == nil:
			winners++
		case !errors.Is(err, errLeaseHeld):
			t.Errorf("%s: got %v, want nil or errLeaseHeld", owners[i], err)
		}
	}
	if winners != 1 {
		t.Fatalf("winners = %d (errors %v), want exactly 1", winners, errs)
	}
	s, err := st.loadSweep(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if (s.LeaseOwner == "inv-a") != (errs[0] == nil) || !s.LeaseExpiresAt.Equal(now.Add(defaultLeaseTTL)) {
		t.Errorf("stored lease: owner %q expires %v, errors %v", s.LeaseOwner, s.LeaseExpiresAt, errs)
	}
}

func TestLeaseWaitTakeoverRelease(t *testing.T) {
	st := newTestStore(t)
	ctx := context.Background()
	id := uniqueName("sw")
	if err := st.createSweep(ctx, testSweep(id, "arn:user/a", testEpoch)); err != nil {
		t.Fatal(err)
	}
	const ttl = 60 * time.Second
	t0 := testEpoch.Add(time.Hour)
	a, err := acquireLease(ctx, st, id, "inv-a", t0, ttl, nil)
	if err != nil {
		t.Fatalf("first acquire: %v", err)
	}
	// The holder itself may take its lease again.
	if _, err := acquireLease(ctx, st, id, "inv-a", t0.Add(time.Second), ttl, nil); err != nil {
		t.Fatalf("holder re-acquires: %v", err)
	}

	// However late the contender's clock says it is, a held lease is not taken without
	// the caller's judgement: whether the holder is alive is watched on the caller's clock.
	for _, at := range []time.Duration{15 * time.Second, time.Hour} {
		_, err := acquireLease(ctx, st, id, "inv-b", t0.Add(at), ttl, nil)
		var held *leaseHeldError
		if !errors.As(err, &held) || !errors.Is(err, errLeaseHeld) {
			t.Fatalf("a held lease at +%v: got %v, want *leaseHeldError", at, err)
		}
		if want := (leaseMark{Owner: "inv-a", RenewedAt: t0.Add(time.Second)}); held.mark != want || held.length != ttl {
			t.Fatalf("leaseHeldError = %+v, want mark %+v and length %v", held, want, ttl)
		}
	}
	// A takeover names the renewal it watched: another renewal is not taken over.
	other := leaseMark{Owner: "inv-a", RenewedAt: t0}
	if _, err := acquireLease(ctx, st, id, "inv-b", t0.Add(time.Hour), ttl, &other); !errors.Is(err, errLeaseHeld) {
		t.Fatalf("takeover of another renewal: got %v, want errLeaseHeld", err)
	}
	watched := leaseMark{Owner: "inv-a", RenewedAt: t0.Add(time.Second)}
	b, err := acquireLease(ctx, st, id, "inv-b", t0.Add(time.Hour), ttl, &watched)
	if err != nil {
		t.Fatalf("takeover after expiry: %v", err)
	}
	if b.LeaseOwner != "inv-b" {
		t.Fatalf("owner after takeover = %q", b.LeaseOwner)
	}

	// The old holder's release must not clear the new holder's lease.
	if err := releaseLease(ctx, st, a, "inv-a"); err != nil {
		t.Fatalf("old holder's release: %v", err)
	}
	s, err := st.loadSweep(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if s.LeaseOwner != "inv-b" {
		t.Fatalf("after the old holder's release, owner = %q, want inv-b", s.LeaseOwner)
	}

	// The new holder renews and saves, then releases a stale copy: reload and clear.
	stale := *b
	renewLease(b, "inv-b", t0.Add(time.Hour+5*time.Second), ttl)
	if err := st.saveSweep(ctx, b); err != nil {
		t.Fatalf("renew save: %v", err)
	}
	if err := releaseLease(ctx, st, &stale, "inv-b"); err != nil {
		t.Fatalf("release: %v", err)
	}
	s, err = st.loadSweep(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if s.LeaseOwner != "" || !s.LeaseExpiresAt.IsZero() || s.Version != stale.Version {
		t.Errorf("after release: owner %q expires %v version %d (caller's copy %d)", s.LeaseOwner, s.LeaseExpiresAt, s.Version, stale.Version)
	}
	if _, err := acquireLease(ctx, st, id, "inv-c", t0.Add(time.Hour+6*time.Second), ttl, nil); err != nil {
		t.Errorf("acquire after release: %v", err)
	}
}

func TestPutInstanceKeepsLaterAttempt(t *testing.T) {
	st := newTestStore(t)
	st.pageLimit = 3 // several Query pages
	ctx := context.Background()
	id := uniqueName("sw")
	put := func(index, attempt int, state string) {
		t.Helper()
		err := st.putInstance(ctx, &instanceRecord{SweepID: id, Index: index, Attempt: attempt, State: state,
			InstanceID: fmt.Sprintf("i-%d-%d", index, attempt), Region: "us-east-1", InstanceType: "t3.micro",
			LaunchedAt: testEpoch})
		if err != nil {
			t.Fatalf("put %d/%d: %v", index, attempt, err)
		}
	}
	put(4, 2, "running")
	put(4, 1, "terminated") // late news of attempt 1: dropped
	for i := range 8 {
		if i != 4 {
			put(i, 1, "running")
		}
	}
	recs, err := st.listInstances(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 8 {
		t.Fatalf("listInstances returned %d items, want 8", len(recs))
	}
	for i, r := range recs {
		if r.Index != i {
			t.Errorf("item %d has index %d: not in index order", i, r.Index)
		}
	}
	if r := recs[4]; r.Attempt != 2 || r.State != "running" || r.InstanceID != "i-4-2" {
		t.Errorf("index 4 = %+v, want attempt 2 running", r)
	}
	if !recs[0].TerminatedAt.IsZero() || !recs[0].LaunchedAt.Equal(testEpoch) {
		t.Errorf("times did not round-trip: %+v", recs[0])
	}

	put(4, 2, "terminated") // the same attempt may update its item
	put(5, 3, "pending")    // a later attempt replaces an earlier one
	recs, err = st.listInstances(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if recs[4].State != "terminated" || recs[5].Attempt != 3 {
		t.Errorf("after updates: index 4 %+v, index 5 %+v", recs[4], recs[5])
	}
	other, err := st.listInstances(ctx, uniqueName("none"))
	if err != nil || len(other) != 0 {
		t.Errorf("another sweep's instances: %v, %v", other, err)
	}
}

func TestListSweepsNewestFirstAcrossPages(t *testing.T) {
	st := newTestStore(t)
	ctx := context.Background()
	user, other := "arn:aws:iam::000000000000:user/"+uniqueName("u"), "arn:aws:iam::000000000000:user/"+uniqueName("o")
	var want, wantDone []string // newest first
	for i := range 25 {
		s := testSweep(fmt.Sprintf("%s-%02d", uniqueName("sw"), i), user, testEpoch.Add(time.Duration(i)*time.Minute))
		if i%3 == 0 {
			s.Status = statusCompleted
			wantDone = append([]string{s.SweepID}, wantDone...)
		}
		want = append([]string{s.SweepID}, want...)
		if err := st.createSweep(ctx, s); err != nil {
			t.Fatal(err)
		}
		// Another user's sweeps, interleaved in time, must never appear.
		if i%5 == 0 {
			if err := st.createSweep(ctx, testSweep(uniqueName("other"), other, testEpoch.Add(time.Duration(i)*time.Minute+time.Second))); err != nil {
				t.Fatal(err)
			}
		}
	}

	pages := func(status string, limit int) ([]string, []int) {
		t.Helper()
		var ids []string
		var sizes []int
		tok := ""
		for range 10 {
			got, next, err := st.listSweeps(ctx, user, status, limit, tok)
			if err != nil {
				t.Fatalf("listSweeps(%q, %d): %v", status, limit, err)
			}
			sizes = append(sizes, len(got))
			for _, s := range got {
				if s.UserID != user || (status != "" && s.Status != status) {
					t.Errorf("listed a sweep of user %s status %s", s.UserID, s.Status)
				}
				ids = append(ids, s.SweepID)
			}
			if next == "" {
				return ids, sizes
			}
			tok = next
		}
		t.Fatalf("listSweeps(%q, %d) did not end after 10 pages", status, limit)
		return nil, nil
	}

	ids, sizes := pages("", 10)
	if fmt.Sprint(sizes) != "[10 10 5]" || fmt.Sprint(ids) != fmt.Sprint(want) {
		t.Errorf("unfiltered: page sizes %v, ids\n got %v\nwant %v", sizes, ids, want)
	}
	// 9 completed sweeps, 4 a page, with small DynamoDB pages so the filter
	// spans several reads per page.
	st.pageLimit = 3
	ids, sizes = pages(statusCompleted, 4)
	if fmt.Sprint(sizes) != "[4 4 1]" || fmt.Sprint(ids) != fmt.Sprint(wantDone) {
		t.Errorf("status filter: page sizes %v, ids\n got %v\nwant %v", sizes, ids, wantDone)
	}
	st.pageLimit = 0
	all, next, err := st.listSweeps(ctx, user, "", 0, "")
	if err != nil || len(all) != 25 || next != "" {
		t.Errorf("no limit: %d sweeps, next %q, err %v", len(all), next, err)
	}
	if _, _, err := st.listSweeps(ctx, user, "", 10, "not-a-token"); err == nil {
		t.Error("a bad page token was accepted")
	}
}

// fullSweep is a realistic record at max_concurrent 50 with total items in all.
func fullSweep(id string, total int) *sweep {
	s := testSweep(id, "arn:aws:iam::123456789012:user/researcher", testEpoch)
	s.SweepName = "hyperparameter-sweep-resnet50-lr-batch"
	s.S3Bucket = "spawn-sweeps-123456789012-us-east-1"
	s.MaxConcurrent = 50
	s.TotalParams = total
	s.NextToLaunch = total - 50
	s.Launched = total - 50
	s.Failed = total / 100
	s.Counts = counts{Running: 50, Succeeded: total - 50 - total/100 - 3, Failed: total / 100, Expired: 1, Unknown: 2}
	s.ParamsChecksum = sha256Hex([]byte(id))
	s.LeaseOwner = "2025/03/01/[$LATEST]0123456789abcdef0123456789abcdef"
	s.LeaseExpiresAt = testEpoch.Add(time.Minute)
	s.LeaseRenewedAt = testEpoch
	s.EstimatedCostUSD = 1234.5678
	for i := range 50 {
		at := testEpoch.Add(time.Duration(i) * time.Second)
		s.Alive = append(s.Alive, aliveInstance{
			Index:        total - 50 + i,
			Attempt:      1,
			InstanceID:   fmt.Sprintf("i-0%016x", 0xabc000+i),
			Region:       "us-east-1",
			InstanceType: "c5.2xlarge",
			ClientToken:  fmt.Sprintf("%s-%d-1", id, total-50+i),
			Spot:         i%2 == 0,
			ReservedAt:   at,
			LaunchedAt:   at.Add(2 * time.Second),
			Deadline:     at.Add(4 * time.Hour),
			PriceHourly:  0.34,
		})
	}
	return s
}

func TestSweepRecordSizeBounded(t *testing.T) {
	st := newTestStore(t)
	ctx := context.Background()
	s := fullSweep(uniqueName("sw"), 10_000)
	if err := st.createSweep(ctx, s); err != nil {
		t.Fatal(err)
	}
	if err := st.saveSweep(ctx, s); err != nil {
		t.Fatal(err)
	}
	item, err := marshalItem(s)
	if err != nil {
		t.Fatal(err)
	}
	size := itemSize(item)
	t.Logf("record of a 10,000-item sweep at max_concurrent 50: %d bytes", size)
	if size >= 40*1024 {
		t.Errorf("record is %d bytes, want under 40 KB", size)
	}
	got, err := st.loadSweep(ctx, s.SweepID)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Alive) != 50 || got.Counts != s.Counts || !got.Alive[49].Deadline.Equal(s.Alive[49].Deadline) {
		t.Errorf("the full record did not round-trip")
	}
}

func TestItemSize(t *testing.T) {
	for _, tc := range []struct {
		name string
		item map[string]types.AttributeValue
		want int
	}{
		{"string", map[string]types.AttributeValue{"ab": &types.AttributeValueMemberS{Value: "héllo"}}, 2 + 6},
		{"number", map[string]types.AttributeValue{"n": &types.AttributeValueMemberN{Value: "12345"}}, 1 + 4},
		{"number zeros trimmed", map[string]types.AttributeValue{"n": &types.AttributeValueMemberN{Value: "-0012.500"}}, 1 + 3},
		{"inner zeros count", map[string]types.AttributeValue{"n": &types.AttributeValueMemberN{Value: "-1000.5"}}, 1 + 4},
		{"bool and null", map[string]types.AttributeValue{
			"b": &types.AttributeValueMemberBOOL{Value: true}, "z": &types.AttributeValueMemberNULL{Value: true}}, 2 + 2},
		{"list", map[string]types.AttributeValue{"l": &types.AttributeValueMemberL{Value: []types.AttributeValue{
			&types.AttributeValueMemberS{Value: "abc"}, &types.AttributeValueMemberN{Value: "7"}}}}, 1 + 3 + (1 + 3) + (1 + 2)},
		{"map", map[string]types.AttributeValue{"m": &types.AttributeValueMemberM{Value: map[string]types.AttributeValue{
			"k": &types.AttributeValueMemberS{Value: "vv"}}}}, 1 + 3 + 1 + 1 + 2},
		{"string set", map[string]types.AttributeValue{"s": &types.AttributeValueMemberSS{Value: []string{"a", "bc"}}}, 1 + 3},
	} {
		if got := itemSize(tc.item); got != tc.want {
			t.Errorf("%s: itemSize = %d, want %d", tc.name, got, tc.want)
		}
	}
}

func newTestParamsStore(t *testing.T) (*paramsStore, *countingS3, *s3.Client) {
	t.Helper()
	a := newTestAWS(t)
	client := newS3Client(a.cfg, "")
	bucket := createTestBucket(t, a, "params")
	c := &countingS3{s3API: client}
	return newParamsStore(c, bucket, t.TempDir()), c, client
}

func TestParamsRoundTripAndCache(t *testing.T) {
	p, calls, client := newTestParamsStore(t)
	ctx := context.Background()
	id := uniqueName("sw")
	raw := []byte(`{"defaults": {"instance_type": "t3.micro"}, "params": [{"lr": 0.1}, {"lr": 0.01}]}`)
	key, sum, err := p.uploadParams(ctx, id, raw)
	if err != nil {
		t.Fatalf("upload: %v", err)
	}
	if key != "sweeps/"+id+"/params.json" || sum != sha256Hex(raw) {
		t.Errorf("upload returned %q %q", key, sum)
	}
	head, err := client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(p.bucket), Key: aws.String(key)})
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToString(head.ContentType) != "application/json" || head.Metadata[paramsChecksumMeta] != sum {
		t.Errorf("object content type %q, metadata %v", aws.ToString(head.ContentType), head.Metadata)
	}
	// A retried upload of the same bytes succeeds.
	if _, _, err := p.uploadParams(ctx, id, raw); err != nil {
		t.Errorf("repeated upload of the same bytes: %v", err)
	}

	got, err := p.downloadParams(ctx, key, sum, false)
	if err != nil || !bytes.Equal(got, raw) {
		t.Fatalf("download: %q, %v", got, err)
	}
	if n := calls.gets.Load(); n != 1 {
		t.Fatalf("first download made %d GetObject calls, want 1", n)
	}
	got, err = p.downloadParams(ctx, key, sum, false)
	if err != nil || !bytes.Equal(got, raw) {
		t.Fatalf("cached download: %q, %v", got, err)
	}
	if n := calls.gets.Load(); n != 1 {
		t.Errorf("cached download called S3: %d GetObject calls, want 1", n)
	}

	// A corrupted cache file is ignored and replaced.
	cache := p.cachePath(key, sum)
	if err := os.WriteFile(cache, []byte(`{"params": []}`), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err = p.downloadParams(ctx, key, sum, false)
	if err != nil || !bytes.Equal(got, raw) {
		t.Fatalf("download over a corrupt cache: %q, %v", got, err)
	}
	if n := calls.gets.Load(); n != 2 {
		t.Errorf("corrupt cache: %d GetObject calls, want 2", n)
	}
	if b, err := os.ReadFile(cache); err != nil || !bytes.Equal(b, raw) {
		t.Errorf("the corrupt cache file was not replaced: %q, %v", b, err)
	}
	if _, err := p.downloadParams(ctx, key, sum, true); err != nil || calls.gets.Load() != 3 {
		t.Errorf("forced download: %v, %d GetObject calls, want 3", err, calls.gets.Load())
	}
	if entries, _ := filepath.Glob(filepath.Join(filepath.Dir(cache), ".params-*")); len(entries) != 0 {
		t.Errorf("temporary cache files left behind: %v", entries)
	}

	// Bytes that do not match the record's checksum are refused, cache or not.
	if _, err := p.downloadParams(ctx, key, sha256Hex([]byte("other")), false); err == nil {
		t.Error("a download that does not match the record's checksum was accepted")
	}
}

func TestParamsUploadRefusesOverwrite(t *testing.T) {
	p, _, client := newTestParamsStore(t)
	ctx := context.Background()
	id := uniqueName("sw")
	first := []byte(`{"params": [{"a": 1}]}`)
	key, _, err := p.uploadParams(ctx, id, first)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = p.uploadParams(ctx, id, []byte(`{"params": [{"a": 2}]}`))
	if err == nil {
		out, gerr := client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(p.bucket), Key: aws.String(key)})
		if gerr != nil {
			t.Fatal(gerr)
		}
		b, _ := io.ReadAll(out.Body)
		out.Body.Close()
		if !bytes.Equal(b, first) {
			t.Skipf("backend %s ignores PutObject If-None-Match: the second upload replaced the object", newTestAWS(t).backend.name)
		}
		t.Fatal("a second upload with other bytes reported success although it was not written")
	}
	out, err := client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(p.bucket), Key: aws.String(key)})
	if err != nil {
		t.Fatal(err)
	}
	defer out.Body.Close()
	if b, _ := io.ReadAll(out.Body); !bytes.Equal(b, first) {
		t.Errorf("object after refused upload = %q, want the first upload", b)
	}
}

func BenchmarkSaveSweep(b *testing.B) {
	st := newTestStore(b)
	ctx := context.Background()
	for _, total := range []int{1_000, 10_000, 100_000} {
		b.Run(fmt.Sprintf("items=%d", total), func(b *testing.B) {
			s := fullSweep(uniqueName("bench"), total)
			if err := st.createSweep(ctx, s); err != nil {
				b.Fatal(err)
			}
			c := &countingDynamo{dynamoAPI: st.db}
			bst := *st
			bst.db = c
			b.ResetTimer()
			for i := range b.N {
				s.Counts.Succeeded++
				s.Alive[i%50].LaunchedAt = testEpoch.Add(time.Duration(i) * time.Second)
				if err := bst.saveSweep(ctx, s); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(c.bytes)/float64(c.puts), "bytes_written/op")
		})
	}
}

func TestDefaultParamsCacheDir(t *testing.T) {
	t.Setenv("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001")
	if got := defaultParamsCacheDir(); got != "/tmp/spawn-cache" {
		t.Errorf("in Lambda: cache dir %q, want /tmp/spawn-cache", got)
	}
	t.Setenv("AWS_LAMBDA_RUNTIME_API", "")
	t.Setenv("XDG_CACHE_HOME", "/var/cache/someone")
	t.Setenv("HOME", "/home/someone")
	if runtime.GOOS != "linux" {
		t.Skip("the user cache directory's rule checked here is Linux's (XDG_CACHE_HOME)")
	}
	want := "/var/cache/someone/spawn"
	if got := defaultParamsCacheDir(); got != want {
		t.Errorf("on a laptop: cache dir %q, want %q", got, want)
	}
}

func TestRecordJSONOmitsZeroTimes(t *testing.T) {
	b, err := json.Marshal(testSweep("sw", "arn:user/a", testEpoch))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, []byte("0001-01-01")) || bytes.Contains(b, []byte("lease_expires_at")) {
		t.Errorf("JSON of a record without a lease shows zero times: %s", b)
	}
}
