package main

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// The checks of single values of the parameter file (durations, instance types, ids,
// regions) and the "did you mean" that goes with them.

// awsRegions are the regions EC2 can launch in. The list is compiled in because the
// authoritative DescribeRegions needs the network and credentials, and the file must be
// checked before anything talks to AWS (and in --dry-run, without a deployment).
var awsRegions = [...]string{
	"af-south-1",
	"ap-east-1", "ap-east-2",
	"ap-northeast-1", "ap-northeast-2", "ap-northeast-3",
	"ap-south-1", "ap-south-2",
	"ap-southeast-1", "ap-southeast-2", "ap-southeast-3", "ap-southeast-4", "ap-southeast-5",
	"ap-southeast-6", "ap-southeast-7",
	"ca-central-1", "ca-west-1",
	"cn-north-1", "cn-northwest-1",
	"eu-central-1", "eu-central-2",
	"eu-north-1",
	"eu-south-1", "eu-south-2",
	"eu-west-1", "eu-west-2", "eu-west-3",
	"il-central-1",
	"me-central-1", "me-south-1",
	"mx-central-1",
	"sa-east-1",
	"us-east-1", "us-east-2",
	"us-gov-east-1", "us-gov-west-1",
	"us-west-1", "us-west-2",
}

// maxDurationDays bounds every duration far below time.Duration's 292 years, so sums
// such as TTL plus a minute never overflow.
const maxDurationDays = 3660

// parseDuration accepts Go durations (90m, 2h30m) and a leading number of days (2d, 1d12h).
func parseDuration(s string) (time.Duration, error) {
	i := strings.IndexByte(s, 'd')
	if i < 0 {
		d, err := time.ParseDuration(s)
		if err == nil && d > maxDurationDays*24*time.Hour {
			return 0, fmt.Errorf("duration %q is over %d days", s, maxDurationDays)
		}
		return d, err
	}
	num, rest := s[:i], s[i+1:]
	if num == "" || strings.Trim(num, "0123456789.") != "" {
		return 0, fmt.Errorf("bad number of days %q", num)
	}
	days, err := strconv.ParseFloat(num, 64)
	if err != nil || days > maxDurationDays {
		return 0, fmt.Errorf("bad number of days %q", num)
	}
	d := time.Duration(days * float64(24*time.Hour))
	if rest != "" {
		if rest[0] == '-' || rest[0] == '+' {
			return 0, fmt.Errorf("bad duration %q", s)
		}
		r, err := time.ParseDuration(rest)
		if err != nil {
			return 0, err
		}
		d += r
	}
	if d > maxDurationDays*24*time.Hour {
		return 0, fmt.Errorf("duration %q is over %d days", s, maxDurationDays)
	}
	return d, nil
}

// shortDuration prints a duration without zero units: 2h, 90m → 1h30m, 48h.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// validInstanceType checks the family.size form (t3.micro, c7gn.16xlarge, u-6tb1.metal,
// mac2-m2pro.metal, c6i.metal-24xl) without a list, which would age with every new family.
func validInstanceType(s string) bool {
	dot := strings.IndexByte(s, '.')
	if dot <= 0 || strings.IndexByte(s[dot+1:], '.') >= 0 {
		return false
	}
	family, size := s[:dot], s[dot+1:]
	if !isWord(family) || family[0] < 'a' || family[0] > 'z' || strings.IndexAny(family, "0123456789") < 0 {
		return false
	}
	switch size {
	case "nano", "micro", "small", "medium", "large", "xlarge", "metal":
		return true
	}
	if n, ok := strings.CutSuffix(size, "xlarge"); ok {
		return isCount(n)
	}
	if n, ok := strings.CutPrefix(size, "metal-"); ok {
		n, ok = strings.CutSuffix(n, "xl")
		return ok && isCount(n)
	}
	return false
}

