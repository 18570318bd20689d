package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
)

// The candidates of an item with a capacity fallback (params_fallback.go): each
// instance type in the first region, then in the next region, spot before on-demand for
// each with "prefer"; how candidate k launches, and its own client token.

// candidate is one way an item may launch. Region "" is the sweep's region.
type candidate struct {
	InstanceType string
	Region       string
	Spot         bool
}

func (c candidate) String() string {
	market := "on-demand"
	if c.Spot {
		market = "spot"
	}
	if c.Region == "" {
		return c.InstanceType + " " + market
	}
	return c.InstanceType + " " + market + " in " + c.Region
}

// candidatesOf lists the item's candidates in the order they are tried.
func candidatesOf(it item) []candidate {
	fb := it.Fallback
	if fb == nil {
		return []candidate{{it.InstanceType, it.Region, it.Spot}}
	}
	types, regions := fb.InstanceTypes, fb.Regions
	if types == nil {
		types = []string{it.InstanceType}
	}
	if regions == nil {
		regions = []string{it.Region}
	}
	markets := []bool{it.Spot}
	if fb.SpotPrefer {
		markets = []bool{true, false}
	}
	out := make([]candidate, 0, len(types)*len(regions)*len(markets))
	for _, r := range regions {
		for _, t := range types {
			for _, spot := range markets {
				out = append(out, candidate{t, r, spot})
			}
		}
	}
	return out
}

// candidateItem is item it as candidate k launches it: its type, region, market, and
// that region's AMI, subnet and security groups. A default AMI comes from sw.AMIs
// (resolveAMIs fills it for every candidate's region and type).
func candidateItem(sw *sweep, it item, k int) item {
	fb := it.Fallback
	if fb == nil {
		return it
	}
	cands := candidatesOf(it)
	k = min(max(k, 0), len(cands)-1)
	c := cands[k]
	it.InstanceType, it.Region, it.Spot, it.Candidate = c.InstanceType, c.Region, c.Spot, k
	region := regionOf(sw, it)
	switch {
	case fb.AMIs != nil:
		it.AMI = fb.AMIs[region]
	case it.AMI == "":
		it.AMI = sw.AMIs[region+"/"+c.InstanceType]
	}
	if fb.Subnets != nil {
		it.SubnetID = fb.Subnets[region]
	}
	if fb.SecurityGroups != nil {
		it.SecurityGroupIDs = fb.SecurityGroups[region]
	}
	if !it.Spot {
		it.SpotMaxPrice = ""
	}
	return it
}

// candidateToken is the client token of candidate k of (sweep, index, attempt): the
// item's one token for its first candidate, its own for every other.
func candidateToken(sweepID string, index, attempt, k int) string {
	if k == 0 {
		return clientToken(sweepID, index, attempt)
	}
	h := sha256.New()
	fmt.Fprintf(h, "spawn\x00%s\x00%d\x00%d\x00%d", sweepID, index, attempt, k)
	return hex.EncodeToString(h.Sum(nil))
}

// candidateRegions are every region item it may launch in.
func candidateRegions(sw *sweep, it item) []string {
	var out []string
	for _, c := range candidatesOf(it) {
		r := c.Region
		if r == "" {
			r = sw.Region
		}
		if !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	return out
}

// fallbackCodes are the refusals another candidate may not get: capacity, quotas and
// the spot market (EC2 API reference, "Error codes"). Throttling, EC2's own errors and
// IAM propagation are retried on the same candidate.
var fallbackCodes = map[string]bool{
	"VcpuLimitExceeded":                 true,
	"InstanceLimitExceeded":             true,
	"MaxSpotInstanceCountExceeded":      true,
	"InsufficientFreeAddressesInSubnet": true,
	"SpotMaxPriceTooLow":                true,
	"UnfulfillableCapacity":             true,
}

func fallbackRefusal(code string) bool {
	return fallbackCodes[code] || strings.HasPrefix(code, "Insufficient") && strings.HasSuffix(code, "Capacity")
}
