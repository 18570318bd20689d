package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
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

// knownKeys are the parameter-file keys that configure the launch; every other key is a param.
var knownKeys = [...]string{
	"name", "instance_type", "region", "ami", "key_name", "subnet_id", "security_group_ids",
	"iam_instance_profile", "spot", "spot_max_price", "ttl", "idle_timeout", "command", "user_data",
}

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

// paramError is a refused parameter file: one line naming the file, the place and the
// fix. The engine reads the uploaded file with the same parser, so the command layer,
// not this file, decides that it means exit code 2.
type paramError struct{ msg string }

func (e *paramError) Error() string { return e.msg }

func paramErrorf(format string, args ...any) error {
	return &paramError{msg: fmt.Sprintf(format, args...)}
}

// parseParamFile parses and validates a parameter file (the README's "The parameter file").
// Every error is a *paramError whose one line names the file, the place and the fix.
func parseParamFile(path string, data []byte) ([]item, error) {
	p := &paramParser{file: path, data: data, intern: make(map[string]string, 64), goodKeys: make(map[string]bool)}
	p.fixedTags[0] = len(fixedTags("", "", 0, 0, 0))
	p.fixedTags[1] = len(fixedTags("", "", 0, 0, time.Minute))
	return p.parse()
}

func (p *paramParser) parse() ([]item, error) {
	start := 0
	if bytes.HasPrefix(p.data, []byte("\xef\xbb\xbf")) { // a UTF-8 byte-order mark some editors write
		start = 3
	}
	defaults, params, err := p.topLevel(start)
	if err != nil {
		return nil, err
	}
	base, err := p.defaults(defaults)
	if err != nil {
		return nil, err
	}
	return p.items(params, base)
}

// topLevel checks the file is one JSON object and returns its "defaults" (nil when
// absent) and "params" members.
func (p *paramParser) topLevel(start int) (defaults, params *field, err error) {
	data := p.data
	if len(bytes.TrimSpace(data[start:])) == 0 {
		return nil, nil, paramErrorf(`%s: the file is empty: write {"defaults": {...}, "params": [{...}, ...]}`, p.file)
	}
	if !json.Valid(data[start:]) {
		return nil, nil, p.syntaxError(start)
	}
	w := &walker{b: data, i: start}
	w.skipWS()
	if data[w.i] != '{' {
		return nil, nil, p.errAt(w.i, where{idx: atTop}, `expected a JSON object {"defaults": {...}, "params": [...]}, found %s`, kindOf(data[w.i:]))
	}
	top, err := p.fields(w, where{idx: atTop}, nil)
	if err != nil {
		return nil, nil, err
	}
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
			return nil, nil, p.errAt(f.off, where{idx: atTop}, "unknown top-level key %q: %s", f.key, hint)
		}
	}
	if params == nil {
		return nil, nil, p.errAt(start, where{idx: atTop}, `no "params": add "params": [{...}, ...] with one object per instance`)
	}
	return defaults, params, nil
}

// itemBase is what every item starts from: spawn's defaults overlaid with the file's.
type itemBase struct {
	item   item
	params []param         // the defaults' params, sorted by key
	keys   map[string]bool // the keys the file's defaults set
}

func (p *paramParser) defaults(defaults *field) (*itemBase, error) {
	base := &itemBase{item: item{InstanceType: defaultInstanceType, IAMInstanceProfile: defaultInstanceProfile}}
	if defaults == nil {
		return base, nil
	}
	if defaults.val[0] != '{' {
		return nil, p.errAt(defaults.off, where{idx: atTop, key: "defaults"}, "expected an object of keys shared by every item, found %s", kindOf(defaults.val))
	}
	dw := &walker{b: p.data, i: defaults.off}
	dfields, err := p.fields(dw, where{idx: inDefaults}, nil)
	if err != nil {
		return nil, err
	}
	base.keys = make(map[string]bool, len(dfields))
	for _, f := range dfields {
		if err := p.apply(&base.item, &base.params, inDefaults, f); err != nil {
			return nil, err
		}
		base.keys[f.key] = true
	}
	slices.SortFunc(base.params, func(a, b param) int { return strings.Compare(a.Key, b.Key) })
	return base, nil
}

