package main

// The figures in the README, each a benchmark anyone can rerun (`make bench`, or the
// -bench pattern named in each comment). Prices are constants with their source.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	lambdasvc "github.com/aws/aws-sdk-go-v2/service/lambda"
)

const (
	// ec2RunInstancesRefill is EC2's token-bucket refill rate for RunInstances (a
	// mutating action): 2 per second after the bucket of 1,000 drains. Source: AWS EC2
	// API reference, "Request throttling for the Amazon EC2 API" (resource-intensive
	// and mutating actions).
	ec2RunInstancesRefill = 2.0

	// Lambda and DynamoDB prices (us-east-1, on-demand).
	lambdaUSDPerGBSecondX86   = 0.0000166667
	lambdaUSDPerGBSecondArm64 = 0.0000133334
	lambdaUSDPerRequest       = 0.20 / 1e6
	dynamoUSDPerWRU           = 0.625 / 1e6 // on-demand writes since November 2024
	dynamoUSDPerRRU           = 0.125 / 1e6 // on-demand reads since November 2024

	// lambdaTimeout is the function's timeout (docs/design.md: 900 s); an invocation hands on
	// safetyMargin before it.
	lambdaTimeout = 900 * time.Second
	// invocationOverhead is billed per invocation beyond the loop itself: the init of a
	// fresh process. BenchmarkColdStart measures our part well under this bound.
	invocationOverhead = time.Second
)

// wru is what one write of size bytes costs in DynamoDB write request units (1 KB each).
func wru(size int) int { return max(1, (size+1023)/1024) }

// rru is what one strongly consistent read of size bytes costs in read request units
// (4 KB each).
func rru(size int) int { return max(1, (size+4095)/4096) }

// simSweep is a sweep run by the real engine on the fake store and the simulated EC2
// of the engine's tests: every instance runs for runFor and exits 0 (runFor 0: it runs
// until terminated, and the sweep has no TTL).
type simSweep struct {
	s     *sim
	store *meteredStore
	fe    *fakeEC2
	o     *orchestrator
	sw    *sweep
}

func newSimSweep(tb testing.TB, items []item, maxConcurrent int, runFor time.Duration) *simSweep {
	fail := func(format string, args ...any) { tb.Fatalf(format, args...) }
	s := newSim(1, fail)
	store := &meteredStore{sweepStore: newFakeStore()}
	fe := newBenchEC2(s, maxConcurrent, fail)
	sw := &sweep{SweepID: uniqueName("fig"), SweepName: "figures", UserID: "arn:aws:iam::123456789012:user/researcher",
		Status: statusInitializing, MaxConcurrent: maxConcurrent, LaunchDelay: "0s", PollInterval: defaultPollInterval.String(),
		TotalParams: len(items), Region: "us-east-1", AWSAccountID: "123456789012", TTL: "4h",
		S3Bucket: "spawn-sweeps-123456789012-us-east-1", S3ParamsKey: "sweeps/x/params.json", ParamsChecksum: sha256Hex([]byte("x"))}
	end := "exit0"
	if runFor <= 0 {
		end, sw.TTL = "hang-hard", ""
		items = slices.Clone(items)
		for i := range items {
			items[i].TTL = 0
		}
	}
	o := newTestOrchestrator(store, fe.client, s)
	o.owner, o.items = "lambda-0123456789abcdef0123456789abcdef", items
	o.init()
	renewLease(sw, o.owner, s.now, o.leaseTTL)
	if err := store.createSweep(context.Background(), sw); err != nil {
		tb.Fatal(err)
	}
	for i := range items {
		fe.fates[fmt.Sprintf("%s-%d-1", sw.SweepID, i)] = &fate{runFor: runFor, end: end}
	}
	return &simSweep{s: s, store: store, fe: fe, o: o, sw: sw}
}

// step runs one poll step and moves the clock on by the poll interval.
func (x *simSweep) step(tb testing.TB) {
	if err := x.o.step(context.Background(), x.sw); err != nil {
		tb.Fatal(err)
	}
	x.s.now = x.s.now.Add(pollIntervalOf(x.sw))
}

