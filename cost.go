package main

import (
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/pricing"
	pricingtypes "github.com/aws/aws-sdk-go-v2/service/pricing/types"
)

// Where an hourly price came from; status shows it next to every figure.
const (
	priceSourceAPI           = "pricing-api"     // AWS Pricing API, on-demand
	priceSourceTable         = "table"           // the table embedded in the binary (us-east-1 figures)
	priceSourceSpotHistory   = "spot-history"    // latest DescribeSpotPriceHistory price
	priceSourceOnDemandBound = "on-demand-bound" // spot with no history: the on-demand price bounds it
	priceSourceUnknown       = "unknown"         // no figure anywhere: counted as 0
	priceSourceNoTTL         = "no-ttl"          // dryRunCostBound: an item with no TTL has no bound
)

// pricingRegion is where the Pricing API is served, whatever region the instances run in.
const pricingRegion = "us-east-1"

// A price lookup must never hold up a status view or a launch for long: one short try,
// then the embedded table.
const priceLookupTimeout = 5 * time.Second

//go:embed cost_prices.json
var embeddedPriceTable []byte

type priceTable struct {
	AsOf       string             `json:"as_of"`
	Region     string             `json:"region"`
	USDPerHour map[string]float64 `json:"usd_per_hour"`
}

func loadPriceTable() priceTable {
	var t priceTable
	// The file is compiled in and TestPriceTableEmbedded checks it parses; a broken
	// table would only make every price "unknown", never stop a command.
	_ = json.Unmarshal(embeddedPriceTable, &t)
	return t
}

type pricingAPI interface {
	GetProducts(ctx context.Context, in *pricing.GetProductsInput, opts ...func(*pricing.Options)) (*pricing.GetProductsOutput, error)
}

type spotPriceAPI interface {
	DescribeSpotPriceHistory(ctx context.Context, in *ec2.DescribeSpotPriceHistoryInput, opts ...func(*ec2.Options)) (*ec2.DescribeSpotPriceHistoryOutput, error)
}

type priceKey struct {
	region, instanceType string
	spot                 bool
}

type priceAnswer struct {
	usd    float64
	source string
}

// pricer answers hourly prices and caches them for the life of the process.
type pricer struct {
	region  string                           // for items that name no region
	pricing pricingAPI                       // nil: the embedded table only
	spot    func(region string) spotPriceAPI // nil: spot is bounded by on-demand
	table   priceTable

	mu          sync.Mutex
	cache       map[priceKey]priceAnswer
	spotClients map[string]spotPriceAPI
	// After one failed Pricing API call the process stops asking: offline or denied,
	// the next call would fail the same way, slowly.
	pricingDown bool
}

// pricingRegionOf is where the Price List Query API of a partition is served (its
// endpoints: https://docs.aws.amazon.com/awsaccountbilling/latest/aboutv2/using-price-list-query-api.html,
// and for China https://docs.amazonaws.cn/en_us/awsaccountbilling/latest/aboutv2/using-the-aws-price-list-bulk-api.html),
// or "" where it has none (aws-us-gov and the isolated partitions: the table only).
func pricingRegionOf(partition string) string {
	switch partition {
	case "", "aws":
		return pricingRegion
	case "aws-cn":
		return "cn-northwest-1"
	}
	return ""
}

// newPricer asks the Pricing API of the caller's partition (from its STS ARN) and each
// region's spot price history with cfg.
func newPricer(cfg aws.Config, callerARN string) *pricer {
	p := newTablePricer(cfg.Region)
	if region := pricingRegionOf(partitionOf(callerARN)); region != "" {
		p.pricing = pricing.NewFromConfig(cfg, func(o *pricing.Options) {
			o.Region = region
			o.RetryMaxAttempts = 1
		})
	}
	p.spot = func(region string) spotPriceAPI {
		return ec2.NewFromConfig(cfg, func(o *ec2.Options) {
			o.Region = region
			o.RetryMaxAttempts = 1
		})
	}
	return p
}

