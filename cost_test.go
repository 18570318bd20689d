package main

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/pricing"
)

// A GetProducts price-list entry as AWS returns it for t3.micro in us-east-1 (trimmed
// attributes), with a Reserved term whose cheaper hourly rate must not be picked.
const t3microPriceList = `{"product":{"productFamily":"Compute Instance","attributes":{"enhancedNetworkingSupported":"Yes","memory":"1 GiB","vcpu":"2","capacitystatus":"Used","locationType":"AWS Region","storage":"EBS only","instanceFamily":"General purpose","operatingSystem":"Linux","regionCode":"us-east-1","physicalProcessor":"Intel Skylake E5 2686 v5","networkPerformance":"Up to 5 Gigabit","servicename":"Amazon Elastic Compute Cloud","instanceType":"t3.micro","tenancy":"Shared","usagetype":"BoxUsage:t3.micro","normalizationSizeFactor":"0.5","servicecode":"AmazonEC2","licenseModel":"No License required","currentGeneration":"Yes","preInstalledSw":"NA","location":"US East (N. Virginia)","processorArchitecture":"64-bit","marketoption":"OnDemand","operation":"RunInstances","availabilityzone":"NA"},"sku":"BDJZWK6ZGBN8SBUT"},"serviceCode":"AmazonEC2","terms":{"OnDemand":{"BDJZWK6ZGBN8SBUT.JRTCKXETXF":{"priceDimensions":{"BDJZWK6ZGBN8SBUT.JRTCKXETXF.6YS6EN2CT7":{"unit":"Hrs","endRange":"Inf","description":"$0.0104 per On Demand Linux t3.micro Instance Hour","appliesTo":[],"rateCode":"BDJZWK6ZGBN8SBUT.JRTCKXETXF.6YS6EN2CT7","beginRange":"0","pricePerUnit":{"USD":"0.0104000000"}}},"sku":"BDJZWK6ZGBN8SBUT","effectiveDate":"2024-06-01T00:00:00Z","offerTermCode":"JRTCKXETXF","termAttributes":{}}},"Reserved":{"BDJZWK6ZGBN8SBUT.4NA7Y494T4":{"priceDimensions":{"BDJZWK6ZGBN8SBUT.4NA7Y494T4.6YS6EN2CT7":{"unit":"Hrs","endRange":"Inf","description":"Linux/UNIX (Amazon VPC), t3.micro reserved instance applied","appliesTo":[],"rateCode":"BDJZWK6ZGBN8SBUT.4NA7Y494T4.6YS6EN2CT7","beginRange":"0","pricePerUnit":{"USD":"0.0065000000"}}},"sku":"BDJZWK6ZGBN8SBUT","effectiveDate":"2024-06-01T00:00:00Z","offerTermCode":"4NA7Y494T4","termAttributes":{"LeaseContractLength":"1yr","OfferingClass":"standard","PurchaseOption":"No Upfront"}}}},"version":"20240607214848","publicationDate":"2024-06-07T21:48:48Z"}`

func TestParseOnDemandPrice(t *testing.T) {
	got, err := parseOnDemandPrice([]string{t3microPriceList})
	if err != nil || got != 0.0104 {
		t.Fatalf("parseOnDemandPrice = %v, %v; want 0.0104", got, err)
	}
	for name, list := range map[string][]string{
		"empty":        nil,
		"not json":     {`{"terms":`},
		"only reserve": {`{"terms":{"Reserved":{"a":{"priceDimensions":{"b":{"unit":"Hrs","pricePerUnit":{"USD":"0.5"}}}}}}}`},
		"zero price":   {`{"terms":{"OnDemand":{"a":{"priceDimensions":{"b":{"unit":"Hrs","pricePerUnit":{"USD":"0.0000000000"}}}}}}}`},
	} {
		if got, err := parseOnDemandPrice(list); err == nil {
			t.Errorf("%s: got %v, want an error", name, got)
		}
	}
}