// figureItems are the items of paramFile(n) as the orchestrator holds them.
func figureItems(tb testing.TB, n int) []item {
	items, err := parseParamFile("figures.json", paramFile(n))
	if err != nil || len(items) != n {
		tb.Fatalf("%d items, %v", len(items), err)
	}
	return items
}

// BenchmarkLaunchThroughput: the real engine (dynamoStore and the EC2 client on the
// emulator) launches a 200-item sweep at max_concurrent 200, launch_delay 0, in one
// poll step: RunInstances and the instance item for each launch, the fenced record
// writes around them. launches/s is what the engine sustains against the emulator;
// ec2_refill_launches/s is the rate EC2 itself allows once its RunInstances bucket is
// empty, which bounds any orchestrator on AWS.
//
//	go test -run '^$' -bench 'BenchmarkLaunchThroughput' .
func BenchmarkLaunchThroughput(b *testing.B) {
	const n = 200
	a := newTestAWS(b)
	st := newTestStore(b)
	counted := &countingDynamo{dynamoAPI: st.db}
	store := *st
	store.db = counted
	real := ec2.NewFromConfig(a.cfg)
	image := testImage(b, real)
	items := make([]item, n)
	for i := range items {
		items[i] = item{Index: i, InstanceType: "t3.micro", AMI: image, Command: "true"}
	}
	ctx := context.Background()
	launches := 0
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		sw := &sweep{SweepID: uniqueName("tp"), SweepName: "throughput", UserID: "arn:aws:iam::000000000000:user/bench",
			Status: statusInitializing, MaxConcurrent: n, LaunchDelay: "0s", PollInterval: "10s", TotalParams: n,
			Region: a.cfg.Region, AWSAccountID: "000000000000"}
		o := newTestOrchestrator(&store, everyRegion(real), nil)
		o.launchInput = func(sw *sweep, it item, attempt int) *ec2.RunInstancesInput {
			in := testLaunchInput(sw, it, attempt)
			in.ImageId = aws.String(image)
			return in
		}
		o.items = items
		o.init()
		renewLease(sw, o.owner, o.clock.Now(), o.leaseTTL)
		if err := store.createSweep(ctx, sw); err != nil {
			b.Fatal(err)
		}
		counted.puts, counted.bytes = 0, 0
		b.StartTimer()
		if err := o.step(ctx, sw); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if sw.Launched != n {
			b.Fatalf("one step launched %d of %d", sw.Launched, n)
		}
		launches += sw.Launched
		b.ReportMetric(float64(counted.puts)/float64(n), "dynamodb_writes/launch")
		b.ReportMetric(float64(counted.bytes)/float64(n), "dynamodb_bytes/launch")
		b.StartTimer()
	}
	b.StopTimer()
	b.ReportMetric(float64(launches)/b.Elapsed().Seconds(), "launches/s")
	b.ReportMetric(ec2RunInstancesRefill, "ec2_refill_launches/s")
	b.ReportMetric(0, "ns/op")
}

// wholeRecordEntry is one launched instance in the whole-record design: the record
// lists every instance launched so far, with its parameter values.
func wholeRecordEntry(it item, at time.Time) map[string]types.AttributeValue {
	params := map[string]types.AttributeValue{}
	for _, p := range it.Params {
		params[p.Key] = &types.AttributeValueMemberS{Value: p.Value}
	}
	return map[string]types.AttributeValue{
		"instance_id": &types.AttributeValueMemberS{Value: fmt.Sprintf("i-%017x", 0x0abc0000000+it.Index)},
		"index":       numberAV(int64(it.Index)),
		"state":       &types.AttributeValueMemberS{Value: "running"},
		"launch_time": &types.AttributeValueMemberS{Value: at.UTC().Format(time.RFC3339)},
		"params":      &types.AttributeValueMemberM{Value: params},
	}
}