// newTablePricer uses only the embedded table (launch --dry-run without credentials).
func newTablePricer(region string) *pricer {
	if region == "" {
		region = pricingRegion
	}
	return &pricer{
		region:      region,
		table:       loadPriceTable(),
		cache:       map[priceKey]priceAnswer{},
		spotClients: map[string]spotPriceAPI{},
	}
}

// priceFor is the hourly USD price of one Linux instance and where it came from.
// It never fails: an unknown type costs 0 with source "unknown".
func (p *pricer) priceFor(ctx context.Context, region, instanceType string, spot bool) (usdPerHour float64, source string) {
	if region == "" {
		region = p.region
	}
	k := priceKey{region, instanceType, spot}
	p.mu.Lock()
	defer p.mu.Unlock()
	if a, ok := p.cache[k]; ok {
		return a.usd, a.source
	}
	var a priceAnswer
	if spot {
		a = p.spotPrice(ctx, region, instanceType)
	} else {
		a = p.onDemandPrice(ctx, region, instanceType)
	}
	p.cache[k] = a
	return a.usd, a.source
}

// onDemandPrice runs with p.mu held.
func (p *pricer) onDemandPrice(ctx context.Context, region, instanceType string) priceAnswer {
	k := priceKey{region, instanceType, false}
	if a, ok := p.cache[k]; ok {
		return a
	}
	a := priceAnswer{source: priceSourceUnknown}
	if usd, ok := p.table.USDPerHour[instanceType]; ok {
		a = priceAnswer{usd, priceSourceTable}
	}
	if p.pricing != nil && !p.pricingDown {
		if usd, err := p.askPricingAPI(ctx, region, instanceType); err == nil && usd > 0 {
			a = priceAnswer{usd, priceSourceAPI}
		} else if err != nil {
			p.pricingDown = true
		}
	}
	p.cache[k] = a
	return a
}

func (p *pricer) askPricingAPI(ctx context.Context, region, instanceType string) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, priceLookupTimeout)
	defer cancel()
	term := func(field, value string) pricingtypes.Filter {
		return pricingtypes.Filter{Type: pricingtypes.FilterTypeTermMatch, Field: aws.String(field), Value: aws.String(value)}
	}
	out, err := p.pricing.GetProducts(ctx, &pricing.GetProductsInput{
		ServiceCode: aws.String("AmazonEC2"),
		Filters: []pricingtypes.Filter{
			term("instanceType", instanceType),
			term("regionCode", region),
			term("operatingSystem", "Linux"),
			term("tenancy", "Shared"),
			term("preInstalledSw", "NA"),
			term("capacitystatus", "Used"),
		},
		FormatVersion: aws.String("aws_v1"),
		MaxResults:    aws.Int32(10),
	})
	if err != nil {
		return 0, fmt.Errorf("pricing GetProducts %s in %s: %w", instanceType, region, err)
	}
	return parseOnDemandPrice(out.PriceList)
}

// parseOnDemandPrice reads the hourly USD price out of GetProducts' price list: each
// entry is a JSON document whose terms.OnDemand.<offer>.priceDimensions.<rate> holds
// {"unit": "Hrs", "pricePerUnit": {"USD": "0.0104000000"}}.
func parseOnDemandPrice(priceList []string) (float64, error) {
	type dimension struct {
		Unit         string            `json:"unit"`
		PricePerUnit map[string]string `json:"pricePerUnit"`
	}
	type product struct {
		Terms struct {
			OnDemand map[string]struct {
				PriceDimensions map[string]dimension `json:"priceDimensions"`
			} `json:"OnDemand"`
		} `json:"terms"`
	}
	for i, doc := range priceList {
		var pr product
		if err := json.Unmarshal([]byte(doc), &pr); err != nil {
			return 0, fmt.Errorf("pricing price list entry %d: %w", i, err)
		}
		for _, offer := range sortedKeys(pr.Terms.OnDemand) {
			dims := pr.Terms.OnDemand[offer].PriceDimensions
			for _, rate := range sortedKeys(dims) {
				d := dims[rate]
				if d.Unit != "Hrs" {
					continue
				}
				usd, err := strconv.ParseFloat(d.PricePerUnit["USD"], 64)
				if err == nil && usd > 0 {
					return usd, nil
				}
			}
		}
	}
	return 0, fmt.Errorf("pricing price list has no hourly USD on-demand price (%d entries)", len(priceList))
}

