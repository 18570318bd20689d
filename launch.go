package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	fs2 "io/fs"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	"github.com/peterbourgon/ff/v3/ffcli"
)

// item is one parameter set of a sweep after defaults were merged and validated.
// Items are numbered from 0 in file order.
type item struct {
	Index              int
	Name               string
	InstanceType       string // default t3.micro
	Region             string // empty: the sweep's region
	AMI                string // empty: latest Amazon Linux 2023 for the type's architecture (SSM)
	KeyName            string
	SubnetID           string
	SecurityGroupIDs   []string
	IAMInstanceProfile string // default spawnd-role
	Spot               bool
	SpotMaxPrice       string
	TTL                time.Duration
	IdleTimeout        time.Duration
	Command            string
	UserData           string
	// Params are every other key, sorted by key: env PARAM_<key> and tag spawn:param:<key>.
	// Items may share one Params slice (the defaults'): treat it as read-only.
	Params []param
}

type param struct {
	Key   string
	Value string
}

// launchRequest is what `spawn launch` hands on once flags and the file are valid.
type launchRequest struct {
	ParamFile     string // path as given
	Raw           []byte // the file's bytes: uploaded as-is, re-parsed by the orchestrator
	Items         []item
	Name          string
	MaxConcurrent int
	LaunchDelay   time.Duration
	PollInterval  time.Duration
	TTL           time.Duration // sweep-wide default for items without their own
	IdleTimeout   time.Duration
	Detach        bool
	Wait          bool
}

const (
	defaultInstanceType    = "t3.micro"
	defaultInstanceProfile = "spawnd-role"

	// EC2's limits on tags (per resource), and on user data before base64.
	maxTagsPerResource = 50
	maxTagKeyLen       = 128
	maxTagValueLen     = 256
	maxUserDataBytes   = 16 * 1024

	paramTagPrefix = "spawn:param:"
	paramEnvPrefix = "PARAM_"
)

// Tag keys spawn puts on every instance.
const (
	tagSweepID    = "spawn:sweep-id"
	tagSweepIndex = "spawn:sweep-index"
	tagAttempt    = "spawn:attempt"
	tagManaged    = "spawn:managed"
	tagTTL        = "spawn:ttl"
	tagExitCode   = "spawn:exit-code"
	tagName       = "Name"
)

// knownKeys are the parameter-file keys that configure the launch; every other key is a param.
var knownKeys = [...]string{
	"name", "instance_type", "region", "ami", "key_name", "subnet_id", "security_group_ids",
	"iam_instance_profile", "spot", "spot_max_price", "ttl", "idle_timeout", "command", "user_data",
}

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

// ---------------------------------------------------------------------------------------
// The parameter file

// paramParser holds one parse: the file's bytes for positions in messages, and the
// strings seen so far so that keys and repeated values are allocated once.
type paramParser struct {
	file   string
	data   []byte
	intern map[string]string
	// drop are the param keys the current item sets to null.
	drop []string
	// goodKeys are param keys already checked: items repeat the same few.
	goodKeys map[string]bool
	// fixedTags is how many non-param tags an instance carries, without and with a TTL.
	fixedTags [2]int
}

// field is one key/value of a JSON object, with the value's byte offset in the file.
type field struct {
	key string
	val []byte
	off int
}

// parseParamFile parses and validates a parameter file (SPEC.md "Parameter file").
// Every error is a usage error whose one line names the file, the place and the fix.
func parseParamFile(path string, data []byte) ([]item, error) {
	p := &paramParser{file: path, data: data, intern: make(map[string]string, 64), goodKeys: make(map[string]bool)}
	p.fixedTags[0] = len(fixedTags("", "", 0, 0, 0))
	p.fixedTags[1] = len(fixedTags("", "", 0, 0, time.Minute))
	return p.parse()
}

func (p *paramParser) parse() ([]item, error) {
	data := p.data
	start := 0
	if bytes.HasPrefix(data, []byte("\xef\xbb\xbf")) { // a UTF-8 byte-order mark some editors write
		start = 3
	}
	if len(bytes.TrimSpace(data[start:])) == 0 {
		return nil, usageErrorf(`%s: the file is empty — write {"defaults": {...}, "params": [{...}, ...]}`, p.file)
	}
	if !json.Valid(data[start:]) {
		return nil, p.syntaxError(start)
	}
	w := &walker{b: data, i: start}
	w.skipWS()
	if data[w.i] != '{' {
		return nil, p.errAt(w.i, where{idx: atTop}, `expected a JSON object {"defaults": {...}, "params": [...]}, found %s`, kindOf(data[w.i:]))
	}
	top, err := p.fields(w, where{idx: atTop}, nil)
	if err != nil {
		return nil, err
	}
	var defaults, params *field
	for i := range top {
		f := &top[i]
		switch f.key {
		case "defaults":
			defaults = f
		case "params":
			params = f
		default:
			hint := `the file takes only "defaults" and "params"`
			if s := closest(f.key, []string{"defaults", "params"}); s != "" {
				hint = fmt.Sprintf("did you mean %q?", s)
			}
			return nil, p.errAt(f.off, where{idx: atTop}, "unknown top-level key %q — %s", f.key, hint)
		}
	}
	if params == nil {
		return nil, p.errAt(start, where{idx: atTop}, `no "params" — add "params": [{...}, ...] with one object per instance`)
	}

	tmpl := item{InstanceType: defaultInstanceType, IAMInstanceProfile: defaultInstanceProfile}
	var tmplParams []param
	var fromDefaults map[string]bool
	if defaults != nil {
		if defaults.val[0] != '{' {
			return nil, p.errAt(defaults.off, where{idx: atTop, key: "defaults"}, "expected an object of keys shared by every item, found %s", kindOf(defaults.val))
		}
		dw := &walker{b: data, i: defaults.off}
		dfields, err := p.fields(dw, where{idx: inDefaults}, nil)
		if err != nil {
			return nil, err
		}
		fromDefaults = make(map[string]bool, len(dfields))
		for _, f := range dfields {
			if err := p.apply(&tmpl, &tmplParams, inDefaults, f); err != nil {
				return nil, err
			}
			fromDefaults[f.key] = true
		}
		slices.SortFunc(tmplParams, func(a, b param) int { return strings.Compare(a.Key, b.Key) })
	}

	if params.val[0] != '[' {
		return nil, p.errAt(params.off, where{idx: atTop, key: "params"}, "expected an array of objects, one per instance, found %s", kindOf(params.val))
	}
	// Counting commas first sizes the slice once: 100,000 items must not mean 17 regrowths.
	items := make([]item, 0, estimateItems(params.val))
	pw := &walker{b: data, i: params.off + 1}
	var own []param
	var fs []field
	for {
		pw.skipWS()
		if data[pw.i] == ']' {
			break
		}
		if data[pw.i] == ',' {
			pw.i++
			pw.skipWS()
		}
		idx := len(items)
		off := pw.i
		if data[off] != '{' {
			return nil, p.errAt(off, where{idx: idx}, "expected an object of keys, found %s", kindOf(data[off:]))
		}
		it := tmpl
		it.Index = idx
		own = own[:0]
		var err error
		fs, err = p.fields(pw, where{idx: idx}, fs)
		if err != nil {
			return nil, err
		}
		for _, f := range fs {
			if err := p.apply(&it, &own, idx, f); err != nil {
				return nil, err
			}
		}
		it.Params = mergeParams(tmplParams, own)
		if len(p.drop) > 0 {
			it.Params = dropParams(it.Params, p.drop)
			p.drop = p.drop[:0]
		}
		if err := p.check(&it, off, fromDefaults, fs); err != nil {
			return nil, err
		}
		items = append(items, it)
	}
	if len(items) == 0 {
		return nil, p.errAt(params.off, where{idx: atTop, key: "params"}, `the list is empty — add one object per instance, e.g. [{"command": "./run.sh"}]`)
	}
	return items, nil
}

