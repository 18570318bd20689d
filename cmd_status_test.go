package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sts"
)

// statusEnv is a deployment's tables and bucket on the test backend, the caller's
// identity, and the flags and environment that point the CLI at them.
type statusEnv struct {
	a                        *testAWS
	db                       *dynamodb.Client
	store                    *dynamoStore
	table, instTable, bucket string
	userID                   string
	env                      map[string]string
	flags                    []string
}

func newStatusEnv(t *testing.T) *statusEnv {
	t.Helper()
	a := newTestAWS(t)
	ctx := context.Background()
	e := &statusEnv{a: a, db: dynamodb.NewFromConfig(a.cfg), bucket: uniqueName("spawn-logs")}
	e.table, e.instTable = createSweepTables(t, a)
	e.store = newDynamoStore(e.db, e.table, e.instTable)
	id, err := sts.NewFromConfig(a.cfg).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil {
		t.Fatalf("sts: %v", err)
	}
	e.userID = aws.ToString(id.Arn)
	e.env = map[string]string{
		"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_SESSION_TOKEN": "", "AWS_REGION": "us-east-1",
		"AWS_PROFILE": "", "AWS_CONFIG_FILE": os.DevNull, "AWS_SHARED_CREDENTIALS_FILE": os.DevNull, "AWS_EC2_METADATA_DISABLED": "true",
		"NO_COLOR": "1",
	}
	e.flags = []string{"--endpoint-url", a.backend.endpoint, "--table", e.table, "--instances-table", e.instTable, "--bucket", e.bucket}
	return e
}

func (e *statusEnv) args(args ...string) []string { return append(args, e.flags...) }

// putSweep creates a RUNNING sweep of total items owned by the caller.
func (e *statusEnv) putSweep(t *testing.T, total int, created time.Time) *sweep {
	t.Helper()
	s := &sweep{
		SweepID: uniqueName("sw"), SweepName: "status-test", UserID: e.userID, CreatedAt: formatRecordTime(created),
		S3ParamsKey: "p", MaxConcurrent: 2, LaunchDelay: "0s", PollInterval: "10s", TotalParams: total,
		Region: "us-east-1", AWSAccountID: strings.Split(e.userID, ":")[4], Status: statusRunning, // the caller's account
	}
	if err := e.store.createSweep(context.Background(), s); err != nil {
		t.Fatalf("create sweep: %v", err)
	}
	return s
}