// spotPrice runs with p.mu held.
func (p *pricer) spotPrice(ctx context.Context, region, instanceType string) priceAnswer {
	if p.spot != nil {
		c, ok := p.spotClients[region]
		if !ok {
			c = p.spot(region)
			p.spotClients[region] = c
		}
		if usd, err := latestSpotPrice(ctx, c, instanceType); err == nil {
			return priceAnswer{usd, priceSourceSpotHistory}
		}
	}
	od := p.onDemandPrice(ctx, region, instanceType)
	if od.source == priceSourceUnknown {
		return od
	}
	return priceAnswer{od.usd, priceSourceOnDemandBound}
}

// latestSpotPrice is the highest of each availability zone's latest Linux/UNIX spot
// price: the instance's zone is not known here, so the estimate errs high.
func latestSpotPrice(ctx context.Context, c spotPriceAPI, instanceType string) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, priceLookupTimeout)
	defer cancel()
	now := time.Now()
	out, err := c.DescribeSpotPriceHistory(ctx, &ec2.DescribeSpotPriceHistoryInput{
		InstanceTypes:       []ec2types.InstanceType{ec2types.InstanceType(instanceType)},
		ProductDescriptions: []string{"Linux/UNIX"},
		StartTime:           aws.Time(now), // a start of now returns each zone's current price
	})
	if err != nil {
		return 0, fmt.Errorf("spot price history of %s: %w", instanceType, err)
	}
	return pickSpotPrice(out.SpotPriceHistory)
}

func pickSpotPrice(history []ec2types.SpotPrice) (float64, error) {
	type latest struct {
		at  time.Time
		usd float64
	}
	byZone := map[string]latest{}
	for _, sp := range history {
		usd, err := strconv.ParseFloat(aws.ToString(sp.SpotPrice), 64)
		if err != nil || usd <= 0 {
			continue
		}
		at := aws.ToTime(sp.Timestamp)
		z := aws.ToString(sp.AvailabilityZone)
		if cur, ok := byZone[z]; !ok || at.After(cur.at) {
			byZone[z] = latest{at, usd}
		}
	}
	if len(byZone) == 0 {
		return 0, fmt.Errorf("no spot price history")
	}
	best := 0.0
	for _, l := range byZone {
		best = max(best, l.usd)
	}
	return best, nil
}

// runCost is the cost of running from..to at usdPerHour.
func runCost(from, to time.Time, usdPerHour float64) float64 {
	if from.IsZero() || !to.After(from) {
		return 0
	}
	return to.Sub(from).Hours() * usdPerHour
}

// dryRunCostBound is the most the items can cost if every one runs to its TTL (an
// item's own, else defaultTTL), and how many items were priced from each source.
// Items with no TTL have no bound: they add nothing and are counted under "no-ttl". An
// item with a capacity fallback is priced at its most expensive candidate.
func (p *pricer) dryRunCostBound(ctx context.Context, items []item, defaultTTL time.Duration) (usd float64, sources map[string]int) {
	sources = map[string]int{}
	for _, it := range items {
		ttl := it.TTL
		if ttl == 0 {
			ttl = defaultTTL
		}
		if ttl <= 0 {
			sources[priceSourceNoTTL]++
			continue
		}
		price, src := p.dearestCandidate(ctx, it)
		sources[src]++
		usd += price * ttl.Hours()
	}
	return usd, sources
}

// dearestCandidate is the highest hourly price among the item's candidates (type,
// region, market) and where it came from: a fallback may run the item on any of them.
func (p *pricer) dearestCandidate(ctx context.Context, it item) (usdPerHour float64, source string) {
	for i, c := range candidatesOf(it) {
		price, src := p.priceFor(ctx, c.Region, c.InstanceType, c.Spot)
		if i == 0 || price > usdPerHour {
			usdPerHour, source = price, src
		}
	}
	return usdPerHour, source
}