// BenchmarkBytesPerLaunch: DynamoDB bytes written per launch over a whole sweep of
// 1,000 and 10,000 items at max_concurrent 50, where every instance ends within a
// poll. ours: every write the engine makes (record saves, instance items), divided by
// launches. whole_record: a design that keeps every launched instance (id, index,
// state, launch time, parameter values) in one record and puts the whole record at
// each launch, so a write grows with the sweep; whole_record_limit_at_launch is the
// launch whose write would pass DynamoDB's 400 KB item limit (0: never).
//
//	go test -run '^$' -bench 'BenchmarkBytesPerLaunch' .
func BenchmarkBytesPerLaunch(b *testing.B) {
	for _, n := range []int{1_000, 10_000} {
		b.Run(fmt.Sprintf("items=%d", n), func(b *testing.B) {
			items := figureItems(b, n)
			var ours, oursWRU, launches int
			var x *simSweep
			for range b.N {
				x = newSimSweep(b, items, 50, 5*time.Second)
				x.store.reset()
				for steps := 0; !terminalStatus(x.sw.Status); steps++ {
					if steps > 4*n {
						b.Fatalf("sweep not finished after %d steps: %+v", steps, x.sw.Counts)
					}
					x.step(b)
				}
				if x.sw.Status != statusCompleted || x.sw.Counts.Succeeded != n {
					b.Fatalf("sweep ended %s with %+v", x.sw.Status, x.sw.Counts)
				}
				ours += x.store.bytes
				oursWRU += x.store.wrus
				launches += x.sw.Launched
			}
			b.StopTimer()

			// The whole-record design over the same items: the base record is ours
			// without its alive slots.
			base := *x.sw
			base.Alive = nil
			baseAV, err := marshalItem(&base)
			if err != nil {
				b.Fatal(err)
			}
			size := itemSize(baseAV) + len("instances") + 3 // an empty list attribute
			var total, limitAt int
			list := make([]types.AttributeValue, 0, n)
			start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			for k, it := range items {
				e := &types.AttributeValueMemberM{Value: wholeRecordEntry(it, start.Add(time.Duration(k)*time.Second))}
				list = append(list, e)
				size += 1 + attributeSize(e)
				total += size
				if size > dynamoItemLimit && limitAt == 0 {
					limitAt = k + 1
				}
			}
			baseAV["instances"] = &types.AttributeValueMemberL{Value: list}
			if got := itemSize(baseAV); got != size {
				b.Fatalf("whole record: itemSize %d, running sum %d", got, size)
			}
			b.ReportMetric(float64(ours)/float64(launches), "ours_bytes/launch")
			b.ReportMetric(float64(oursWRU)/float64(launches), "ours_wru/launch")
			b.ReportMetric(float64(total)/float64(n), "whole_record_bytes/launch")
			b.ReportMetric(float64(size), "whole_record_final_bytes")
			b.ReportMetric(float64(limitAt), "whole_record_limit_at_launch")
		})
	}
}