// advance applies change to the stored record, as the orchestrator would.
func (e *statusEnv) advance(t *testing.T, id string, change func(s *sweep)) {
	t.Helper()
	ctx := context.Background()
	for {
		s, err := e.store.loadSweep(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		change(s)
		err = e.store.saveSweep(ctx, s)
		if err == nil {
			return
		}
		if !errors.Is(err, errStaleVersion) {
			t.Fatal(err)
		}
	}
}

func TestStatusCommandOnEmulator(t *testing.T) {
	e := newStatusEnv(t)
	ctx := context.Background()
	s := e.putSweep(t, 4, time.Now().Add(-time.Hour))
	e.advance(t, s.SweepID, func(s *sweep) {
		s.Counts = counts{Succeeded: 1, Failed: 1}
		s.Alive = []aliveInstance{{Index: 2, Attempt: 1, InstanceID: "i-0002", Region: "us-east-1", InstanceType: "t3.micro", LaunchedAt: time.Now().Add(-30 * time.Minute), PriceHourly: 0.0104}}
	})
	for i, o := range []string{outcomeSucceeded, outcomeFailed} {
		rec := &instanceRecord{SweepID: s.SweepID, Index: i, InstanceID: fmt.Sprintf("i-000%d", i), Region: "us-east-1", InstanceType: "t3.micro",
			State: "terminated", Outcome: o, Attempt: 1, LaunchedAt: time.Now().Add(-time.Hour), TerminatedAt: time.Now().Add(-40 * time.Minute)}
		if o == outcomeFailed {
			rec.ErrorMessage = "command exited with code 2"
		}
		if err := e.store.putInstance(ctx, rec); err != nil {
			t.Fatal(err)
		}
	}

	out, errOut, code := runSpawn(t, e.env, e.args("status", s.SweepID)...)
	if code != 0 {
		t.Fatalf("status: exit %d, stderr %s", code, errOut)
	}
	for _, want := range []string{s.SweepID, "RUNNING", "2/4 done", "pending 1  running 1  succeeded 1  failed 1", "command exited with code 2", "i-0002"} {
		if !strings.Contains(out, want) {
			t.Errorf("status text has no %q:\n%s", want, out)
		}
	}
	assertFitsWidth(t, out)

	// --sweep-id with the flags after it, JSON: exactly one document on stdout.
	out, errOut, code = runSpawn(t, e.env, e.args("status", "--output", "json", "--sweep-id", s.SweepID)...)
	if code != 0 {
		t.Fatalf("status json: exit %d, stderr %s", code, errOut)
	}
	var doc struct {
		SweepID   string           `json:"sweep_id"`
		Counts    counts           `json:"counts"`
		Instances []statusInstance `json:"instances"`
		Cost      float64          `json:"estimated_cost_usd"`
	}
	dec := json.NewDecoder(strings.NewReader(out))
	if err := dec.Decode(&doc); err != nil || dec.More() {
		t.Fatalf("status json is not one document (%v): %s", err, out)
	}
	if doc.SweepID != s.SweepID || len(doc.Instances) != 3 || doc.Counts.Pending != 1 || doc.Counts.Running != 1 {
		t.Errorf("status json: %+v", doc)
	}
	// 2 ended × 20 min of t3.micro (table price) + 30 min of the running one so far.
	if min, max := 0.0104*(2.0/3+0.5)*0.99, 0.0104*(2.0/3+0.5)*1.05; doc.Cost < min || doc.Cost > max {
		t.Errorf("estimated_cost_usd %v, want about %v", doc.Cost, 0.0104*(2.0/3+0.5))
	}

	t.Run("errors", func(t *testing.T) {
		cases := []struct {
			name string
			args []string
			code int
			want string
		}{
			{"unknown sweep", e.args("status", "sw-nope"), exitRuntime, "sweep sw-nope not found in table " + e.table},
			{"no id", e.args("status"), exitUsage, "a sweep id is needed"},
			{"two ids", e.args("status", "a", "b"), exitUsage, `unexpected argument "b"`},
			{"watch json", e.args("status", s.SweepID, "--watch", "--output", "json"), exitUsage, "--watch draws a live text view"},
			{"no deployment", append(e.args("status", s.SweepID), "--table", "no-such-table-"+uniqueName("x")), exitRuntime, "no spawn deployment found in us-east-1 (table no-such-table-"},
			{"bad list status", e.args("list", "--status", "DONE"), exitUsage, `--status "DONE" is not a sweep status`},
			{"bad list token", e.args("list", "--next-token", "garbage"), exitUsage, "page token"},
			{"logs no index", e.args("logs", s.SweepID), exitUsage, "--index is needed"},
			{"logs out of range", e.args("logs", "--sweep-id", s.SweepID, "--index", "4"), exitUsage, "--index 4 is out of range: sweep " + s.SweepID + " has items 0 to 3"},
		}
		for _, c := range cases {
			out, errOut, code := runSpawn(t, e.env, c.args...)
			if msg, help, ok := usageError(errOut); ok && help == "run 'spawn "+c.args[0]+" --help'" {
				errOut = msg + "\n" // a usage error's second line names the help
			}
			if code != c.code || !strings.Contains(errOut, c.want) || strings.Count(strings.TrimSpace(errOut), "\n") > 0 || out != "" {
				t.Errorf("%s: exit %d (want %d), stdout %q, stderr %q (want one line with %q)", c.name, code, c.code, out, errOut, c.want)
			}
		}
		other := e.putSweep(t, 1, time.Now())
		e.advance(t, other.SweepID, func(s *sweep) { s.UserID = "arn:aws:iam::000000000000:user/someone-else" })
		_, errOut, code := runSpawn(t, e.env, e.args("status", other.SweepID)...)
		if code != exitRuntime || !strings.Contains(errOut, "sweep "+other.SweepID+" belongs to arn:aws:iam::000000000000:user/someone-else; you are "+e.userID) {
			t.Errorf("other user's sweep: exit %d, stderr %q", code, errOut)
		}
		// cancel and resume refuse it too, and say how to act anyway; nothing changes.
		for _, cmd := range []string{"cancel", "resume"} {
			_, errOut, code := runSpawn(t, e.env, e.args(cmd, other.SweepID)...)
			if code != exitRuntime || !strings.Contains(errOut, "belongs to arn:aws:iam::000000000000:user/someone-else") || !strings.Contains(errOut, "--force") {
				t.Errorf("%s of another identity's sweep: exit %d, stderr %q", cmd, code, errOut)
			}
		}
		if got, _ := e.store.loadSweep(context.Background(), other.SweepID); got.CancelRequested || got.Status != statusRunning {
			t.Errorf("a refused cancel changed the sweep: %+v", got)
		}
		if _, errOut, code := runSpawn(t, e.env, e.args("cancel", other.SweepID, "--force")...); code != 0 {
			t.Errorf("cancel --force of another identity's sweep: exit %d, stderr %q", code, errOut)
		}
	})
}

// TestStatusWaitExitCodes runs `status --wait` while the test drives the record to an
// end through the store, as the orchestrator would.
func TestStatusWaitExitCodes(t *testing.T) {
	e := newStatusEnv(t)
	for k, v := range e.env {
		t.Setenv(k, v)
	}
	cases := []struct {
		name     string
		end      func(s *sweep)
		wantCode int
	}{
		{"completed", func(s *sweep) { s.Status, s.Counts = statusCompleted, counts{Succeeded: 3} }, exitOK},
		{"completed with failed items", func(s *sweep) { s.Status, s.Counts = statusCompleted, counts{Succeeded: 2, Failed: 1} }, exitSweep},
		{"completed with an expired item", func(s *sweep) { s.Status, s.Counts = statusCompleted, counts{Succeeded: 2, Expired: 1} }, exitSweep},
		{"cancelled", func(s *sweep) {
			s.Status, s.CancelRequested, s.Counts = statusCancelled, true, counts{Succeeded: 1, Cancelled: 1}
		}, exitSweep},
		{"failed", func(s *sweep) { s.Status, s.ErrorMessage = statusFailed, "launch template refused" }, exitSweep},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := e.putSweep(t, 3, time.Now())
			clk, done, stdout, _ := runStepped(e.args("status", s.SweepID, "--wait", "--interval", "5s", "--output", "json"))
			// Progress first: --wait reads it and sleeps again. Then the end.
			clk.step(t, done, func() {
				e.advance(t, s.SweepID, func(s *sweep) { s.Counts = counts{Succeeded: 1}; s.Status = statusRunning })
			})
			clk.step(t, done, func() { e.advance(t, s.SweepID, c.end) })
			err := <-done
			if got := exitCode(err); got != c.wantCode {
				t.Errorf("exit %d, want %d (err %v)", got, c.wantCode, err)
			}
			var doc map[string]any
			if json.Unmarshal(stdout.Bytes(), &doc) != nil || doc["sweep_id"] != s.SweepID || !terminalStatus(fmt.Sprint(doc["status"])) {
				t.Errorf("final document: %s", stdout.String())
			}
		})
	}
}

