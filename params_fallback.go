package main

import (
	"fmt"
	"slices"
	"strings"
)

// Capacity fallback in the parameter file: instance_type and region may be lists in
// order of preference, spot may be "prefer", and ami, subnet_id and security_group_ids
// may be given per region ({"us-east-1": "ami-…", "us-west-2": "ami-…"}). A fallback
// that cannot work is refused when the file is checked.

// fallback is what an item may launch as besides its first choice. Items share one
// when it comes from the defaults: it is never changed once made (see item.fallbackCopy).
type fallback struct {
	InstanceTypes  []string            // in order of preference; [0] is item.InstanceType
	Regions        []string            // in order of preference; [0] is item.Region
	SpotPrefer     bool                // spot first, then on-demand, for each type and region
	AMIs           map[string]string   // region → AMI
	Subnets        map[string]string   // region → subnet
	SecurityGroups map[string][]string // region → security groups
}

// maxCandidates bounds the launches one item may try in turn (types × regions ×
// markets): each is looked up by its own token, by the engine and by a cancel.
const maxCandidates = 16

// fallbackCopy returns a copy of the item's fallback for it to change: the one it has
// may be the defaults', shared with every other item.
func (it *item) fallbackCopy() *fallback {
	f := &fallback{}
	if it.Fallback != nil {
		*f = *it.Fallback
	}
	it.Fallback = f
	return f
}

// dropFallbackIfEmpty keeps items without any fallback at Fallback == nil.
func (it *item) dropFallbackIfEmpty() {
	f := it.Fallback
	if f != nil && f.InstanceTypes == nil && f.Regions == nil && !f.SpotPrefer && f.AMIs == nil && f.Subnets == nil && f.SecurityGroups == nil {
		it.Fallback = nil
	}
}

// setInstanceTypes reads instance_type: one type, or a list in order of preference.
func (p *paramParser) setInstanceTypes(it *item, f field, at where) error {
	if f.val[0] != '[' {
		s, err := p.str(f, at)
		if err == nil && !validInstanceType(s) {
			err = p.errAt(f.off, at, "%q is not an instance type: use family.size, e.g. t3.micro, c7gn.16xlarge or u-6tb1.metal", s)
		}
		if err == nil {
			it.InstanceType = s
			if it.Fallback != nil && it.Fallback.InstanceTypes != nil {
				it.resetFallback("instance_type")
			}
		}
		return err
	}
	list, err := p.stringList(f, at, "instance types", func(s string, off int, el where) error {
		if !validInstanceType(s) {
			return p.errAt(off, el, "%q is not an instance type: use family.size, e.g. t3.micro", s)
		}
		return nil
	})
	if err == nil {
		it.InstanceType = list[0]
		it.setList(&it.fallbackCopy().InstanceTypes, list)
	}
	return err
}

// setRegions reads region: one region, or a list in order of preference.
func (p *paramParser) setRegions(it *item, f field, at where) error {
	if f.val[0] != '[' {
		r, err := p.region(f, at)
		if err == nil {
			it.Region = r
			if it.Fallback != nil && it.Fallback.Regions != nil {
				it.resetFallback("region")
			}
		}
		return err
	}
	list, err := p.stringList(f, at, "regions", func(s string, off int, el where) error {
		return p.checkRegion(s, off, el)
	})
	if err == nil {
		it.Region = list[0]
		it.setList(&it.fallbackCopy().Regions, list)
	}
	return err
}

// setList stores a preference list: nil when it holds one value (no fallback).
func (it *item) setList(dst *[]string, list []string) {
	if len(list) < 2 {
		list = nil
	}
	*dst = list
	it.dropFallbackIfEmpty()
}