// check validates what only the merged item can tell.
func (p *paramParser) check(it *item, off int, fromDefaults map[string]bool, own []field) error {
	idx := it.Index
	origin := func(key string) string {
		for _, f := range own {
			if f.key == key {
				return ""
			}
		}
		if fromDefaults[key] {
			return " (from defaults)"
		}
		return ""
	}
	if it.Command != "" && it.UserData != "" {
		return p.errAt(off, where{idx: idx}, "both command%s and user_data%s are set — give command (spawn writes the script) or user_data (yours, verbatim), not both",
			origin("command"), origin("user_data"))
	}
	if it.Command == "" && it.UserData == "" {
		return p.errAt(off, where{idx: idx}, `nothing to run — give "command" (a shell line) or "user_data" here or in defaults`)
	}
	if it.SpotMaxPrice != "" && !it.Spot {
		return p.errAt(off, where{idx: idx}, `spot_max_price%s is set but spot is not true — add "spot": true or remove the price`, origin("spot_max_price"))
	}
	has := 0
	if it.TTL > 0 {
		has = 1
	}
	if n := p.fixedTags[has] + len(it.Params); n > maxTagsPerResource {
		return p.errAt(off, where{idx: idx}, "%d params make %d tags, over EC2's limit of %d per instance — use at most %d params per item",
			len(it.Params), n, maxTagsPerResource, maxTagsPerResource-p.fixedTags[has])
	}
	if it.Command != "" {
		if n := userDataEstimate(it); n > maxUserDataBytes {
			return p.errAt(off, where{idx: idx}, "the instance script would be about %d bytes, over EC2's user-data limit of %d — move the long command or values into a script the command downloads",
				n, maxUserDataBytes)
		}
	}
	return nil
}

// fields reads the object at w.i (which must be '{') and moves past it. Keys are
// unescaped; a key given twice is refused, since JSON would silently keep the last.
func (p *paramParser) fields(w *walker, obj where, fs []field) ([]field, error) {
	fs = fs[:0]
	var seen map[string]bool
	w.i++ // '{'
	for {
		w.skipWS()
		c := w.b[w.i]
		if c == '}' {
			w.i++
			return fs, nil
		}
		if c == ',' {
			w.i++
			w.skipWS()
		}
		keyOff := w.i
		raw := w.str()
		key, ok := p.str(raw)
		if !ok {
			return nil, p.errAt(keyOff, obj, "a key is not valid UTF-8 — save the file as UTF-8")
		}
		w.skipWS()
		w.i++ // ':'
		w.skipWS()
		off := w.i
		val := w.value()
		if dup(fs, key, &seen) {
			return nil, p.errAt(keyOff, obj.with(key), "the key appears twice in one object — keep one")
		}
		fs = append(fs, field{key: key, val: val, off: off})
	}
}

// dup reports whether key is already among fs. Small objects are searched; a big one
// (a crafted file with thousands of keys) gets a set, so the check never goes quadratic.
func dup(fs []field, key string, seen *map[string]bool) bool {
	const small = 32
	if len(fs) < small {
		for _, f := range fs {
			if f.key == key {
				return true
			}
		}
		return false
	}
	if *seen == nil {
		*seen = make(map[string]bool, 2*small)
		for _, f := range fs {
			(*seen)[f.key] = true
		}
	}
	if (*seen)[key] {
		return true
	}
	(*seen)[key] = true
	return false
}

// where names a place in the file for messages: params[3].ttl, defaults.region. It is
// formatted only when a message needs it: parsing 100,000 items builds none.
type where struct {
	idx  int    // item index, or inDefaults, or atTop
	key  string // a key within it
	elem int    // 1 + index within an array value; 0: none
}

const (
	inDefaults = -1
	atTop      = -2
)

func (w where) with(key string) where { w.key = key; return w }

func (w where) String() string {
	var s string
	switch w.idx {
	case atTop:
		s = w.key
	case inDefaults:
		s = "defaults"
	default:
		s = "params[" + strconv.Itoa(w.idx) + "]"
	}
	if w.idx != atTop && w.key != "" {
		s += "." + w.key
	}
	if w.elem > 0 {
		s += "[" + strconv.Itoa(w.elem-1) + "]"
	}
	return s
}