// isWord is lower-case letters and digits in dash-separated parts.
func isWord(s string) bool {
	if s == "" || s[0] == '-' || s[len(s)-1] == '-' || strings.Contains(s, "--") {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

func isCount(s string) bool {
	if s == "" || s[0] == '0' || len(s) > 4 {
		return false
	}
	return strings.Trim(s, "0123456789") == ""
}

func validAMI(s string) bool {
	if name, ok := strings.CutPrefix(s, "resolve:ssm:"); ok {
		return name != ""
	}
	return hasIDPrefix(s, "ami-")
}

// readableAMIParameter: an AMI that is no SSM parameter, or one the orchestrator's policy
// lets it (and EC2 on its behalf) read (policy.go, amiParameterARNs).
func readableAMIParameter(s string) bool {
	name, ok := strings.CutPrefix(s, "resolve:ssm:")
	return !ok || strings.HasPrefix(name, publicAMIParameters) || strings.HasPrefix(name, ownAMIParameters)
}

// hasIDPrefix checks an EC2 id such as sg-0abc: the prefix, then 8 or 17 hex digits.
func hasIDPrefix(s, prefix string) bool {
	h, ok := strings.CutPrefix(s, prefix)
	if !ok || (len(h) != 8 && len(h) != 17) {
		return false
	}
	for i := 0; i < len(h); i++ {
		if c := h[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// closest suggests the candidate within two edits of s, for "did you mean".
func closest(s string, candidates []string) string {
	best, bestD := "", 3
	for _, c := range candidates {
		if d := editDistance(s, c); d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 99
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// str is a value that must be a string.
func (p *paramParser) str(f field, at where) (string, error) {
	if f.val[0] != '"' {
		return "", p.errAt(f.off, at, "expected a string, found %s", p.kindOf(f.val))
	}
	s, ok := p.unquote(f.val)
	if !ok {
		return "", p.errAt(f.off, at, "the value is not valid UTF-8: save the file as UTF-8")
	}
	return s, nil
}

// nonEmpty is a string value with more than white space; what names it in the message.
func (p *paramParser) nonEmpty(f field, at where, what string) (string, error) {
	s, err := p.str(f, at)
	if err == nil && strings.TrimSpace(s) == "" {
		err = p.errAt(f.off, at, "is empty: give %s or remove the key", what)
	}
	return s, err
}

func (p *paramParser) region(f field, at where) (string, error) {
	r, err := p.str(f, at)
	if err != nil {
		return r, err
	}
	return r, p.checkRegion(r, f.off, at)
}

// checkRegion refuses a region that does not exist, naming the closest that does.
func (p *paramParser) checkRegion(r string, off int, at where) error {
	if slices.Contains(awsRegions[:], r) {
		return nil
	}
	hint := "use a region name such as us-east-1 or eu-west-2"
	if s := closest(r, awsRegions[:]); s != "" {
		hint = fmt.Sprintf("did you mean %q?", s)
	}
	return p.errAt(off, at, "%q is not an AWS region: %s", r, hint)
}

// spotMaxPrice takes the price as a string or a number, as written.
func (p *paramParser) spotMaxPrice(f field, at where) (string, error) {
	var s string
	var err error
	switch f.val[0] {
	case '"':
		s, err = p.str(f, at)
	case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		s = p.internBytes(f.val)
	default:
		err = p.errAt(f.off, at, "expected a price in USD per hour like \"0.05\", found %s", p.kindOf(f.val))
	}
	if err == nil {
		if v, perr := strconv.ParseFloat(s, 64); perr != nil || !(v > 0) || math.IsInf(v, 0) {
			err = p.errAt(f.off, at, "%q is not a price: use USD per hour like \"0.05\"", s)
		}
	}
	return s, err
}

func (p *paramParser) duration(f field, at where) (time.Duration, error) {
	if f.val[0] != '"' {
		return 0, p.errAt(f.off, at, `expected a duration string like "90m", "2h" or "1d", found %s`, p.kindOf(f.val))
	}
	s, err := p.str(f, at)
	if err != nil {
		return 0, err
	}
	d, err := parseDuration(s)
	if err != nil {
		return 0, p.errAt(f.off, at, "%q is not a duration: use a Go duration like 90m or 2h30m, or days like 2d", s)
	}
	if d <= 0 {
		return 0, p.errAt(f.off, at, "%q must be more than zero: give how long the instance may run, e.g. 2h", s)
	}
	return d, nil
}

func (p *paramParser) securityGroups(f field, at where) ([]string, error) {
	if f.val[0] != '[' {
		return nil, p.errAt(f.off, at, `expected %s of strings like ["sg-0123456789abcdef0"], found %s`, p.listWord(), p.kindOf(f.val))
	}
	var ids []string
	// The walk is over the value itself: a grid or random value need not sit at f.off
	// of the data, but its elements are at f.off plus their offset in it.
	err := elements(f.val, func(rel int, v []byte) error {
		off, el := f.off+rel, at.inner(len(ids))
		if v[0] != '"' {
			return p.errAt(off, el, "expected a string like \"sg-0123456789abcdef0\", found %s", p.kindOf(v))
		}
		s, ok := p.unquote(v)
		if !ok || !hasIDPrefix(s, "sg-") {
			return p.errAt(off, el, "%q is not a security group id: use sg-0123456789abcdef0", s)
		}
		ids = append(ids, s)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(ids) == 0 {
		return nil, p.errAt(f.off, at, "the list is empty: give at least one sg-… id or remove the key for the VPC's default group")
	}
	return ids, nil
}

// paramValue renders a param's value as the text the instance sees: strings as they are,
// numbers as written in the file, booleans as true/false.
func (p *paramParser) paramValue(f field, at where) (string, error) {
	var v string
	switch c := f.val[0]; {
	case c == '"':
		s, ok := p.unquote(f.val)
		if !ok {
			return "", p.errAt(f.off, at, "the value is not valid UTF-8: save the file as UTF-8")
		}
		v = s
	case c == 't' || c == 'f' || c == '-' || (c >= '0' && c <= '9'):
		v = p.internBytes(f.val)
	default:
		return "", p.errAt(f.off, at, "a param's value must be a string, number or boolean, found %s: flatten it into several keys or a string", p.kindOf(f.val))
	}
	if strings.IndexByte(v, 0) >= 0 {
		return "", p.errAt(f.off, at, "the value contains a NUL character, which no environment variable can hold: remove it")
	}
	if n := utf8.RuneCountInString(v); n > maxTagValueLen {
		return "", p.errAt(f.off, at, "the value is %d characters, over EC2's tag value limit of %d: shorten it or have the command read it from a file", n, maxTagValueLen)
	}
	return v, nil
}

// checkParamKey keeps a param's key usable both as env var PARAM_<key> and as tag
// spawn:param:<key>.
func (p *paramParser) checkParamKey(f field, at where) error {
	k := f.key
	if p.goodKeys[k] {
		return nil
	}
	if k == "" {
		return p.errAt(f.koff, at, "a param's key is empty: name it with letters, digits and _")
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return p.errAt(f.koff, at, "a param's key may hold only letters, digits and _ (it becomes env var %s<key>): rename %q", paramEnvPrefix, k)
		}
	}
	if len(paramTagPrefix)+len(k) > maxTagKeyLen {
		return p.errAt(f.koff, at, "the key is %d characters; as tag %s<key> it passes EC2's %d: use at most %d", len(k), paramTagPrefix, maxTagKeyLen, maxTagKeyLen-len(paramTagPrefix))
	}
	for _, known := range knownKeys {
		if strings.EqualFold(k, known) {
			return p.errAt(f.koff, at, "keys are case-sensitive: did you mean %q?", known)
		}
	}
	p.goodKeys[k] = true
	return nil
}

// resetKey puts a known key back to spawn's own default.
func resetKey(it *item, key string) {
	it.resetFallback(key)
	switch key {
	case "name":
		it.Name = ""
	case "instance_type":
		it.InstanceType = defaultInstanceType
	case "region":
		it.Region = ""
	case "ami":
		it.AMI = ""
	case "key_name":
		it.KeyName = ""
	case "subnet_id":
		it.SubnetID = ""
	case "security_group_ids":
		it.SecurityGroupIDs = nil
	case "iam_instance_profile":
		it.IAMInstanceProfile = defaultInstanceProfile
	case "spot":
		it.Spot = false
	case "spot_max_price":
		it.SpotMaxPrice = ""
	case "ttl":
		it.TTL = 0
	case "idle_timeout":
		it.IdleTimeout = 0
	case "command":
		it.Command = ""
	case "user_data":
		it.UserData = ""
	}
}