func TestPriceTableEmbedded(t *testing.T) {
	tab := loadPriceTable()
	if tab.AsOf == "" || tab.Region != "us-east-1" {
		t.Fatalf("table header: as_of %q region %q", tab.AsOf, tab.Region)
	}
	for _, typ := range []string{"t3.nano", "t3a.2xlarge", "t4g.micro", "m7i.4xlarge", "c7g.large", "r7g.2xlarge", "g4dn.xlarge", "g5.xlarge", "p3.2xlarge"} {
		if tab.USDPerHour[typ] <= 0 {
			t.Errorf("table has no price for %s", typ)
		}
	}
	// Within a family each size up doubles the price.
	if a, b := tab.USDPerHour["m5.large"], tab.USDPerHour["m5.xlarge"]; math.Abs(b-2*a) > 1e-9 {
		t.Errorf("m5.large %v, m5.xlarge %v: not double", a, b)
	}
}

type fakePricing struct {
	calls int
	list  []string
	err   error
}

func (f *fakePricing) GetProducts(ctx context.Context, in *pricing.GetProductsInput, _ ...func(*pricing.Options)) (*pricing.GetProductsOutput, error) {
	f.calls++
	if f.err != nil {
		return nil, f.err
	}
	return &pricing.GetProductsOutput{PriceList: f.list}, nil
}

type fakeSpot struct {
	calls   int
	history []ec2types.SpotPrice
	err     error
}

func (f *fakeSpot) DescribeSpotPriceHistory(ctx context.Context, in *ec2.DescribeSpotPriceHistoryInput, _ ...func(*ec2.Options)) (*ec2.DescribeSpotPriceHistoryOutput, error) {
	f.calls++
	if f.err != nil {
		return nil, f.err
	}
	return &ec2.DescribeSpotPriceHistoryOutput{SpotPriceHistory: f.history}, nil
}

func TestPriceForOnDemand(t *testing.T) {
	ctx := context.Background()
	t.Run("pricing api", func(t *testing.T) {
		api := &fakePricing{list: []string{t3microPriceList}}
		p := newTablePricer("us-east-1")
		p.pricing = api
		for range 3 {
			if got, src := p.priceFor(ctx, "", "t3.micro", false); got != 0.0104 || src != priceSourceAPI {
				t.Fatalf("priceFor = %v %q, want 0.0104 pricing-api", got, src)
			}
		}
		if api.calls != 1 {
			t.Errorf("GetProducts called %d times, want 1 (cached)", api.calls)
		}
	})
	t.Run("table fallback", func(t *testing.T) {
		api := &fakePricing{err: errors.New("dial tcp: lookup api.pricing.us-east-1.amazonaws.com: no such host")}
		p := newTablePricer("eu-west-1")
		p.pricing = api
		if got, src := p.priceFor(ctx, "", "m5.large", false); got != 0.096 || src != priceSourceTable {
			t.Errorf("m5.large = %v %q, want 0.096 table", got, src)
		}
		if got, src := p.priceFor(ctx, "eu-west-1", "c5.xlarge", false); got != 0.17 || src != priceSourceTable {
			t.Errorf("c5.xlarge = %v %q, want 0.17 table", got, src)
		}
		if got, src := p.priceFor(ctx, "", "x9z.huge", false); got != 0 || src != priceSourceUnknown {
			t.Errorf("unknown type = %v %q, want 0 unknown", got, src)
		}
		if api.calls != 1 {
			t.Errorf("GetProducts called %d times after it failed once, want 1", api.calls)
		}
	})
}