// apply sets one key of an item (idx ≥ 0) or of the defaults (idx -1).
func (p *paramParser) apply(it *item, params *[]param, idx int, f field) error {
	at := where{idx: idx, key: f.key}
	str := func() (string, error) {
		if f.val[0] != '"' {
			return "", p.errAt(f.off, at, "expected a string, found %s", kindOf(f.val))
		}
		s, ok := p.str(f.val)
		if !ok {
			return "", p.errAt(f.off, at, "the value is not valid UTF-8 — save the file as UTF-8")
		}
		return s, nil
	}
	nonEmpty := func(what string) (string, error) {
		s, err := str()
		if err == nil && strings.TrimSpace(s) == "" {
			err = p.errAt(f.off, at, "is empty — give %s or remove the key", what)
		}
		return s, err
	}
	if string(f.val) == "null" {
		// null takes a key back out of the defaults for this item: a known key returns to
		// spawn's own default, a param is not set at all.
		if slices.Contains(knownKeys[:], f.key) {
			resetKey(it, f.key)
		} else {
			p.drop = append(p.drop, f.key)
		}
		return nil
	}
	var err error
	switch f.key {
	case "name":
		it.Name, err = nonEmpty("a short name")
		if err == nil && utf8.RuneCountInString(it.Name) > maxTagValueLen {
			err = p.errAt(f.off, at, "is over %d characters — shorten it", maxTagValueLen)
		}
	case "instance_type":
		if it.InstanceType, err = str(); err == nil && !validInstanceType(it.InstanceType) {
			err = p.errAt(f.off, at, "%q is not an instance type — use family.size, e.g. t3.micro, c7gn.16xlarge or u-6tb1.metal", it.InstanceType)
		}
	case "region":
		if it.Region, err = str(); err == nil && !slices.Contains(awsRegions[:], it.Region) {
			hint := "use a region name such as us-east-1 or eu-west-2"
			if s := closest(it.Region, awsRegions[:]); s != "" {
				hint = fmt.Sprintf("did you mean %q?", s)
			}
			err = p.errAt(f.off, at, "%q is not an AWS region — %s", it.Region, hint)
		}
	case "ami":
		if it.AMI, err = str(); err == nil && !validAMI(it.AMI) {
			err = p.errAt(f.off, at, "%q is not an AMI id — use ami-0123456789abcdef0 or resolve:ssm:<parameter>, or remove the key for Amazon Linux 2023", it.AMI)
		}
	case "key_name":
		it.KeyName, err = nonEmpty("the EC2 key pair name")
	case "subnet_id":
		if it.SubnetID, err = str(); err == nil && !hasIDPrefix(it.SubnetID, "subnet-") {
			err = p.errAt(f.off, at, "%q is not a subnet id — use subnet-0123456789abcdef0", it.SubnetID)
		}
	case "security_group_ids":
		it.SecurityGroupIDs, err = p.securityGroups(f, at)
	case "iam_instance_profile":
		it.IAMInstanceProfile, err = nonEmpty("the instance profile name")
	case "spot":
		switch string(f.val) {
		case "true":
			it.Spot = true
		case "false":
			it.Spot = false
		default:
			err = p.errAt(f.off, at, "expected true or false, found %s", kindOf(f.val))
		}
	case "spot_max_price":
		var s string
		switch f.val[0] {
		case '"':
			s, err = str()
		case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
			s = p.internBytes(f.val)
		default:
			err = p.errAt(f.off, at, "expected a price in USD per hour like \"0.05\", found %s", kindOf(f.val))
		}
		if err == nil {
			if v, perr := strconv.ParseFloat(s, 64); perr != nil || !(v > 0) || math.IsInf(v, 0) {
				err = p.errAt(f.off, at, "%q is not a price — use USD per hour like \"0.05\"", s)
			}
		}
		it.SpotMaxPrice = s
	case "ttl":
		it.TTL, err = p.duration(f, at, str)
	case "idle_timeout":
		it.IdleTimeout, err = p.duration(f, at, str)
		if err == nil && it.IdleTimeout < time.Minute {
			err = p.errAt(f.off, at, "%s is too short — CloudWatch alarms need at least 1m", it.IdleTimeout)
		}
	case "command":
		it.Command, err = nonEmpty("a shell command line")
	case "user_data":
		it.UserData, err = nonEmpty("the instance's user data")
		if err == nil && len(it.UserData) > maxUserDataBytes {
			err = p.errAt(f.off, at, "is %d bytes, over EC2's user-data limit of %d — have it download the rest", len(it.UserData), maxUserDataBytes)
		}
	default:
		var v string
		v, err = p.paramValue(f, at)
		if err == nil {
			err = p.checkParamKey(f, at)
		}
		if err == nil {
			*params = append(*params, param{Key: f.key, Value: v})
		}
	}
	return err
}

func (p *paramParser) duration(f field, at where, str func() (string, error)) (time.Duration, error) {
	if f.val[0] != '"' {
		return 0, p.errAt(f.off, at, `expected a duration string like "90m", "2h" or "1d", found %s`, kindOf(f.val))
	}
	s, err := str()
	if err != nil {
		return 0, err
	}
	d, err := parseDuration(s)
	if err != nil {
		return 0, p.errAt(f.off, at, "%q is not a duration — use a Go duration like 90m or 2h30m, or days like 2d", s)
	}
	if d <= 0 {
		return 0, p.errAt(f.off, at, "%q must be more than zero — give how long the instance may run, e.g. 2h", s)
	}
	return d, nil
}

func (p *paramParser) securityGroups(f field, at where) ([]string, error) {
	if f.val[0] != '[' {
		return nil, p.errAt(f.off, at, `expected an array of strings like ["sg-0123456789abcdef0"], found %s`, kindOf(f.val))
	}
	var ids []string
	w := &walker{b: p.data, i: f.off + 1}
	for {
		w.skipWS()
		if w.b[w.i] == ']' {
			break
		}
		if w.b[w.i] == ',' {
			w.i++
			w.skipWS()
		}
		off := w.i
		v := w.value()
		el := at
		el.elem = len(ids) + 1
		if v[0] != '"' {
			return nil, p.errAt(off, el, "expected a string like \"sg-0123456789abcdef0\", found %s", kindOf(v))
		}
		s, ok := p.str(v)
		if !ok || !hasIDPrefix(s, "sg-") {
			return nil, p.errAt(off, el, "%q is not a security group id — use sg-0123456789abcdef0", s)
		}
		ids = append(ids, s)
	}
	if len(ids) == 0 {
		return nil, p.errAt(f.off, at, "the list is empty — give at least one sg-… id or remove the key for the VPC's default group")
	}
	return ids, nil
}

// paramValue renders a param's value as the text the instance sees: strings as they are,
// numbers as written in the file, booleans as true/false.
func (p *paramParser) paramValue(f field, at where) (string, error) {
	var v string
	switch c := f.val[0]; {
	case c == '"':
		s, ok := p.str(f.val)
		if !ok {
			return "", p.errAt(f.off, at, "the value is not valid UTF-8 — save the file as UTF-8")
		}
		v = s
	case c == 't' || c == 'f' || c == '-' || (c >= '0' && c <= '9'):
		v = p.internBytes(f.val)
	default:
		return "", p.errAt(f.off, at, "a param's value must be a string, number or boolean, found %s — flatten it into several keys or a string", kindOf(f.val))
	}
	if strings.IndexByte(v, 0) >= 0 {
		return "", p.errAt(f.off, at, "the value contains a NUL character, which no environment variable can hold — remove it")
	}
	if n := utf8.RuneCountInString(v); n > maxTagValueLen {
		return "", p.errAt(f.off, at, "the value is %d characters, over EC2's tag value limit of %d — shorten it or have the command read it from a file", n, maxTagValueLen)
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
		return p.errAt(f.off, at, "a param's key is empty — name it with letters, digits and _")
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return p.errAt(f.off, at, "a param's key may hold only letters, digits and _ (it becomes env var %s<key>) — rename %q", paramEnvPrefix, k)
		}
	}
	if len(paramTagPrefix)+len(k) > maxTagKeyLen {
		return p.errAt(f.off, at, "the key is %d characters; as tag %s<key> it passes EC2's %d — use at most %d", len(k), paramTagPrefix, maxTagKeyLen, maxTagKeyLen-len(paramTagPrefix))
	}
	for _, known := range knownKeys {
		if strings.EqualFold(k, known) {
			return p.errAt(f.off, at, "keys are case-sensitive — did you mean %q?", known)
		}
	}
	p.goodKeys[k] = true
	return nil
}