// BenchmarkSweepHourCost: what one hour of a running sweep costs in Lambda and
// DynamoDB at the default 10 s poll interval. The engine's writes per poll step are
// counted in steady state (max_concurrent instances running, none ending), where a
// step renews the lease with one fenced record write; launches add ours_wru/launch
// each (BenchmarkBytesPerLaunch). An invocation loops (sleeping between steps) until
// its safety margin before the 900 s timeout, then hands on, so Lambda bills the whole
// hour at the function's memory plus a cold start per invocation.
//
//	go test -run '^$' -bench 'BenchmarkSweepHourCost' .
func BenchmarkSweepHourCost(b *testing.B) {
	for _, mc := range []int{defaultMaxConcurrent, 50} {
		b.Run(fmt.Sprintf("max_concurrent=%d", mc), func(b *testing.B) {
			x := newSimSweep(b, figureItems(b, 10*mc), mc, 0)
			x.step(b) // the first step launches max_concurrent
			if len(x.sw.Alive) != mc || x.sw.Launched != mc {
				b.Fatalf("first step: %d alive, %d launched; want %d", len(x.sw.Alive), x.sw.Launched, mc)
			}
			x.store.reset()
			b.ResetTimer()
			for range b.N {
				x.step(b)
			}
			b.StopTimer()
			if x.sw.Launched != mc {
				b.Fatalf("steady state launched more: %d", x.sw.Launched)
			}
			steps := float64(b.N)
			stepsPerHour := time.Hour.Seconds() / defaultPollInterval.Seconds()
			wruPerStep := float64(x.store.wrus) / steps
			rruPerStep := float64(x.store.rrus) / steps
			dynamoUSD := stepsPerHour * (wruPerStep*dynamoUSDPerWRU + rruPerStep*dynamoUSDPerRRU)
			start := time.Unix(0, 0)
			perInvocation := lambdaTimeout - safetyMargin(start, start.Add(lambdaTimeout))
			invocations := time.Hour.Seconds() / perInvocation.Seconds()
			b.ReportMetric(float64(x.store.writes)/steps, "writes/step")
			b.ReportMetric(float64(x.store.bytes)/steps, "bytes/step")
			b.ReportMetric(wruPerStep, "wru/step")
			b.ReportMetric(rruPerStep, "rru/step")
			b.ReportMetric(stepsPerHour*wruPerStep, "wru/sweep-hour")
			b.ReportMetric(dynamoUSD, "dynamodb_usd/sweep-hour")
			b.ReportMetric(invocations, "invocations/sweep-hour")
			for _, mb := range []int{128, defaultMemoryMB, 512} {
				gbs := float64(mb) / 1024 * (time.Hour.Seconds() + invocations*invocationOverhead.Seconds())
				b.ReportMetric(gbs, fmt.Sprintf("GB-s/sweep-hour@%dMB", mb))
				for _, arch := range []struct {
					name  string
					price float64
				}{{"x86_64", lambdaUSDPerGBSecondX86}, {"arm64", lambdaUSDPerGBSecondArm64}} {
					usd := gbs*arch.price + invocations*lambdaUSDPerRequest + dynamoUSD
					b.ReportMetric(usd, fmt.Sprintf("usd/sweep-hour@%dMB-%s", mb, arch.name))
				}
			}
		})
	}
}

// memoryProbeEnv makes BenchmarkOrchestratorMemory100k's child process do the probe.
const memoryProbeEnv = "SPAWN_FIGURES_MEMORY_PROBE"

// memoryProbe is what the child reports: the Go heap after GC at each phase (the
// baseline subtracted), and the process's resident memory before and at its peak.
type memoryProbe struct {
	HeapAfterGC map[string]uint64 `json:"heap_after_gc"`
	PeakHeap    uint64            `json:"peak_heap"`
	HeapSys     uint64            `json:"heap_sys"`
	RSSBefore   uint64            `json:"rss_before"`
	RSSPeak     uint64            `json:"rss_peak"`
}

// procStatusBytes reads a "VmRSS:   1234 kB" line of /proc/self/status.
func procStatusBytes(field string) uint64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb * 1024
		}
	}
	return 0
}

// runMemoryProbe holds a 100,000-item sweep as the function does: the params file as
// downloaded, the parsed items, the record, and one step at max_concurrent 50.
func runMemoryProbe(tb testing.TB) memoryProbe {
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	p := memoryProbe{HeapAfterGC: map[string]uint64{}, RSSBefore: procStatusBytes("VmRSS")}
	base := heap()
	note := func(phase string) {
		h := heap()
		h -= min(base, h)
		p.HeapAfterGC[phase] = h
		p.PeakHeap = max(p.PeakHeap, h)
	}
	raw := paramFile(100_000)
	note("params_file")
	items, err := parseParamFile("params.json", raw)
	if err != nil {
		tb.Fatal(err)
	}
	note("file_and_items")
	runtime.KeepAlive(raw) // the file is dropped once parsed, as loadItems does
	x := newSimSweep(tb, items, 50, time.Hour)
	x.step(tb)
	note("items_record_step")
	if x.sw.Launched != 50 {
		tb.Fatalf("launched %d", x.sw.Launched)
	}
	runtime.KeepAlive(x)
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	p.HeapSys = ms.HeapSys
	p.RSSPeak = procStatusBytes("VmHWM")
	return p
}