// items reads the "params" array: one item per object, each merged over base and checked.
func (p *paramParser) items(params *field, base *itemBase) ([]item, error) {
	data := p.data
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
		it := base.item
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
		it.Params = mergeParams(base.params, own)
		if len(p.drop) > 0 {
			it.Params = dropParams(it.Params, p.drop)
			p.drop = p.drop[:0]
		}
		if err := p.check(&it, off, base.keys, fs); err != nil {
			return nil, err
		}
		items = append(items, it)
	}
	if len(items) == 0 {
		return nil, p.errAt(params.off, where{idx: atTop, key: "params"}, `the list is empty: add one object per instance, e.g. [{"command": "./run.sh"}]`)
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
		return p.errAt(off, where{idx: idx}, "both command%s and user_data%s are set: give command (spawn writes the script) or user_data (yours, verbatim), not both",
			origin("command"), origin("user_data"))
	}
	if it.Command == "" && it.UserData == "" {
		return p.errAt(off, where{idx: idx}, `nothing to run: give "command" (a shell line) or "user_data" here or in defaults`)
	}
	if it.SpotMaxPrice != "" && !it.Spot {
		return p.errAt(off, where{idx: idx}, `spot_max_price%s is set but spot is not true: add "spot": true or remove the price`, origin("spot_max_price"))
	}
	has := 0
	if it.TTL > 0 {
		has = 1
	}
	if n := p.fixedTags[has] + len(it.Params); n > maxTagsPerResource {
		return p.errAt(off, where{idx: idx}, "%d params make %d tags, over EC2's limit of %d per instance: use at most %d params per item",
			len(it.Params), n, maxTagsPerResource, maxTagsPerResource-p.fixedTags[has])
	}
	if it.Command != "" {
		if n := userDataEstimate(it); n > maxUserDataBytes {
			return p.errAt(off, where{idx: idx}, "the instance script would be about %d bytes, over EC2's user-data limit of %d: move the long command or values into a script the command downloads",
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
		key, ok := p.unquote(raw)
		if !ok {
			return nil, p.errAt(keyOff, obj, "a key is not valid UTF-8: save the file as UTF-8")
		}
		w.skipWS()
		w.i++ // ':'
		w.skipWS()
		off := w.i
		val := w.value()
		if dup(fs, key, &seen) {
			return nil, p.errAt(keyOff, obj.with(key), "the key appears twice in one object: keep one")
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
	if known, err := p.setKnown(it, f, at); known {
		return err
	}
	v, err := p.paramValue(f, at)
	if err == nil {
		err = p.checkParamKey(f, at)
	}
	if err == nil {
		*params = append(*params, param{Key: f.key, Value: v})
	}
	return err
}

// setKnown sets a key that configures the launch; known is false for a param's key.
func (p *paramParser) setKnown(it *item, f field, at where) (known bool, err error) {
	switch f.key {
	case "name":
		it.Name, err = p.nonEmpty(f, at, "a short name")
		if err == nil && utf8.RuneCountInString(it.Name) > maxTagValueLen {
			err = p.errAt(f.off, at, "is over %d characters: shorten it", maxTagValueLen)
		}
	case "instance_type":
		if it.InstanceType, err = p.str(f, at); err == nil && !validInstanceType(it.InstanceType) {
			err = p.errAt(f.off, at, "%q is not an instance type: use family.size, e.g. t3.micro, c7gn.16xlarge or u-6tb1.metal", it.InstanceType)
		}
	case "region":
		it.Region, err = p.region(f, at)
	case "ami":
		if it.AMI, err = p.str(f, at); err == nil && !validAMI(it.AMI) {
			err = p.errAt(f.off, at, "%q is not an AMI id: use ami-0123456789abcdef0 or resolve:ssm:<parameter>, or remove the key for Amazon Linux 2023", it.AMI)
		}
	case "key_name":
		it.KeyName, err = p.nonEmpty(f, at, "the EC2 key pair name")
	case "subnet_id":
		if it.SubnetID, err = p.str(f, at); err == nil && !hasIDPrefix(it.SubnetID, "subnet-") {
			err = p.errAt(f.off, at, "%q is not a subnet id: use subnet-0123456789abcdef0", it.SubnetID)
		}
	case "security_group_ids":
		it.SecurityGroupIDs, err = p.securityGroups(f, at)
	case "iam_instance_profile":
		it.IAMInstanceProfile, err = p.nonEmpty(f, at, "the instance profile name")
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
		it.SpotMaxPrice, err = p.spotMaxPrice(f, at)
	case "ttl":
		it.TTL, err = p.duration(f, at)
	case "idle_timeout":
		it.IdleTimeout, err = p.duration(f, at)
		if err == nil && it.IdleTimeout < time.Minute {
			err = p.errAt(f.off, at, "%s is too short: CloudWatch alarms need at least 1m", it.IdleTimeout)
		}
	case "command":
		it.Command, err = p.nonEmpty(f, at, "a shell command line")
	case "user_data":
		it.UserData, err = p.nonEmpty(f, at, "the instance's user data")
		if err == nil && len(it.UserData) > maxUserDataBytes {
			err = p.errAt(f.off, at, "is %d bytes, over EC2's user-data limit of %d: have it download the rest", len(it.UserData), maxUserDataBytes)
		}
	default:
		return false, nil
	}
	return true, err
}

// str is a value that must be a string.
func (p *paramParser) str(f field, at where) (string, error) {
	if f.val[0] != '"' {
		return "", p.errAt(f.off, at, "expected a string, found %s", kindOf(f.val))
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
	if err != nil || slices.Contains(awsRegions[:], r) {
		return r, err
	}
	hint := "use a region name such as us-east-1 or eu-west-2"
	if s := closest(r, awsRegions[:]); s != "" {
		hint = fmt.Sprintf("did you mean %q?", s)
	}
	return r, p.errAt(f.off, at, "%q is not an AWS region: %s", r, hint)
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
		err = p.errAt(f.off, at, "expected a price in USD per hour like \"0.05\", found %s", kindOf(f.val))
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
		return 0, p.errAt(f.off, at, `expected a duration string like "90m", "2h" or "1d", found %s`, kindOf(f.val))
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
		s, ok := p.unquote(v)
		if !ok || !hasIDPrefix(s, "sg-") {
			return nil, p.errAt(off, el, "%q is not a security group id: use sg-0123456789abcdef0", s)
		}
		ids = append(ids, s)
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
		return "", p.errAt(f.off, at, "a param's value must be a string, number or boolean, found %s: flatten it into several keys or a string", kindOf(f.val))
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
		return p.errAt(f.off, at, "a param's key is empty: name it with letters, digits and _")
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return p.errAt(f.off, at, "a param's key may hold only letters, digits and _ (it becomes env var %s<key>): rename %q", paramEnvPrefix, k)
		}
	}
	if len(paramTagPrefix)+len(k) > maxTagKeyLen {
		return p.errAt(f.off, at, "the key is %d characters; as tag %s<key> it passes EC2's %d: use at most %d", len(k), paramTagPrefix, maxTagKeyLen, maxTagKeyLen-len(paramTagPrefix))
	}
	for _, known := range knownKeys {
		if strings.EqualFold(k, known) {
			return p.errAt(f.off, at, "keys are case-sensitive: did you mean %q?", known)
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

// unquote unescapes a JSON string token; ok is false when it is not valid UTF-8.
func (p *paramParser) unquote(raw []byte) (string, bool) {
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

// errAt is a refusal naming the file, the line of byte offset off, and the place.
func (p *paramParser) errAt(off int, at where, format string, args ...any) error {
	line, _ := lineCol(p.data, off)
	msg := fmt.Sprintf(format, args...)
	place := at.String()
	if place == "" {
		return paramErrorf("%s line %d: %s", p.file, line, msg)
	}
	return paramErrorf("%s line %d, %s: %s", p.file, line, place, msg)
}