// countingDynamoClient counts the calls that could list sweeps: a listing must Query
// the GSI, never Scan the table.
type countingDynamoClient struct {
	*dynamodb.Client
	queries, scans atomic.Int64
}

func (c *countingDynamoClient) Query(ctx context.Context, in *dynamodb.QueryInput, opts ...func(*dynamodb.Options)) (*dynamodb.QueryOutput, error) {
	c.queries.Add(1)
	return c.Client.Query(ctx, in, opts...)
}

func (c *countingDynamoClient) Scan(ctx context.Context, in *dynamodb.ScanInput, opts ...func(*dynamodb.Options)) (*dynamodb.ScanOutput, error) {
	c.scans.Add(1)
	return c.Client.Scan(ctx, in, opts...)
}

func TestListThousandSweepsNewestFirst(t *testing.T) {
	e := newStatusEnv(t)
	ctx := context.Background()
	const n = 1000
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	// Written in a shuffled order, so newest first cannot come from insertion order.
	order := rand.New(rand.NewPCG(1, 2)).Perm(n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 16)
	for _, i := range order {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			s := &sweep{SweepID: fmt.Sprintf("sw-list-%04d-%s", i, e.table), SweepName: fmt.Sprint(i), UserID: e.userID,
				CreatedAt: formatRecordTime(base.Add(time.Duration(i) * time.Minute)), TotalParams: 10, Status: statusCompleted, Region: "us-east-1",
				Counts: counts{Succeeded: 10}}
			if i%10 == 0 {
				s.Status = statusRunning
			}
			errs <- e.store.createSweep(ctx, s)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	// Another user's sweep must not show.
	if err := e.store.createSweep(ctx, &sweep{SweepID: uniqueName("sw-other"), UserID: "arn:aws:iam::000000000000:user/other", CreatedAt: formatRecordTime(base.Add(time.Hour * 9999)), Status: statusRunning}); err != nil {
		t.Fatal(err)
	}

	counter := &countingDynamoClient{Client: e.db}
	src := &sweepSource{d: &deployment{userID: e.userID, table: e.table, region: "us-east-1"}, store: newDynamoStore(counter, e.table, e.instTable), now: time.Now}
	var got []listEntry
	token, pages := "", 0
	for {
		doc, err := listPage(ctx, src, "", 100, token)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		got = append(got, doc.Sweeps...)
		if token = doc.NextToken; token == "" {
			break
		}
		if pages > n {
			t.Fatal("pagination does not end")
		}
	}
	if len(got) != n {
		t.Fatalf("listed %d sweeps over %d pages, want %d", len(got), pages, n)
	}
	for i, s := range got {
		if want := fmt.Sprintf("sw-list-%04d-%s", n-1-i, e.table); s.SweepID != want {
			t.Fatalf("position %d is %s, want %s (newest first)", i, s.SweepID, want)
		}
	}
	if counter.scans.Load() != 0 || counter.queries.Load() < int64(pages) {
		t.Errorf("%d scans and %d queries for %d pages: want 0 scans", counter.scans.Load(), counter.queries.Load(), pages)
	}
	t.Logf("1000 sweeps in %d pages, %d queries, %d scans", pages, counter.queries.Load(), counter.scans.Load())

	running, _ := listPage(ctx, src, statusRunning, 1000, "")
	if len(running.Sweeps) != n/10 || running.NextToken != "" {
		t.Errorf("--status RUNNING: %d sweeps (token %q), want %d", len(running.Sweeps), running.NextToken, n/10)
	}

	// The command: JSON page with a token that the next call accepts, and the text table.
	out, errOut, code := runSpawn(t, e.env, e.args("list", "--limit", "3", "--output", "json")...)
	var doc listDoc
	if code != 0 || json.Unmarshal([]byte(out), &doc) != nil || len(doc.Sweeps) != 3 || doc.NextToken == "" || doc.Sweeps[0].SweepID != got[0].SweepID {
		t.Fatalf("list json: exit %d, stderr %s, out %s", code, errOut, out)
	}
	out, errOut, code = runSpawn(t, e.env, e.args("list", "--limit", "3", "--next-token", doc.NextToken)...)
	if code != 0 || !strings.Contains(out, got[3].SweepID) || strings.Contains(out, got[2].SweepID) || !strings.Contains(out, "more: spawn list --next-token ") {
		t.Fatalf("list page 2: exit %d, stderr %s, out:\n%s", code, errOut, out)
	}
	assertFitsWidth(t, out[:strings.Index(out, "more: ")])
}

func TestLogsCommand(t *testing.T) {
	e := newStatusEnv(t)
	ctx := context.Background()
	s3c := newS3Client(e.a.cfg, "")
	if _, err := s3c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(e.bucket)}); err != nil {
		t.Fatal(err)
	}
	s := e.putSweep(t, 3, time.Now())
	body := "epoch 1 loss 0.93\nepoch 2 loss 0.41\n"
	// Item 1's latest attempt ran on i-0log1; an earlier attempt's instance left a log
	// too. Each log is named by its instance's credentials.
	if err := e.store.putInstance(ctx, &instanceRecord{SweepID: s.SweepID, Index: 1, InstanceID: "i-0log1", Attempt: 2,
		LaunchedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	for key, b := range map[string]string{
		logPrefix(s.SweepID, 1) + "AROAEXAMPLE:i-0log1.log": body,
		logPrefix(s.SweepID, 1) + "AROAEXAMPLE:i-0old1.log": "the first attempt's log\n",
	} {
		if _, err := s3c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(e.bucket), Key: aws.String(key), Body: strings.NewReader(b)}); err != nil {
			t.Fatal(err)
		}
	}
	out, errOut, code := runSpawn(t, e.env, e.args("logs", "--sweep-id", s.SweepID, "--index", "1")...)
	if code != 0 || out != body {
		t.Errorf("logs: exit %d, stderr %q, out %q", code, errOut, out)
	}
	out, errOut, code = runSpawn(t, e.env, e.args("logs", "--sweep-id", s.SweepID, "--index", "2")...)
	want := fmt.Sprintf("spawn: no log for item 2 of sweep %s yet: the instance uploads it when its command ends\n", s.SweepID)
	if code != exitRuntime || errOut != want || out != "" {
		t.Errorf("missing log: exit %d, stderr %q (want %q), out %q", code, errOut, want, out)
	}
	nb := uniqueName("no-such-bucket")
	_, errOut, code = runSpawn(t, e.env, append(e.args("logs", s.SweepID, "--index", "1"), "--bucket", nb)...)
	if code != exitRuntime || !strings.Contains(errOut, "bucket "+nb+" does not exist") {
		t.Errorf("missing bucket: exit %d, stderr %q", code, errOut)
	}
	// The record's bucket wins over --bucket.
	e.advance(t, s.SweepID, func(s *sweep) { s.S3Bucket = e.bucket })
	out, _, code = runSpawn(t, e.env, append(e.args("logs", s.SweepID, "--index", "1"), "--bucket", "not-this-one")...)
	if code != 0 || out != body {
		t.Errorf("logs with the record's bucket: exit %d, out %q", code, out)
	}
}