// BenchmarkOrchestratorMemory100k: the function's memory for a 100,000-item sweep,
// measured in a fresh child process (this test binary) so nothing else shares its
// heap: the Go heap after GC at its largest (peak_heap_MB), and the process's peak
// resident memory (VmHWM) — which also counts the binary and the runtime, as Lambda's
// "Max Memory Used" does — and its growth over the process before the probe (the test
// binary's own baseline, kumo included, is larger than spawn's). The function's
// default is 128 MB (deploy.go).
//
//	go test -run '^$' -bench 'BenchmarkOrchestratorMemory100k' .
func BenchmarkOrchestratorMemory100k(b *testing.B) {
	if os.Getenv(memoryProbeEnv) == "1" {
		p := runMemoryProbe(b)
		out, _ := json.Marshal(p)
		fmt.Printf("MEMORY-PROBE %s\n", out)
		return
	}
	if runtime.GOOS != "linux" {
		b.Skipf("reads peak resident memory from /proc (Linux); this is %s", runtime.GOOS)
	}
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	var probes []memoryProbe
	for range b.N {
		cmd := exec.Command(exe, "-test.run=^$", "-test.bench=^BenchmarkOrchestratorMemory100k$", "-test.benchtime=1x")
		cmd.Env = append(os.Environ(), memoryProbeEnv+"=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			b.Fatalf("memory probe: %v\n%s", err, out)
		}
		_, line, ok := bytes.Cut(out, []byte("MEMORY-PROBE "))
		if !ok {
			b.Fatalf("memory probe printed no result:\n%s", out)
		}
		line, _, _ = bytes.Cut(line, []byte("\n"))
		var p memoryProbe
		if err := json.Unmarshal(line, &p); err != nil {
			b.Fatalf("memory probe result %q: %v", line, err)
		}
		probes = append(probes, p)
	}
	b.StopTimer()
	p := slices.MaxFunc(probes, func(x, y memoryProbe) int { return int(x.RSSPeak) - int(y.RSSPeak) })
	const mb = 1 << 20
	b.ReportMetric(float64(p.HeapAfterGC["params_file"])/mb, "file_heap_MB")
	b.ReportMetric(float64(p.HeapAfterGC["file_and_items"])/mb, "file+items_heap_MB")
	b.ReportMetric(float64(p.HeapAfterGC["items_record_step"])/mb, "items+record+step_heap_MB")
	b.ReportMetric(float64(p.PeakHeap)/mb, "peak_heap_MB")
	b.ReportMetric(float64(p.HeapSys)/mb, "heap_sys_MB")
	b.ReportMetric(float64(p.RSSBefore)/mb, "rss_before_MB")
	b.ReportMetric(float64(p.RSSPeak)/mb, "rss_peak_MB")
	b.ReportMetric(float64(p.RSSPeak-min(p.RSSBefore, p.RSSPeak))/mb, "rss_growth_MB")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkColdStart: from the start of the function process (this binary, as the
// Lambda function on kumo's runtime API) to its first poll step, over five cold starts
// per op (medians): ms_to_invocation is start → the handler's "invocation started"
// (runtime ready, event delivered, AWS config and identity set up); ms_to_first_launch
// is start → the first step's launch (lease taken, params downloaded and parsed, the
// record saved, RunInstances answered).
//
//	go test -run '^$' -bench 'BenchmarkColdStart' .
func BenchmarkColdStart(b *testing.B) {
	a := newTestAWS(b)
	a.requireRuntimeAPI(b)
	st := newTestStore(b)
	table, itable := st.table, st.instancesTable
	bucket := createTestBucket(b, a, "spawn-cold")
	ctx := context.Background()
	params := newParamsStore(newS3Client(a.cfg, ""), bucket, b.TempDir())
	raw := []byte(`{"defaults": {"ami": "ami-12345678", "instance_type": "t3.micro", "command": "sleep 600"}, "params": [{"seed": 1}]}`)
	lc := lambdasvc.NewFromConfig(a.cfg)
	var toInvocation, toLaunch []float64
	for range b.N {
		for range 5 {
			b.StopTimer()
			id := newSweepID(time.Now())
			key, sum, err := params.uploadParams(ctx, id, raw)
			if err != nil {
				b.Fatal(err)
			}
			sw := &sweep{SweepID: id, SweepName: "cold", UserID: "arn:aws:iam::000000000000:user/bench", S3Bucket: bucket,
				S3ParamsKey: key, ParamsChecksum: sum, MaxConcurrent: 1, LaunchDelay: "0s", PollInterval: "10s",
				TotalParams: 1, Region: a.cfg.Region, AWSAccountID: "000000000000", Status: statusInitializing}
			fixCounts(sw)
			if err := st.createSweep(ctx, sw); err != nil {
				b.Fatal(err)
			}
			fn := uniqueName("fn-cold")
			createTestFunction(b, a.cfg, fn, 120)
			event, _ := json.Marshal(orchestratorEvent{SweepID: id})
			b.StartTimer()

			start := time.Now()
			p := startFunctionProcess(b, a.backend.endpoint, fn, map[string]string{
				"SPAWN_TABLE": table, "SPAWN_INSTANCES_TABLE": itable, "SPAWN_BUCKET": bucket,
			})
			// A synchronous invoke is refused at once until the runtime polls; the one
			// that is delivered then runs the sweep, and is abandoned once measured.
			ictx, cancel := context.WithCancel(ctx)
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ictx.Err() == nil {
					_, err := lc.Invoke(ictx, &lambdasvc.InvokeInput{FunctionName: aws.String(fn), Payload: event})
					if err == nil || ictx.Err() != nil {
						return
					}
					time.Sleep(2 * time.Millisecond)
				}
			}()
			var started, launched time.Duration
			for launched == 0 {
				out := p.output()
				if started == 0 && strings.Contains(out, `"message":"invocation started"`) {
					started = time.Since(start)
				}
				if strings.Contains(out, `"message":"launched"`) {
					launched = time.Since(start)
				}
				if time.Since(start) > time.Minute {
					cancel()
					b.Fatalf("no launch within a minute of the process start:\n%s", out)
				}
				time.Sleep(time.Millisecond)
			}
			b.StopTimer()
			p.kill()
			cancel()
			wg.Wait()
			if started == 0 {
				b.Fatalf("launched without an \"invocation started\" line:\n%s", p.output())
			}
			toInvocation = append(toInvocation, float64(started.Microseconds())/1e3)
			toLaunch = append(toLaunch, float64(launched.Microseconds())/1e3)
			b.StartTimer()
		}
	}
	b.StopTimer()
	b.ReportMetric(median(toInvocation), "ms_to_invocation")
	b.ReportMetric(median(toLaunch), "ms_to_first_launch")
	b.ReportMetric(float64(len(toLaunch)), "cold_starts")
	b.ReportMetric(0, "ns/op")
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// TestWholeRecordModelMatchesItemSize keeps the whole-record model honest: an entry
// counted the way BenchmarkBytesPerLaunch counts it is what DynamoDB counts for it.
func TestWholeRecordModelMatchesItemSize(t *testing.T) {
	it := item{Index: 7, Params: []param{{Key: "lr", Value: "0.001"}, {Key: "seed", Value: "7"}}}
	e := wholeRecordEntry(it, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	// "instance_id" 11+19, "index" 5+2, "state" 5+7, "launch_time" 11+20,
	// "params" 6 + map(3 + (1+2+5) + (1+4+1)); each map entry 1 byte more.
	want := 3 + 5*1 + (11 + 19) + (5 + 2) + (5 + 7) + (11 + 20) + (6 + 3 + (1 + 2 + 5) + (1 + 4 + 1))
	if got := attributeSize(&types.AttributeValueMemberM{Value: e}); got != want {
		t.Errorf("entry size %d, want %d", got, want)
	}
	if got := wru(1024); got != 1 {
		t.Errorf("wru(1024) = %d, want 1", got)
	}
	if got := wru(1025); got != 2 {
		t.Errorf("wru(1025) = %d, want 2", got)
	}
}