func TestPriceForSpot(t *testing.T) {
	ctx := context.Background()
	at := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	sp := func(zone, usd string, ago time.Duration) ec2types.SpotPrice {
		return ec2types.SpotPrice{AvailabilityZone: aws.String(zone), SpotPrice: aws.String(usd), Timestamp: aws.Time(at.Add(-ago)),
			InstanceType: ec2types.InstanceTypeC5Large, ProductDescription: ec2types.RIProductDescription("Linux/UNIX")}
	}
	t.Run("history", func(t *testing.T) {
		// Each zone's latest price counts; the highest of those is the estimate.
		f := &fakeSpot{history: []ec2types.SpotPrice{
			sp("us-east-1a", "0.0900", 3*time.Hour), sp("us-east-1a", "0.0310", time.Hour),
			sp("us-east-1b", "0.0350", 2*time.Hour), sp("us-east-1c", "bogus", 0),
		}}
		p := newTablePricer("us-east-1")
		p.spot = func(string) spotPriceAPI { return f }
		if got, src := p.priceFor(ctx, "us-east-1", "c5.large", true); got != 0.035 || src != priceSourceSpotHistory {
			t.Errorf("spot = %v %q, want 0.035 spot-history", got, src)
		}
		p.priceFor(ctx, "us-east-1", "c5.large", true)
		if f.calls != 1 {
			t.Errorf("DescribeSpotPriceHistory called %d times, want 1 (cached)", f.calls)
		}
	})
	for name, f := range map[string]*fakeSpot{
		"api error":  {err: errors.New("UnsupportedOperation")},
		"no history": {},
	} {
		t.Run(name, func(t *testing.T) {
			p := newTablePricer("us-east-1")
			p.spot = func(string) spotPriceAPI { return f }
			if got, src := p.priceFor(ctx, "", "c5.large", true); got != 0.085 || src != priceSourceOnDemandBound {
				t.Errorf("spot = %v %q, want 0.085 on-demand-bound", got, src)
			}
		})
	}
}

func TestDryRunCostBound(t *testing.T) {
	p := newTablePricer("us-east-1")
	items := []item{
		{InstanceType: "t3.micro", TTL: 2 * time.Hour},    // 0.0208
		{InstanceType: "m5.large"},                        // default 30m: 0.048
		{InstanceType: "c5.large", Spot: true},            // no spot client: on-demand bound 0.0425
		{InstanceType: "x9z.huge", TTL: time.Hour},        // unknown: 0
		{InstanceType: "t3.micro", TTL: -1 * time.Second}, // treated as no TTL
	}
	got, src := p.dryRunCostBound(context.Background(), items[:4], 30*time.Minute)
	if want := 0.0208 + 0.048 + 0.0425; math.Abs(got-want) > 1e-9 {
		t.Errorf("bound = %v, want %v", got, want)
	}
	if src[priceSourceTable] != 2 || src[priceSourceOnDemandBound] != 1 || src[priceSourceUnknown] != 1 {
		t.Errorf("sources = %v", src)
	}
	got, src = p.dryRunCostBound(context.Background(), items[4:], 0)
	if got != 0 || src[priceSourceNoTTL] != 1 {
		t.Errorf("no TTL: bound %v sources %v", got, src)
	}
}

// TestPriceForOnEmulator runs the real clients: kumo implements neither the Pricing
// API nor DescribeSpotPriceHistory, so both fall back; moto serves spot history.
func TestPriceForOnEmulator(t *testing.T) {
	a := newTestAWS(t)
	p := newPricer(a.cfg, "arn:aws:iam::000000000000:user/test")
	ctx := context.Background()
	usd, src := p.priceFor(ctx, "us-east-1", "m5.large", false)
	if src != priceSourceTable && src != priceSourceAPI {
		t.Errorf("on-demand source %q", src)
	}
	if usd <= 0 {
		t.Errorf("on-demand m5.large = %v", usd)
	}
	usd, src = p.priceFor(ctx, "us-east-1", "m5.large", true)
	switch a.backend.name {
	case "kumo":
		if src != priceSourceOnDemandBound || usd != 0.096 {
			t.Errorf("kumo spot = %v %q, want the on-demand bound 0.096", usd, src)
		}
	default:
		if src == priceSourceOnDemandBound {
			t.Logf("backend %s has no spot price history for m5.large: on-demand bound used", a.backend.name)
		} else if src != priceSourceSpotHistory || usd <= 0 {
			t.Errorf("%s spot = %v %q", a.backend.name, usd, src)
		}
	}
}