// tmuxPane runs a command in a detached tmux session on a socket of its own, 80
// columns wide, so the command's stdout is a real terminal.
type tmuxPane struct {
	t      *testing.T
	socket string
}

func startTmux(t *testing.T, env map[string]string, argv ...string) *tmuxPane {
	t.Helper()
	if _, err := exec.LookPath("tmux"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("tmux is not installed, and CI must test --watch in a real terminal: .ci/run installs it")
		}
		t.Skip("tmux is not installed: --watch needs a real terminal to test (CI installs tmux)")
	}
	p := &tmuxPane{t: t, socket: uniqueName("spawn-watch")}
	var cmd []string
	cmd = append(cmd, "env")
	for k, v := range env {
		cmd = append(cmd, k+"="+v)
	}
	cmd = append(cmd, argv...)
	quoted := make([]string, len(cmd))
	for i, c := range cmd {
		quoted[i] = "'" + strings.ReplaceAll(c, "'", `'\''`) + "'"
	}
	// The pane stays after the command ends, so its last screen and exit code can be read.
	shell := strings.Join(quoted, " ") + `; echo "EXITED $?"; sleep 600`
	out, err := exec.Command("tmux", "-L", p.socket, "-f", os.DevNull, "new-session", "-d", "-s", "w", "-x", "80", "-y", "50", shell).CombinedOutput()
	if err != nil {
		t.Fatalf("tmux new-session: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("tmux", "-L", p.socket, "kill-server").Run() })
	return p
}

// capture is the pane's text; with escapes, its colours too.
func (p *tmuxPane) capture(escapes ...bool) string {
	args := []string{"-L", p.socket, "capture-pane", "-p", "-t", "w"}
	if len(escapes) > 0 && escapes[0] {
		args = append(args, "-e")
	}
	out, err := exec.Command("tmux", args...).CombinedOutput()
	if err != nil {
		p.t.Fatalf("tmux capture-pane: %v: %s", err, out)
	}
	return string(out)
}

// waitFor captures the pane until it contains want.
func (p *tmuxPane) waitFor(want string) string {
	p.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		screen := p.capture()
		if strings.Contains(screen, want) {
			return screen
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("the pane never showed %q; last screen:\n%s", want, screen)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestStatusWatchRedrawsInTerminal runs `spawn status --watch` (this test binary as
// spawn) in a real terminal while the test advances the sweep through the store.
func TestStatusWatchRedrawsInTerminal(t *testing.T) {
	e := newStatusEnv(t)
	s := e.putSweep(t, 10, time.Now())
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"SPAWN_TEST_RUN_AS_SPAWN": "1", "TERM": "xterm-256color"}
	for k, v := range e.env {
		env[k] = v
	}
	delete(env, "NO_COLOR") // a terminal without NO_COLOR gets colour
	pane := startTmux(t, env, append([]string{exe}, e.args("status", s.SweepID, "--watch", "--interval", "200ms")...)...)

	summary := func(screen string) []string {
		var hits []string
		for _, l := range strings.Split(screen, "\n") {
			if strings.Contains(l, s.SweepID) {
				hits = append(hits, l)
			}
		}
		return hits
	}
	firstLine := func(screen string) string {
		for _, l := range strings.Split(screen, "\n") {
			if strings.TrimSpace(l) != "" {
				return l
			}
		}
		return ""
	}
	check := func(screen, status string) {
		t.Helper()
		hits := summary(screen)
		if len(hits) != 1 || !strings.Contains(hits[0], status) || firstLine(screen) != hits[0] {
			t.Errorf("want the summary line once, at the top, with %s; got %d:\n%s", status, len(hits), screen)
		}
		assertFitsWidth(t, screen)
	}

	before := pane.waitFor("0/10 done")
	check(before, statusRunning)
	if coloured := pane.capture(true); !strings.Contains(coloured, "\x1b[36mRUNNING") {
		t.Errorf("no colour on the status word in a terminal:\n%q", coloured)
	}
	// Several redraws happen while nothing changes; the screen must not scroll.
	time.Sleep(700 * time.Millisecond)
	check(pane.capture(), statusRunning)

	e.advance(t, s.SweepID, func(s *sweep) {
		s.Counts = counts{Succeeded: 4, Failed: 1}
		s.Alive = []aliveInstance{{Index: 5, Attempt: 1, InstanceID: "i-watch5", Region: "us-east-1", InstanceType: "t3.micro", LaunchedAt: time.Now()}}
	})
	after := pane.waitFor("5/10 done")
	check(after, statusRunning)
	if strings.Contains(after, "0/10 done") || !strings.Contains(after, "i-watch5") {
		t.Errorf("the old frame is still on screen or the new one is incomplete:\n%s", after)
	}

	e.advance(t, s.SweepID, func(s *sweep) { s.Status, s.Counts, s.Alive = statusCompleted, counts{Succeeded: 10}, nil })
	final := pane.waitFor("EXITED")
	check(final, statusCompleted)
	if !strings.Contains(final, "EXITED 0") || !strings.Contains(final, "10/10 done") {
		t.Errorf("--watch should end with the sweep, exit 0:\n%s", final)
	}
}

// TestStatusWatchNotATerminal: with stdout a pipe, --watch appends a line per change
// and ends with the full view.
func TestStatusWatchNotATerminal(t *testing.T) {
	e := newStatusEnv(t)
	for k, v := range e.env {
		t.Setenv(k, v)
	}
	s := e.putSweep(t, 4, time.Now())
	clk, done, stdout, stderr := runStepped(e.args("status", s.SweepID, "--watch", "--interval", "5s"))
	clk.step(t, done, func() {}) // a refresh with no change adds no line
	clk.step(t, done, func() { e.advance(t, s.SweepID, func(s *sweep) { s.Counts = counts{Succeeded: 2} }) })
	clk.step(t, done, func() {
		e.advance(t, s.SweepID, func(s *sweep) { s.Status, s.Counts = statusCompleted, counts{Succeeded: 4} })
	})
	if err := <-done; err != nil {
		t.Fatalf("watch: %v (stderr %s)", err, stderr.String())
	}
	out := stdout.String()
	if strings.Contains(out, "\x1b") {
		t.Errorf("escape codes written to a pipe:\n%q", out)
	}
	lines := strings.Split(out, "\n")
	var progress []string
	for _, l := range lines {
		if strings.Contains(l, " done  running ") {
			progress = append(progress, l)
		}
	}
	if len(progress) != 3 || !strings.Contains(progress[0], "RUNNING  0/4 done") || !strings.Contains(progress[1], "RUNNING  2/4 done") ||
		!strings.Contains(progress[2], "COMPLETED  4/4 done") {
		t.Errorf("want one line per change from 0/4 to 4/4:\n%s", out)
	}
	if !strings.Contains(out, "[########################################]  4/4 done  100%") {
		t.Errorf("no final view:\n%s", out)
	}
}

// countingStore counts the reads of a live view.
type countingStore struct {
	sweepStore
	loads, lists atomic.Int64
}

func (c *countingStore) loadSweep(ctx context.Context, id string) (*sweep, error) {
	c.loads.Add(1)
	return c.sweepStore.loadSweep(ctx, id)
}

func (c *countingStore) listInstances(ctx context.Context, id string) ([]instanceRecord, error) {
	c.lists.Add(1)
	return c.sweepStore.listInstances(ctx, id)
}

// TestWatchReadsItemsOnlyWhenFailuresChange: a refresh reads the record; the instance
// items are read again only when an item failed (and once at the end).
func TestWatchReadsItemsOnlyWhenFailuresChange(t *testing.T) {
	e := newStatusEnv(t)
	s := e.putSweep(t, 10, time.Now())
	cs := &countingStore{sweepStore: e.store}
	clk := newStepClock()
	src := &sweepSource{d: &deployment{userID: e.userID, table: e.table, instancesTable: e.instTable}, store: cs, now: clk.Now}
	var out bytes.Buffer
	r := &rootConfig{stdout: &out, clock: clk}
	done := make(chan error, 1)
	go func() {
		_, err := r.watchStatus(context.Background(), src, s.SweepID, 5*time.Second, false, textStyle{})
		done <- err
	}()
	for i := 1; i <= 3; i++ {
		clk.step(t, done, func() {})
		clk.step(t, done, func() { e.advance(t, s.SweepID, func(s *sweep) { s.Counts.Succeeded = i }) })
	}
	clk.step(t, done, func() { e.advance(t, s.SweepID, func(s *sweep) { s.Counts.Failed = 1 }) })
	clk.step(t, done, func() { e.advance(t, s.SweepID, func(s *sweep) { s.Status = statusCompleted }) })
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := cs.lists.Load(); got != 3 {
		t.Errorf("instance items read %d times over %d refreshes, want 3 (first, after the failure, last)", got, cs.loads.Load())
	}
}

// TestStatusOfARealSweep: `launch --no-detach` runs the engine here while the test
// plays the instances (engine's workload helper), and `status --wait --output json`
// waits for the end and reports what the engine wrote.
func TestStatusOfARealSweep(t *testing.T) {
	e := newStatusEnv(t)
	ctx := context.Background()
	for k, v := range e.env {
		t.Setenv(k, v)
	}
	if _, err := newS3Client(e.a.cfg, "").CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(e.bucket)}); err != nil {
		t.Fatal(err)
	}
	api := ec2.NewFromConfig(e.a.cfg)
	before := existingInstances(t, api)
	profile := uniqueName("spawnd")
	if e.a.keepsEC2Tags() {
		// moto checks that the instance profile exists.
		if _, err := iam.NewFromConfig(e.a.cfg).CreateInstanceProfile(ctx, &iam.CreateInstanceProfileInput{InstanceProfileName: aws.String(profile)}); err != nil {
			t.Fatal(err)
		}
	}
	const items = 5
	seeds := make([]string, items)
	for i := range seeds {
		seeds[i] = fmt.Sprintf(`"seed": %d`, i)
	}
	path := writeParamFile(t, paramJSON(fmt.Sprintf(`"ami": %q, "command": "true", "iam_instance_profile": %q, "instance_type": "t3.micro"`,
		testImage(t, api), profile), seeds...))
	stop := make(chan struct{})
	defer close(stop)
	go workload(t, e.a, api, before, stop)

	var launchOut, launchErr syncBuffer
	launched := make(chan error, 1)
	go func() {
		launched <- runCLI(ctx, e.args("launch", "--param-file", path, "--max-concurrent", "2", "--poll-interval", "1s", "--no-detach", "--ttl", "1h"),
			strings.NewReader(""), &launchOut, &launchErr)
	}()
	var id string
	for deadline := time.Now().Add(time.Minute); id == "" && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if f := strings.Fields(launchOut.String()); len(f) > 1 {
			id = f[1]
		}
	}
	if id == "" {
		t.Fatalf("launch printed no sweep id: stdout %q, stderr %q", launchOut.String(), launchErr.String())
	}
	var out, errb bytes.Buffer
	waitErr := runCLI(ctx, e.args("status", id, "--wait", "--interval", "200ms", "--output", "json"), strings.NewReader(""), &out, &errb)
	if err := <-launched; err != nil && exitCode(err) != exitSweep {
		t.Fatalf("launch --no-detach: %v (stderr %s)", err, launchErr.String())
	}
	var doc struct {
		SweepID   string           `json:"sweep_id"`
		Status    string           `json:"status"`
		Counts    counts           `json:"counts"`
		Instances []statusInstance `json:"instances"`
		Cost      float64          `json:"estimated_cost_usd"`
	}
	if err := json.Unmarshal(out.Bytes(), &doc); err != nil {
		t.Fatalf("status --wait json: %v: %s (stderr %s)", err, out.String(), errb.String())
	}
	if doc.SweepID != id || doc.Status != statusCompleted || len(doc.Instances) != items {
		t.Fatalf("final status %s with %d instances, want COMPLETED with %d: %s", doc.Status, len(doc.Instances), items, out.String())
	}
	for _, in := range doc.Instances {
		if in.InstanceID == "" || in.LaunchedAt == nil || in.TerminatedAt == nil || in.Outcome == "" || in.PriceSource == "" {
			t.Errorf("instance %d incomplete: %+v", in.Index, in)
		}
	}
	// The instances reported exit code 0 by tag: every item succeeded.
	if exitCode(waitErr) != exitOK || doc.Counts.Succeeded != items {
		t.Errorf("%s: exit %d (%v), counts %+v; want 0 and %d succeeded", e.a.backend.name, exitCode(waitErr), waitErr, doc.Counts, items)
	}

	// The sweep is in the caller's list, first; its items have no logs (the simulated
	// instances upload none).
	listOut, _, code := runSpawn(t, nil, e.args("list", "--output", "json")...)
	var ld listDoc
	if code != 0 || json.Unmarshal([]byte(listOut), &ld) != nil || len(ld.Sweeps) == 0 || ld.Sweeps[0].SweepID != id || ld.Sweeps[0].Counts.done() != items {
		t.Errorf("list: exit %d, %s", code, listOut)
	}
	if _, stderr, code := runSpawn(t, nil, e.args("logs", id, "--index", "0")...); code != exitRuntime || !strings.Contains(stderr, "no log for item 0 of sweep "+id) {
		t.Errorf("logs of a simulated instance: exit %d, %q", code, stderr)
	}
}

