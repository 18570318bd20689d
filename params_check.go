package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"
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