// stringList reads a non-empty list of distinct strings, each checked by check.
func (p *paramParser) stringList(f field, at where, what string, check func(s string, off int, el where) error) ([]string, error) {
	var list []string
	err := elements(f.val, func(rel int, v []byte) error {
		off, el := f.off+rel, at.inner(len(list))
		if v[0] != '"' {
			return p.errAt(off, el, "expected a string, found %s: list the %s in order of preference", p.kindOf(v), what)
		}
		s, ok := p.unquote(v)
		if !ok {
			return p.errAt(off, el, "the value is not valid UTF-8: save the file as UTF-8")
		}
		if err := check(s, off, el); err != nil {
			return err
		}
		if slices.Contains(list, s) {
			return p.errAt(off, el, "%q is listed twice: keep one", s)
		}
		list = append(list, s)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(list) == 0 {
		return nil, p.errAt(f.off, at, "the list is empty: give the %s in order of preference, or remove the key", what)
	}
	return list, nil
}

// setSpot reads spot: true, false, or "prefer" (spot first, on-demand when refused).
func (p *paramParser) setSpot(it *item, f field, at where) error {
	prefer := false
	switch string(f.val) {
	case "true":
		it.Spot = true
	case "false":
		it.Spot = false
	case `"prefer"`:
		it.Spot, prefer = true, true
	case `"true"`, `"false"`, `"yes"`, `"no"`, `"True"`, `"False"`:
		// YAML reads an unquoted yes or no as text, and CSV has only text.
		return p.errAt(f.off, at, `expected true, false or "prefer", found a string: write true or false unquoted, or "prefer" for spot first and on-demand when spot is refused`)
	default:
		return p.errAt(f.off, at, `expected true, false or "prefer", found %s`, p.kindOf(f.val))
	}
	if prefer || (it.Fallback != nil && it.Fallback.SpotPrefer) {
		it.fallbackCopy().SpotPrefer = prefer
		it.dropFallbackIfEmpty()
	}
	return nil
}

// perRegion reads a per-region object of ami, subnet_id or security_group_ids: each
// member is a region and a value read by one.
func (p *paramParser) perRegion(f field, at where, one func(f field, at where) error) error {
	w := &walker{b: f.val, i: 1}
	n := 0
	for {
		w.skipWS()
		if w.b[w.i] == '}' {
			break
		}
		if w.b[w.i] == ',' {
			w.i++
			w.skipWS()
		}
		koff := f.off + w.i
		key, ok := p.unquote(w.str())
		if !ok {
			return p.errAt(koff, at, "a key is not valid UTF-8: save the file as UTF-8")
		}
		el := at
		el.key += "." + key
		if el.path != "" {
			el.path += "." + key
		}
		if !slices.Contains(awsRegions[:], key) {
			hint := "name each region, e.g. us-east-1"
			if s := closest(key, awsRegions[:]); s != "" {
				hint = fmt.Sprintf("did you mean %q?", s)
			}
			return p.errAt(koff, el, "%q is not an AWS region: %s", key, hint)
		}
		w.skipWS()
		w.i++ // ':'
		w.skipWS()
		off := f.off + w.i
		if err := one(field{key: key, val: w.value(), off: off, at: el}, el); err != nil {
			return err
		}
		n++
	}
	if n == 0 {
		return p.errAt(f.off, at, `the object is empty: give one value per region, e.g. {"us-east-1": ..., "us-west-2": ...}`)
	}
	return nil
}

// setPerRegionKey reads ami, subnet_id or security_group_ids as an object of regions.
// handled is false for any other key or form.
func (p *paramParser) setPerRegionKey(it *item, f field, at where) (handled bool, err error) {
	if f.val[0] != '{' {
		if f.key == "ami" || f.key == "subnet_id" || f.key == "security_group_ids" {
			it.clearPerRegion(f.key)
		}
		return false, nil
	}
	var amis, subnets map[string]string
	var groups map[string][]string
	switch f.key {
	case "ami":
		amis = map[string]string{}
		err = p.perRegion(f, at, func(g field, el where) error {
			s, err := p.str(g, el)
			if err == nil && !validAMI(s) {
				err = p.errAt(g.off, el, "%q is not an AMI id: use ami-0123456789abcdef0 or resolve:ssm:<parameter>", s)
			}
			amis[g.key] = s
			return err
		})
	case "subnet_id":
		subnets = map[string]string{}
		err = p.perRegion(f, at, func(g field, el where) error {
			s, err := p.str(g, el)
			if err == nil && !hasIDPrefix(s, "subnet-") {
				err = p.errAt(g.off, el, "%q is not a subnet id: use subnet-0123456789abcdef0", s)
			}
			subnets[g.key] = s
			return err
		})
	case "security_group_ids":
		groups = map[string][]string{}
		err = p.perRegion(f, at, func(g field, el where) error {
			ids, err := p.securityGroups(g, el)
			groups[g.key] = ids
			return err
		})
	default:
		return false, nil
	}
	if err != nil {
		return true, err
	}
	fb := it.fallbackCopy()
	switch f.key {
	case "ami":
		it.AMI, fb.AMIs = "", amis
	case "subnet_id":
		it.SubnetID, fb.Subnets = "", subnets
	case "security_group_ids":
		it.SecurityGroupIDs, fb.SecurityGroups = nil, groups
	}
	return true, nil
}

// clearPerRegion takes back a per-region value the defaults gave, when the item gives
// one value (or null) instead.
func (it *item) clearPerRegion(key string) {
	f := it.Fallback
	if f == nil {
		return
	}
	switch {
	case key == "ami" && f.AMIs != nil:
		it.fallbackCopy().AMIs = nil
	case key == "subnet_id" && f.Subnets != nil:
		it.fallbackCopy().Subnets = nil
	case key == "security_group_ids" && f.SecurityGroups != nil:
		it.fallbackCopy().SecurityGroups = nil
	default:
		return
	}
	it.dropFallbackIfEmpty()
}

// resetFallback is null for instance_type, region or spot: back to one value.
func (it *item) resetFallback(key string) {
	if it.Fallback == nil {
		return
	}
	switch key {
	case "instance_type":
		it.fallbackCopy().InstanceTypes = nil
	case "region":
		it.fallbackCopy().Regions = nil
	case "spot":
		it.fallbackCopy().SpotPrefer = false
	default:
		it.clearPerRegion(key)
		return
	}
	it.dropFallbackIfEmpty()
}

// checkFallback refuses a fallback that cannot work: one literal AMI, subnet or set of
// security groups for several regions (each is one region's), one AMI for instance
// types of different architectures, a per-region value missing one of the item's
// regions, or more candidates than maxCandidates. origin says "(from defaults)".
func (p *paramParser) checkFallback(it *item, at where, off int, origin func(string) string) error {
	fb := it.Fallback
	if fb == nil {
		return nil
	}
	regions := fb.Regions
	if len(regions) > 1 {
		switch {
		case it.AMI != "" && !strings.HasPrefix(it.AMI, "resolve:ssm:"):
			return p.errAt(off, at, `ami %q%s is one region's image, and the item may launch in %s: give one per region, e.g. "ami": {%q: "ami-…", %q: "ami-…"}`,
				it.AMI, origin("ami"), strings.Join(regions, ", "), regions[0], regions[1])
		case it.SubnetID != "":
			return p.errAt(off, at, `subnet_id %q%s is in one region, and the item may launch in %s: give one per region, e.g. "subnet_id": {%q: "subnet-…", %q: "subnet-…"}`,
				it.SubnetID, origin("subnet_id"), strings.Join(regions, ", "), regions[0], regions[1])
		case len(it.SecurityGroupIDs) > 0:
			return p.errAt(off, at, `security_group_ids%s belong to one region's VPC, and the item may launch in %s: give them per region, e.g. "security_group_ids": {%q: ["sg-…"], %q: ["sg-…"]}`,
				origin("security_group_ids"), strings.Join(regions, ", "), regions[0], regions[1])
		}
	}
	if err := p.checkArchitectures(it, at, off, origin); err != nil {
		return err
	}
	for _, per := range []struct {
		key string
		has func(string) bool
		set bool
	}{
		{"ami", func(r string) bool { _, ok := fb.AMIs[r]; return ok }, fb.AMIs != nil},
		{"subnet_id", func(r string) bool { _, ok := fb.Subnets[r]; return ok }, fb.Subnets != nil},
		{"security_group_ids", func(r string) bool { _, ok := fb.SecurityGroups[r]; return ok }, fb.SecurityGroups != nil},
	} {
		if !per.set {
			continue
		}
		rs := regions
		if rs == nil && it.Region != "" {
			rs = []string{it.Region}
		}
		if rs == nil {
			return p.errAt(off, at, `%s%s is given per region, but the item names no region: add "region" (one, or a list in order of preference)`, per.key, origin(per.key))
		}
		for _, r := range rs {
			if !per.has(r) {
				return p.errAt(off, at, "%s%s has no value for region %s, where the item may launch: add %q to it", per.key, origin(per.key), r, r)
			}
		}
	}
	if n := len(candidatesOf(*it)); n > maxCandidates {
		return p.errAt(off, at, "%d instance types × %d regions%s make %d launches to try in turn, over spawn's %d: shorten the lists",
			max(len(fb.InstanceTypes), 1), max(len(regions), 1), map[bool]string{true: ` × 2 markets ("prefer")`}[fb.SpotPrefer], n, maxCandidates)
	}
	return nil
}

// checkArchitectures refuses one AMI (literal, per region, or an SSM parameter, each one
// architecture's image) for instance types of different architectures.
func (p *paramParser) checkArchitectures(it *item, at where, off int, origin func(string) string) error {
	fb := it.Fallback
	if len(fb.InstanceTypes) < 2 || (it.AMI == "" && fb.AMIs == nil) {
		return nil
	}
	first := fb.InstanceTypes[0]
	for _, t := range fb.InstanceTypes[1:] {
		if instanceArch(t) != instanceArch(first) {
			return p.errAt(off, at, `ami%s is an image of one architecture, and instance types %s (%s) and %s (%s) are listed: list types of one architecture, or remove "ami" so that spawn picks Amazon Linux 2023 for each`,
				origin("ami"), first, instanceArch(first), t, instanceArch(t))
		}
	}
	return nil
}