// runStepped runs the CLI in the background on a stepClock; done gets its error, after
// which stdout and stderr may be read.
func runStepped(args []string) (clk *stepClock, done chan error, stdout, stderr *bytes.Buffer) {
	clk, done, stdout, stderr = newStepClock(), make(chan error, 1), new(bytes.Buffer), new(bytes.Buffer)
	r := newRootConfig(strings.NewReader(""), stdout, stderr)
	r.clock = clk
	go func() { done <- r.run(context.Background(), args) }()
	return clk, done, stdout, stderr
}

// stepClock is the clock of a status loop that the test steps: each Sleep waits until
// the test has changed the record and lets the loop go on, so no test waits on real
// intervals and every refresh sees exactly one change.
type stepClock struct {
	mu       sync.Mutex
	now      time.Time
	sleeping chan time.Duration
	wake     chan struct{}
}

func newStepClock() *stepClock {
	return &stepClock{now: time.Now(), sleeping: make(chan time.Duration), wake: make(chan struct{})}
}

func (c *stepClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *stepClock) Sleep(ctx context.Context, d time.Duration) error {
	select {
	case c.sleeping <- d:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-c.wake:
	case <-ctx.Done():
		return ctx.Err()
	}
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
	return nil
}

// step waits until the loop sleeps (it has finished a refresh), runs change, and wakes
// the loop. A loop that ends instead fails the test with its error.
func (c *stepClock) step(t *testing.T, done <-chan error, change func()) {
	t.Helper()
	select {
	case <-c.sleeping:
	case err := <-done:
		t.Fatalf("the loop ended before its next sleep: %v", err)
	}
	change()
	c.wake <- struct{}{}
}