// resetKey puts a known key back to spawn's own default.
func resetKey(it *item, key string) {
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

// dropParams returns ps without the keys in drop, never changing ps (it may be shared).
func dropParams(ps []param, drop []string) []param {
	out := make([]param, 0, len(ps))
	for _, p := range ps {
		if !slices.Contains(drop, p.Key) {
			out = append(out, p)
		}
	}
	return out
}

// mergeParams overlays an item's own params on the defaults' (both end sorted by key).
// An item without its own params shares the defaults' slice.
func mergeParams(defaults, own []param) []param {
	if len(own) == 0 {
		return defaults
	}
	if len(own) > 1 {
		slices.SortFunc(own, func(a, b param) int { return strings.Compare(a.Key, b.Key) })
	}
	out := make([]param, 0, len(defaults)+len(own))
	i, j := 0, 0
	for i < len(defaults) || j < len(own) {
		switch {
		case j == len(own) || i < len(defaults) && defaults[i].Key < own[j].Key:
			out = append(out, defaults[i])
			i++
		case i == len(defaults) || own[j].Key < defaults[i].Key:
			out = append(out, own[j])
			j++
		default: // same key: the item's own value wins
			out = append(out, own[j])
			i++
			j++
		}
	}
	return out
}

// str unescapes a JSON string token; ok is false when it is not valid UTF-8.
func (p *paramParser) str(raw []byte) (string, bool) {
	body := raw[1 : len(raw)-1]
	if bytes.IndexByte(body, '\\') < 0 {
		if !utf8.Valid(body) {
			return "", false
		}
		return p.internBytes(body), true
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", false
	}
	return s, true
}

// internBytes returns b as a string, allocating each distinct short string once:
// keys and values such as instance types repeat across thousands of items.
func (p *paramParser) internBytes(b []byte) string {
	if s, ok := p.intern[string(b)]; ok {
		return s
	}
	s := string(b)
	if len(b) <= 64 && len(p.intern) < 1<<14 {
		p.intern[s] = s
	}
	return s
}

// errAt is a usage error naming the file, the line of byte offset off, and the place.
func (p *paramParser) errAt(off int, at where, format string, args ...any) error {
	line, _ := lineCol(p.data, off)
	msg := fmt.Sprintf(format, args...)
	place := at.String()
	if place == "" {
		return usageErrorf("%s line %d: %s", p.file, line, msg)
	}
	return usageErrorf("%s line %d, %s: %s", p.file, line, place, msg)
}

// syntaxError turns the decoder's complaint into the file's line and column and a fix.
func (p *paramParser) syntaxError(start int) error {
	var v any
	err := json.Unmarshal(p.data[start:], &v)
	var se *json.SyntaxError
	if !errors.As(err, &se) {
		return usageErrorf("%s: not valid JSON: %v — check the JSON", p.file, err)
	}
	off := start + int(se.Offset) - 1 // Offset counts the bytes read, the bad one included
	if off < start {
		off = start
	}
	msg := se.Error()
	hint := "check the JSON"
	switch {
	case strings.HasPrefix(msg, "unexpected end of JSON input"):
		off = len(p.data)
		msg = "the file ends in the middle of the JSON"
		hint = "a closing } or ] or a quote is missing"
	case strings.HasSuffix(msg, "after top-level value"):
		msg = "extra data after the JSON object"
		hint = "the file must hold exactly one {...}; remove what follows it"
	case strings.HasSuffix(msg, "after object key:value pair"):
		msg = fmt.Sprintf(`expected "," or "}" but found %s`, badChar(msg))
		hint = "a comma may be missing between two keys"
	case strings.HasSuffix(msg, "after array element"):
		msg = fmt.Sprintf(`expected "," or "]" but found %s`, badChar(msg))
		hint = "a comma may be missing between two items"
	case strings.HasSuffix(msg, "looking for beginning of object key string"):
		msg = fmt.Sprintf("expected a quoted key but found %s", badChar(msg))
		hint = `keys need double quotes, and JSON allows no comma before "}"`
	case strings.HasSuffix(msg, "looking for beginning of value"):
		msg = fmt.Sprintf("expected a value but found %s", badChar(msg))
		hint = `strings need double quotes, and JSON allows no comma before "]" or "}"`
	case strings.HasSuffix(msg, "after object key"):
		msg = fmt.Sprintf(`expected ":" after a key but found %s`, badChar(msg))
	case strings.Contains(msg, "in string literal"):
		msg = "a control character (a raw tab or line break?) inside a string"
		hint = `write it as \t or \n`
	}
	line, col := lineCol(p.data, off)
	return usageErrorf("%s line %d, column %d: %s — %s", p.file, line, col, msg, hint)
}

// badChar pulls the quoted character out of encoding/json's "invalid character 'x' ...".
func badChar(msg string) string {
	if i := strings.Index(msg, "'"); i >= 0 {
		if j := strings.LastIndex(msg, "'"); j > i {
			return msg[i : j+1]
		}
	}
	return "something else"
}

// lineCol gives the 1-based line and column (in characters) of byte offset off.
func lineCol(data []byte, off int) (line, col int) {
	if off > len(data) {
		off = len(data)
	}
	if off < 0 {
		off = 0
	}
	before := data[:off]
	line = 1 + bytes.Count(before, []byte{'\n'})
	lineStart := bytes.LastIndexByte(before, '\n') + 1
	return line, utf8.RuneCount(before[lineStart:]) + 1
}

// kindOf names a JSON value's type for messages.
func kindOf(v []byte) string {
	if len(v) == 0 {
		return "nothing"
	}
	switch v[0] {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	default:
		return "a number"
	}
}

func estimateItems(arr []byte) int {
	n := bytes.Count(arr, []byte("},")) + 1
	return min(n, 1<<17) // "}," inside strings can inflate the count: bound the guess
}

// walker steps through JSON that json.Valid has accepted, so it only finds boundaries
// and never has to report an error.
type walker struct {
	b []byte
	i int
}

func (w *walker) skipWS() {
	for w.i < len(w.b) {
		switch w.b[w.i] {
		case ' ', '\t', '\n', '\r':
			w.i++
		default:
			return
		}
	}
}

// str returns the string token at w.i, quotes included, and moves past it.
func (w *walker) str() []byte {
	start := w.i
	w.i++
	for {
		j := bytes.IndexAny(w.b[w.i:], `"\`)
		w.i += j
		if w.b[w.i] == '\\' {
			w.i += 2
			continue
		}
		w.i++
		return w.b[start:w.i]
	}
}

// value returns the value at w.i and moves past it.
func (w *walker) value() []byte {
	start := w.i
	switch w.b[w.i] {
	case '"':
		return w.str()
	case '{', '[':
		depth := 0
		for {
			switch w.b[w.i] {
			case '"':
				w.str()
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
			}
			w.i++
			if depth == 0 {
				return w.b[start:w.i]
			}
		}
	default:
		for w.i < len(w.b) {
			switch w.b[w.i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return w.b[start:w.i]
			}
			w.i++
		}
		return w.b[start:w.i]
	}
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

// ---------------------------------------------------------------------------------------
// One item → one EC2 launch

// clientToken makes RunInstances idempotent per (sweep, index, attempt): a launch retried
// after a crash or a timeout finds the instance the first call made. 64 hex characters,
// EC2's maximum.
func clientToken(sweepID string, index, attempt int) string {
	h := sha256.New()
	fmt.Fprintf(h, "spawn\x00%s\x00%d\x00%d", sweepID, index, attempt)
	return hex.EncodeToString(h.Sum(nil))
}

// fixedTags are the tags every instance carries besides its params. The parser counts
// this same list against EC2's 50-tag limit, so the count and the real tags never drift.
func fixedTags(sweepID, sweepName string, index, attempt int, ttl time.Duration) []ec2types.Tag {
	tags := []ec2types.Tag{
		{Key: aws.String(tagSweepID), Value: aws.String(sweepID)},
		{Key: aws.String(tagSweepIndex), Value: aws.String(strconv.Itoa(index))},
		{Key: aws.String(tagAttempt), Value: aws.String(strconv.Itoa(attempt))},
		{Key: aws.String(tagManaged), Value: aws.String("true")},
		{Key: aws.String(tagName), Value: aws.String(instanceName(sweepName, index))},
	}
	if ttl > 0 {
		tags = append(tags, ec2types.Tag{Key: aws.String(tagTTL), Value: aws.String(shortDuration(ttl))})
	}
	return tags
}

// instanceTags is every tag of one instance: the fixed ones, then one per param.
func instanceTags(sw *sweep, it item, attempt int, ttl time.Duration) []ec2types.Tag {
	tags := fixedTags(sw.SweepID, sw.SweepName, it.Index, attempt, ttl)
	for _, p := range it.Params {
		tags = append(tags, ec2types.Tag{Key: aws.String(paramTagPrefix + p.Key), Value: aws.String(p.Value)})
	}
	return tags
}

func instanceName(sweepName string, index int) string {
	name := sweepName + "-" + strconv.Itoa(index)
	if utf8.RuneCountInString(name) > maxTagValueLen {
		r := []rune(name)
		name = string(r[len(r)-maxTagValueLen:])
	}
	return name
}

// itemTTL is the item's own TTL, else the sweep-wide one (0: none).
func itemTTL(sw *sweep, it item) time.Duration {
	if it.TTL > 0 {
		return it.TTL
	}
	if sw.TTL != "" {
		if d, err := parseDuration(sw.TTL); err == nil && d > 0 {
			return d
		}
	}
	return 0
}

// runInstancesInput is the one RunInstances call that launches item it. it.AMI must be
// resolved already (resolveAMI).
func runInstancesInput(sw *sweep, it item, attempt int) *ec2.RunInstancesInput {
	ttl := itemTTL(sw, it)
	tags := instanceTags(sw, it, attempt, ttl)
	in := &ec2.RunInstancesInput{
		MinCount:                          aws.Int32(1),
		MaxCount:                          aws.Int32(1),
		ImageId:                           aws.String(it.AMI),
		InstanceType:                      ec2types.InstanceType(it.InstanceType),
		InstanceInitiatedShutdownBehavior: ec2types.ShutdownBehaviorTerminate,
		ClientToken:                       aws.String(clientToken(sw.SweepID, it.Index, attempt)),
		UserData:                          aws.String(base64.StdEncoding.EncodeToString([]byte(userDataScript(sw, it, attempt, ttl)))),
		// The script reads its instance id and region with IMDSv2 tokens; v1 is not needed.
		MetadataOptions: &ec2types.InstanceMetadataOptionsRequest{
			HttpTokens:   ec2types.HttpTokensStateRequired,
			HttpEndpoint: ec2types.InstanceMetadataEndpointStateEnabled,
		},
		TagSpecifications: []ec2types.TagSpecification{
			{ResourceType: ec2types.ResourceTypeInstance, Tags: tags},
			{ResourceType: ec2types.ResourceTypeVolume, Tags: tags},
		},
	}
	if it.KeyName != "" {
		in.KeyName = aws.String(it.KeyName)
	}
	if it.SubnetID != "" {
		in.SubnetId = aws.String(it.SubnetID)
	}
	if len(it.SecurityGroupIDs) > 0 {
		in.SecurityGroupIds = slices.Clone(it.SecurityGroupIDs)
	}
	if it.IAMInstanceProfile != "" {
		if strings.HasPrefix(it.IAMInstanceProfile, "arn:") {
			in.IamInstanceProfile = &ec2types.IamInstanceProfileSpecification{Arn: aws.String(it.IAMInstanceProfile)}
		} else {
			in.IamInstanceProfile = &ec2types.IamInstanceProfileSpecification{Name: aws.String(it.IAMInstanceProfile)}
		}
	}
	if it.Spot {
		spot := &ec2types.SpotMarketOptions{
			SpotInstanceType:             ec2types.SpotInstanceTypeOneTime,
			InstanceInterruptionBehavior: ec2types.InstanceInterruptionBehaviorTerminate,
		}
		if it.SpotMaxPrice != "" {
			spot.MaxPrice = aws.String(it.SpotMaxPrice)
		}
		in.InstanceMarketOptions = &ec2types.InstanceMarketOptionsRequest{MarketType: ec2types.MarketTypeSpot, SpotOptions: spot}
	}
	return in
}

// shellQuote single-quotes s for bash: inside single quotes nothing is special, and a
// quote in s is written as close-quote, backslash-quote, open-quote, so no value can run code.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// envExports is the part of the script that sets the item's environment.
func envExports(sw *sweep, it item, attempt int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "export SPAWN_SWEEP_ID=%s\n", shellQuote(sw.SweepID))
	fmt.Fprintf(&b, "export SPAWN_SWEEP_INDEX=%d\n", it.Index)
	fmt.Fprintf(&b, "export SPAWN_ATTEMPT=%d\n", attempt)
	for _, p := range it.Params {
		// Keys hold only [A-Za-z0-9_] (checked by the parser), so PARAM_<key> is a name.
		fmt.Fprintf(&b, "export %s%s=%s\n", paramEnvPrefix, p.Key, shellQuote(p.Value))
	}
	return b.String()
}

// userDataScriptBody is everything after the exports; fixed text, so the parser can
// bound the script's size without writing it.
const userDataScriptBody = `
spawn_dir=${SPAWN_DIR:-/var/lib/spawn}
mkdir -p "$spawn_dir" && cd "$spawn_dir" || shutdown -h now
log=$spawn_dir/item.log
bash -c "$spawn_command" >"$log" 2>&1 </dev/null
rc=$?

imds=http://169.254.169.254/latest
token=$(curl -sS -m 5 -X PUT "$imds/api/token" -H 'X-aws-ec2-metadata-token-ttl-seconds: 600')
instance_id=$(curl -sS -m 5 -H "X-aws-ec2-metadata-token: $token" "$imds/meta-data/instance-id")
region=$(curl -sS -m 5 -H "X-aws-ec2-metadata-token: $token" "$imds/meta-data/placement/region")

# The log first, then the exit code: the orchestrator reads the tag as "finished".
for try in 1 2 3; do
  aws s3 cp "$log" "$spawn_log_url" $spawn_bucket_region --only-show-errors && break
  sleep $((try * 5))
done
for try in 1 2 3; do
  aws ec2 create-tags --region "$region" --resources "$instance_id" --tags "Key=` + tagExitCode + `,Value=$rc" && break
  sleep $((try * 5))
done
shutdown -h now
`

// userDataScript is the instance's boot script: it.UserData verbatim when given, else a
// bash script that arms the TTL, exports the item's environment, runs command, uploads
// the log, tags the exit code and powers off (which terminates the instance).
func userDataScript(sw *sweep, it item, attempt int, ttl time.Duration) string {
	if it.UserData != "" {
		return it.UserData
	}
	var b strings.Builder
	b.WriteString("#!/bin/bash\n")
	// Only numbers go into comments: a newline in a comment would end it and run the rest.
	fmt.Fprintf(&b, "# spawn item %d, attempt %d\n", it.Index, attempt)
	if ttl > 0 {
		mins := int64((ttl + time.Minute - 1) / time.Minute)
		b.WriteString("# The TTL is armed before anything else, so a broken command still ends the instance.\n")
		fmt.Fprintf(&b, "shutdown -h +%d || systemd-run --on-active=%dm /usr/sbin/poweroff\n", mins, mins)
	}
	b.WriteString(envExports(sw, it, attempt))
	fmt.Fprintf(&b, "spawn_command=%s\n", shellQuote(it.Command))
	fmt.Fprintf(&b, "spawn_log_url=%s\n", shellQuote(logURL(sw, it.Index)))
	if sw.Region != "" {
		fmt.Fprintf(&b, "spawn_bucket_region=%s\n", shellQuote("--region="+sw.Region))
	} else {
		b.WriteString("spawn_bucket_region=\n")
	}
	b.WriteString(userDataScriptBody)
	return b.String()
}

// logURL is where instance index uploads its log (SPEC.md's bucket layout).
func logURL(sw *sweep, index int) string {
	return "s3://" + sw.S3Bucket + "/" + logKey(sw.SweepID, index)
}

func logKey(sweepID string, index int) string {
	return "sweeps/" + sweepID + "/logs/" + strconv.Itoa(index) + ".log"
}

// userDataEstimate bounds the generated script's size from above: the ids, bucket and
// names are not known while parsing, so they are counted at their longest.
func userDataEstimate(it *item) int {
	const fixed = 1024 + len(userDataScriptBody) // header, TTL line, ids, bucket, region
	n := fixed + quotedLen(it.Command)
	for _, p := range it.Params {
		n += len("export ") + len(paramEnvPrefix) + len(p.Key) + 2 + quotedLen(p.Value)
	}
	return n
}

func quotedLen(s string) int {
	return len(s) + 2 + 3*strings.Count(s, "'")
}

// ---------------------------------------------------------------------------------------
// The AMI

// ssmGetParameter is the one SSM call resolveAMI needs.
type ssmGetParameter interface {
	GetParameter(ctx context.Context, in *ssm.GetParameterInput, optFns ...func(*ssm.Options)) (*ssm.GetParameterOutput, error)
}

const al2023Parameter = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-"

// resolveAMI reads the latest Amazon Linux 2023 AMI for the instance type's architecture
// from AWS's public SSM parameter (in the client's region).
func resolveAMI(ctx context.Context, api ssmGetParameter, instanceType string) (string, error) {
	name := al2023Parameter + instanceArch(instanceType)
	out, err := api.GetParameter(ctx, &ssm.GetParameterInput{Name: aws.String(name)})
	if err != nil {
		return "", fmt.Errorf("looking up the Amazon Linux 2023 AMI in SSM parameter %s: %w (set \"ami\" in the parameter file to skip the lookup)", name, err)
	}
	if out.Parameter == nil || !strings.HasPrefix(aws.ToString(out.Parameter.Value), "ami-") {
		return "", fmt.Errorf("SSM parameter %s holds no AMI id — set \"ami\" in the parameter file", name)
	}
	return aws.ToString(out.Parameter.Value), nil
}

// instanceArch is arm64 for Graviton families (a "g" right after the generation digit:
// m7g, c7gn, t4g, x2gd, im4gn, is4gen, hpc7g) and a1, else x86_64.
func instanceArch(instanceType string) string {
	family, _, _ := strings.Cut(instanceType, ".")
	if family == "a1" {
		return "arm64"
	}
	i := 0
	for i < len(family) && family[i] >= 'a' && family[i] <= 'z' {
		i++
	}
	j := i
	for j < len(family) && family[j] >= '0' && family[j] <= '9' {
		j++
	}
	if i > 0 && j > i && j < len(family) && family[j] == 'g' {
		return "arm64"
	}
	return "x86_64"
}

// ---------------------------------------------------------------------------------------
// spawn launch

// durationFlag is a flag taking Go durations or days (2d), like the parameter file.
type durationFlag struct {
	d   time.Duration
	set bool
}

func (f *durationFlag) String() string {
	if f == nil || (!f.set && f.d == 0) {
		return ""
	}
	return shortDuration(f.d)
}

func (f *durationFlag) Set(s string) error {
	d, err := parseDuration(s)
	if err != nil {
		return errors.New("not a duration: use 90m, 2h30m or 2d")
	}
	f.d, f.set = d, true
	return nil
}

type launchFlags struct {
	paramFile     string
	maxConcurrent int
	launchDelay   durationFlag
	pollInterval  durationFlag
	name          string
	detach        bool
	noDetach      bool
	ttl           durationFlag
	idleTimeout   durationFlag
	wait          bool
	dryRun        bool
}

const (
	defaultMaxConcurrent = 10
	defaultPollInterval  = 10 * time.Second
	maxSweepNameLen      = 128
)

func newLaunchCmd(r *rootConfig) *ffcli.Command {
	fs := r.newFlagSet("launch")
	lf := &launchFlags{maxConcurrent: defaultMaxConcurrent, detach: true, pollInterval: durationFlag{d: defaultPollInterval}}
	fs.StringVar(&lf.paramFile, "param-file", "", "the sweep's parameter file (JSON; - reads stdin)")
	fs.IntVar(&lf.maxConcurrent, "max-concurrent", lf.maxConcurrent, "most instances alive at once")
	fs.Var(&lf.launchDelay, "launch-delay", "pause between two launches (default 0s)")
	fs.Var(&lf.pollInterval, "poll-interval", "how often running instances are checked")
	fs.StringVar(&lf.name, "name", "", "sweep name (default: the file's name without extension)")
	fs.BoolVar(&lf.detach, "detach", true, "run the sweep in the deployed Lambda orchestrator and return")
	fs.BoolVar(&lf.noDetach, "no-detach", false, "run the sweep in this process (needs --ttl or --idle-timeout)")
	fs.Var(&lf.ttl, "ttl", "default time to live of every instance without its own ttl (e.g. 2h, 1d)")
	fs.Var(&lf.idleTimeout, "idle-timeout", "terminate an instance whose CPU stays under 5% this long")
	fs.BoolVar(&lf.wait, "wait", false, "block until the sweep ends; exit 3 if it failed or had failed items")
	fs.BoolVar(&lf.dryRun, "dry-run", false, "validate the file and print the plan; create nothing")
	return r.command("launch",
		"spawn launch --param-file F [--max-concurrent N] [--launch-delay D] [--poll-interval D] [--name S] [--detach | --no-detach] [--ttl D] [--idle-timeout D] [--wait] [--dry-run]",
		"validate a parameter file and start a sweep", fs,
		func(ctx context.Context, args []string) error {
			req, err := lf.request(r, fs, args)
			if err != nil {
				return err
			}
			if lf.dryRun {
				return r.printPlan(ctx, req)
			}
			return startSweep(ctx, r, req)
		})
}

// request checks the flags, then reads and validates the file; nothing touches AWS.
func (lf *launchFlags) request(r *rootConfig, fs *flag.FlagSet, args []string) (*launchRequest, error) {
	if len(args) > 0 {
		return nil, usageErrorf("unexpected argument %q — give the file with --param-file", args[0])
	}
	if lf.paramFile == "" {
		return nil, usageErrorf("--param-file is required — give the sweep's parameter file (JSON)")
	}
	detachSet := false
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "detach" {
			detachSet = true
		}
	})
	if detachSet && lf.noDetach {
		if lf.detach {
			return nil, usageErrorf("--detach and --no-detach contradict each other — give one")
		}
	}
	detach := lf.detach && !lf.noDetach
	switch {
	case lf.maxConcurrent < 1:
		return nil, usageErrorf("--max-concurrent %d: must be at least 1", lf.maxConcurrent)
	case lf.launchDelay.d < 0:
		return nil, usageErrorf("--launch-delay %s: must not be negative", lf.launchDelay.String())
	case lf.pollInterval.d < time.Second:
		return nil, usageErrorf("--poll-interval %s: must be at least 1s", lf.pollInterval.d)
	case lf.ttl.set && lf.ttl.d <= 0:
		return nil, usageErrorf("--ttl %s: must be more than zero — give how long an instance may run, e.g. 2h", lf.ttl.d)
	case lf.idleTimeout.set && lf.idleTimeout.d < time.Minute:
		return nil, usageErrorf("--idle-timeout %s: must be at least 1m (CloudWatch alarms look at whole minutes)", lf.idleTimeout.d)
	case !detach && !lf.ttl.set && !lf.idleTimeout.set:
		return nil, usageErrorf("--no-detach needs --ttl or --idle-timeout — if this process dies, nothing else would stop the sweep's instances")
	}
	name := lf.name
	if name == "" {
		name = defaultSweepName(lf.paramFile)
	}
	if err := checkSweepName(name); err != nil {
		return nil, err
	}

	var data []byte
	var err error
	if lf.paramFile == "-" {
		data, err = io.ReadAll(r.stdin)
	} else {
		data, err = os.ReadFile(lf.paramFile)
	}
	if err != nil {
		if errors.Is(err, fs2.ErrNotExist) {
			return nil, usageErrorf("--param-file %s: no such file — check the path", lf.paramFile)
		}
		return nil, usageErrorf("--param-file %s: %v", lf.paramFile, errors.Unwrap(err))
	}
	file := lf.paramFile
	if file == "-" {
		file = "stdin"
	}
	items, err := parseParamFile(file, data)
	if err != nil {
		return nil, err
	}
	if err := checkSweepTTLTags(file, items, lf.ttl.d); err != nil {
		return nil, err
	}
	return &launchRequest{
		ParamFile:     lf.paramFile,
		Raw:           data,
		Items:         items,
		Name:          name,
		MaxConcurrent: lf.maxConcurrent,
		LaunchDelay:   lf.launchDelay.d,
		PollInterval:  lf.pollInterval.d,
		TTL:           lf.ttl.d,
		IdleTimeout:   lf.idleTimeout.d,
		Detach:        detach,
		Wait:          lf.wait,
	}, nil
}

// checkSweepTTLTags: --ttl gives every item without its own TTL one more tag (spawn:ttl),
// which the file alone could not count.
func checkSweepTTLTags(file string, items []item, sweepTTL time.Duration) error {
	if sweepTTL <= 0 {
		return nil
	}
	withTTL := len(fixedTags("", "", 0, 0, sweepTTL))
	for i := range items {
		it := &items[i]
		if it.TTL == 0 && withTTL+len(it.Params) > maxTagsPerResource {
			return usageErrorf("%s, %s: with --ttl the instance also gets tag %s, making %d tags, over EC2's limit of %d — drop a param",
				file, where{idx: it.Index}, tagTTL, withTTL+len(it.Params), maxTagsPerResource)
		}
	}
	return nil
}

// defaultSweepName is the file's name without directory and extension.
func defaultSweepName(path string) string {
	if path == "-" {
		return "stdin"
	}
	base := filepath.Base(path)
	base = strings.TrimSuffix(base, filepath.Ext(base))
	if base == "" || base == "." || base == string(filepath.Separator) {
		return "sweep"
	}
	if utf8.RuneCountInString(base) > maxSweepNameLen {
		base = string([]rune(base)[:maxSweepNameLen])
	}
	return base
}

func checkSweepName(name string) error {
	if strings.TrimSpace(name) == "" {
		return usageErrorf("--name is empty — give the sweep a short name")
	}
	if utf8.RuneCountInString(name) > maxSweepNameLen {
		return usageErrorf("--name is over %d characters — shorten it", maxSweepNameLen)
	}
	if !utf8.ValidString(name) || strings.IndexFunc(name, unicode.IsControl) >= 0 {
		return usageErrorf("--name %q holds control characters or invalid UTF-8 — use plain text", name)
	}
	return nil
}

// launchPlan is what --dry-run prints: what the sweep would launch, and nothing created.
type launchPlan struct {
	DryRun        bool        `json:"dry_run"`
	SweepName     string      `json:"sweep_name"`
	ParamFile     string      `json:"param_file"`
	TotalParams   int         `json:"total_params"`
	SpotItems     int         `json:"spot_items"`
	MaxConcurrent int         `json:"max_concurrent"`
	LaunchDelay   string      `json:"launch_delay"`
	PollInterval  string      `json:"poll_interval"`
	TTL           string      `json:"ttl,omitempty"`
	IdleTimeout   string      `json:"idle_timeout,omitempty"`
	Detach        bool        `json:"detach"`
	Region        string      `json:"region"`
	Groups        []planGroup `json:"groups"`
	// InstanceHoursAtTTL is Σ TTL over the items that have one: the most the sweep can run.
	InstanceHoursAtTTL float64 `json:"instance_hours_at_ttl"`
	ItemsWithoutTTL    int     `json:"items_without_ttl"`
	// CostBoundUSD is the most the items with a TTL can cost, priced from the table
	// embedded in the binary (a dry run makes no AWS call); PriceSources counts items per
	// price source.
	CostBoundUSD float64        `json:"cost_bound_usd"`
	PriceSources map[string]int `json:"price_sources"`
}

type planGroup struct {
	Region       string `json:"region"`
	InstanceType string `json:"instance_type"`
	Items        int    `json:"items"`
	Spot         int    `json:"spot"`
}

func newLaunchPlan(req *launchRequest, region string) *launchPlan {
	pl := &launchPlan{
		DryRun:        true,
		SweepName:     req.Name,
		ParamFile:     req.ParamFile,
		TotalParams:   len(req.Items),
		MaxConcurrent: req.MaxConcurrent,
		LaunchDelay:   shortDuration(req.LaunchDelay),
		PollInterval:  shortDuration(req.PollInterval),
		Detach:        req.Detach,
		Region:        region,
		Groups:        []planGroup{},
	}
	if req.TTL > 0 {
		pl.TTL = shortDuration(req.TTL)
	}
	if req.IdleTimeout > 0 {
		pl.IdleTimeout = shortDuration(req.IdleTimeout)
	}
	type key struct{ region, typ string }
	at := map[key]int{}
	var hours time.Duration
	for i := range req.Items {
		it := &req.Items[i]
		rg := it.Region
		if rg == "" {
			rg = region
		}
		k := key{rg, it.InstanceType}
		g, ok := at[k]
		if !ok {
			g = len(pl.Groups)
			at[k] = g
			pl.Groups = append(pl.Groups, planGroup{Region: rg, InstanceType: it.InstanceType})
		}
		pl.Groups[g].Items++
		if it.Spot {
			pl.Groups[g].Spot++
			pl.SpotItems++
		}
		ttl := it.TTL
		if ttl == 0 {
			ttl = req.TTL
		}
		if ttl == 0 {
			pl.ItemsWithoutTTL++
		}
		hours += ttl
	}
	slices.SortFunc(pl.Groups, func(a, b planGroup) int {
		if c := strings.Compare(a.Region, b.Region); c != 0 {
			return c
		}
		return strings.Compare(a.InstanceType, b.InstanceType)
	})
	pl.InstanceHoursAtTTL = math.Round(hours.Hours()*100) / 100
	return pl
}

// printPlan prints the dry run's plan. Only the local AWS configuration is read (for the
// default region): no credentials, no call to AWS.
func (r *rootConfig) printPlan(ctx context.Context, req *launchRequest) error {
	cfg, err := r.awsConfig(ctx)
	if err != nil {
		return err
	}
	pl := newLaunchPlan(req, cfg.Region)
	priced := make([]item, len(req.Items))
	for i, it := range req.Items {
		if it.Region == "" {
			it.Region = cfg.Region
		}
		priced[i] = it
	}
	usd, sources := newTablePricer(cfg.Region).dryRunCostBound(ctx, priced, req.TTL)
	pl.CostBoundUSD, pl.PriceSources = math.Round(usd*100)/100, sources
	if r.jsonOutput() {
		return r.printJSON(pl)
	}
	return writePlan(r.stdout, pl)
}

func writePlan(w io.Writer, pl *launchPlan) error {
	var b strings.Builder
	fmt.Fprintf(&b, "dry run: nothing was created\n")
	fmt.Fprintf(&b, "sweep:           %s (from %s)\n", pl.SweepName, pl.ParamFile)
	fmt.Fprintf(&b, "items:           %d (%d spot)\n", pl.TotalParams, pl.SpotItems)
	fmt.Fprintf(&b, "max concurrent:  %d\n", pl.MaxConcurrent)
	fmt.Fprintf(&b, "launch delay:    %s\n", pl.LaunchDelay)
	fmt.Fprintf(&b, "poll interval:   %s\n", pl.PollInterval)
	fmt.Fprintf(&b, "ttl:             %s\n", orNone(pl.TTL))
	fmt.Fprintf(&b, "idle timeout:    %s\n", orNone(pl.IdleTimeout))
	mode := "detached (the Lambda orchestrator runs it)"
	if !pl.Detach {
		mode = "in this process (--no-detach)"
	}
	fmt.Fprintf(&b, "runs:            %s\n", mode)
	hours := strconv.FormatFloat(pl.InstanceHoursAtTTL, 'f', -1, 64)
	switch withTTL := pl.TotalParams - pl.ItemsWithoutTTL; {
	case pl.ItemsWithoutTTL == 0:
		fmt.Fprintf(&b, "instance-hours:  %s at most (every item running until its TTL)\n", hours)
	case withTTL == 0:
		fmt.Fprintf(&b, "instance-hours:  not bounded: no item has a TTL, each runs until its command ends\n")
	default:
		fmt.Fprintf(&b, "instance-hours:  %s at most (%s with a TTL; %s without one, not counted)\n",
			hours, plural(withTTL, "item"), plural(pl.ItemsWithoutTTL, "item"))
	}
	var srcs []string
	for _, k := range slices.Sorted(maps.Keys(pl.PriceSources)) {
		srcs = append(srcs, fmt.Sprintf("%s: %d", k, pl.PriceSources[k]))
	}
	fmt.Fprintf(&b, "cost bound:      $%.2f at most (prices %s)\n", pl.CostBoundUSD, strings.Join(srcs, ", "))
	b.WriteString("\n")
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "REGION\tINSTANCE TYPE\tITEMS\tSPOT")
	for _, g := range pl.Groups {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\n", g.Region, g.InstanceType, g.Items, g.Spot)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return strconv.Itoa(n) + " " + noun + "s"
}

func orNone(sweepWide string) string {
	if sweepWide == "" {
		return "no sweep-wide default (items may set their own)"
	}
	return sweepWide + " for items without their own"
}
