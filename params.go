package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/big"
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
	// Candidate is which of the item's candidates a launch is for (candidateItem): it
	// picks the launch's client token. 0 in a parsed item.
	Candidate int
	// Fallback is the capacity fallback (params_fallback.go): nil when the item launches
	// as one type, in one region, in one market. Shared like Params: read-only.
	Fallback *fallback
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

// paramParser holds one parse: the bytes it reads (the JSON file, or the JSON a YAML or
// CSV file was turned into) with their positions, and the strings seen so far so that
// keys and repeated values are allocated once.
type paramParser struct {
	file   string
	format string // formatJSON, formatYAML or formatCSV: the file's, for messages
	data   []byte
	// marks map offsets of data to the lines of the file it came from; nil when data is
	// the file itself.
	marks  []srcMark
	intern map[string]string
	// drop are the param keys the current item sets to null.
	drop []string
	// goodKeys are param keys already checked: items repeat the same few.
	goodKeys map[string]bool
	// fixedTags is how many non-param tags an instance carries, without and with a TTL.
	fixedTags [2]int
	// sweepTTL is the launch's --ttl: an item without its own TTL then carries one more tag.
	sweepTTL time.Duration
	// base and objective come from a separate defaults file (CSV); nil otherwise.
	base      *itemBase
	objective *objective
	// out are the items so far; own is the scratch list of an item's own params.
	out []item
	own []param
	// gridTotal and samples are the items the grid and the random search make.
	gridTotal *big.Int
	samples   int64
	// canon, when not nil, receives the canonical JSON of every item (paramSet.Canonical).
	canon []byte
}

// field is one key/value of an object, with the value's byte offset in data and the place
// that names it in messages.
type field struct {
	key  string
	val  []byte
	off  int
	koff int // the key's offset: a message about the key names its line
	at   where
}

// paramError is a refused parameter file: one line naming the file, the place and the
// fix. The engine reads the uploaded file with the same parser, so the command layer,
// not this file, decides that it means exit code 2.
type paramError struct{ msg string }

func (e *paramError) Error() string { return e.msg }

func paramErrorf(format string, args ...any) error {
	return &paramError{msg: fmt.Sprintf(format, args...)}
}

// parseParamFile parses and validates a parameter file (the README's "The parameter file")
// in the format its name's extension says. The engine reads the uploaded canonical JSON
// with it. Every error is a *paramError whose one line names the file, the place and the fix.
func parseParamFile(path string, data []byte) ([]item, error) {
	ps, err := readParamFile(path, data, paramFileOptions{})
	if err != nil {
		return nil, err
	}
	return ps.Items, nil
}

func newParamParser(path string, data []byte, o paramFileOptions) *paramParser {
	p := &paramParser{file: path, format: formatJSON, data: data, intern: make(map[string]string, 64),
		goodKeys: make(map[string]bool), sweepTTL: o.SweepTTL}
	p.fixedTags[0] = len(fixedTags("", "", 0, 0, 0))
	p.fixedTags[1] = len(fixedTags("", "", 0, 0, time.Minute))
	return p
}

// parse reads the sections, counts the items before making any, then makes them in
// order: params, grid, random.
func (p *paramParser) parse() (*paramSet, error) {
	start := 0
	if p.marks == nil {
		start = bomLen(p.data)
	}
	sec, err := p.topLevel(start, false)
	if err != nil {
		return nil, err
	}
	base := p.base
	if base == nil {
		if base, err = p.defaults(sec.defaults); err != nil {
			return nil, err
		}
	}
	ps := &paramSet{Format: p.format, Objective: p.objective}
	if sec.objective != nil {
		if ps.Objective, err = p.readObjective(sec.objective); err != nil {
			return nil, err
		}
	}
	grid, err := p.readGrid(sec.grid)
	if err != nil {
		return nil, err
	}
	rnd, err := p.readRandom(sec.random)
	if err != nil {
		return nil, err
	}
	if err := p.checkCount(sec, grid, rnd); err != nil {
		return nil, err
	}
	p.startCanon(base, ps.Objective)
	if err := p.items(sec.params, base, int(grid.total.Int64()+rnd.samples)); err != nil {
		return nil, err
	}
	ps.FromParams = len(p.out)
	if err := p.expandGrid(grid, base); err != nil {
		return nil, err
	}
	ps.FromGrid = len(p.out) - ps.FromParams
	if err := p.expandRandom(rnd, base); err != nil {
		return nil, err
	}
	ps.FromRandom = int(rnd.samples)
	ps.Items = p.out
	ps.Canonical = p.endCanon()
	return ps, nil
}

// sections are the file's top-level members; nil when absent.
type sections struct {
	defaults, params, grid, random, objective *field
}

// topLevel checks the file is one object and returns its members. A defaults file (CSV's
// --defaults) may hold only "defaults" and "objective".
func (p *paramParser) topLevel(start int, defaultsFile bool) (*sections, error) {
	data := p.data
	if len(bytes.TrimSpace(data[start:])) == 0 {
		return nil, paramErrorf(`%s: the file is empty: write {"defaults": {...}, "params": [{...}, ...]}`, p.file)
	}
	if !json.Valid(data[start:]) {
		return nil, p.syntaxError(start)
	}
	w := &walker{b: data, i: start}
	w.skipWS()
	if data[w.i] != '{' {
		return nil, p.errAt(w.i, where{idx: atTop}, `expected %s, found %s`, p.topWord(), p.kindOf(data[w.i:]))
	}
	top, err := p.fields(w, where{idx: atTop}, nil)
	if err != nil {
		return nil, err
	}
	names := []string{"defaults", "params", "grid", "random", "objective"}
	if defaultsFile {
		names = []string{"defaults", "objective"}
	}
	sec := &sections{}
	for i := range top {
		f := &top[i]
		if !slices.Contains(names, f.key) {
			hint := `the file takes only "defaults", "params", "grid", "random" and "objective"`
			if defaultsFile {
				hint = `a defaults file holds only "defaults" and "objective": the items come from the CSV file's rows`
			}
			if s := closest(f.key, names); s != "" {
				hint = fmt.Sprintf("did you mean %q?", s)
			}
			return nil, p.errAt(f.koff, where{idx: atTop}, "unknown top-level key %q: %s", f.key, hint)
		}
		switch f.key {
		case "defaults":
			sec.defaults = f
		case "params":
			sec.params = f
		case "grid":
			sec.grid = f
		case "random":
			sec.random = f
		case "objective":
			sec.objective = f
		}
	}
	if !defaultsFile && sec.params == nil && sec.grid == nil && sec.random == nil {
		return nil, p.errAt(start, where{idx: atTop}, `no items: add "params": [{...}, ...] with one object per instance, a "grid" or a "random" search`)
	}
	return sec, nil
}

// itemBase is what every item starts from: spawn's defaults overlaid with the file's.
type itemBase struct {
	item   item
	params []param         // the defaults' params, sorted by key
	keys   map[string]bool // the keys the file's defaults set
	canon  []byte          // the defaults as compact JSON, for the canonical file
}

func (p *paramParser) defaults(defaults *field) (*itemBase, error) {
	base := &itemBase{item: item{InstanceType: defaultInstanceType, IAMInstanceProfile: defaultInstanceProfile}}
	if defaults == nil {
		return base, nil
	}
	if defaults.val[0] != '{' {
		return nil, p.errAt(defaults.off, where{idx: atTop, key: "defaults"}, "expected %s of keys shared by every item, found %s", p.objectWord(), p.kindOf(defaults.val))
	}
	dw := &walker{b: p.data, i: defaults.off}
	dfields, err := p.fields(dw, where{idx: inDefaults}, nil)
	if err != nil {
		return nil, err
	}
	base.keys = make(map[string]bool, len(dfields))
	for _, f := range dfields {
		if err := p.apply(&base.item, &base.params, f); err != nil {
			return nil, err
		}
		base.keys[f.key] = true
	}
	// null in the defaults only leaves a key unset: there is nothing to take it out of.
	p.drop = p.drop[:0]
	slices.SortFunc(base.params, func(a, b param) int { return strings.Compare(a.Key, b.Key) })
	base.canon = appendCanonObject(nil, dfields)
	return base, nil
}

// items reads the "params" array (or a CSV file's rows): one item per object, each merged
// over base and checked. more is how many items the grid and random search add after.
func (p *paramParser) items(params *field, base *itemBase, more int) error {
	if params == nil {
		p.out = make([]item, 0, more)
		return nil
	}
	data := p.data
	var sect uint8 = sectParams
	if p.format == formatCSV {
		sect = sectRow
	}
	if params.val[0] != '[' {
		return p.errAt(params.off, where{idx: atTop, key: "params"}, "expected %s of objects, one per instance, found %s", p.listWord(), p.kindOf(params.val))
	}
	// Counting commas first sizes the slice once: 100,000 items must not mean 17 regrowths.
	p.out = make([]item, 0, min(estimateItems(params.val), maxSweepItems)+more)
	pw := &walker{b: data, i: params.off + 1}
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
		at := where{idx: len(p.out), sect: sect}
		off := pw.i
		if data[off] != '{' {
			return p.errAt(off, at, "expected %s of keys, found %s", p.objectWord(), p.kindOf(data[off:]))
		}
		if len(p.out)+more >= maxSweepItems {
			return p.tooMany(params, countElems(params.val))
		}
		var err error
		if fs, err = p.fields(pw, at, fs); err != nil {
			return err
		}
		if err := p.addItem(base, fs, at, off); err != nil {
			return err
		}
	}
	if len(p.out) == 0 && more == 0 {
		return p.errAt(params.off, where{idx: atTop, key: "params"}, `the list is empty: add one object per instance, e.g. [{"command": "./run.sh"}]`)
	}
	return nil
}

// addItem makes the next item: base overlaid with fs (the item's own keys), checked, and
// written to the canonical file when one is being made. at names the item, off is where
// it was written.
func (p *paramParser) addItem(base *itemBase, fs []field, at where, off int) error {
	it := base.item
	it.Index = len(p.out)
	p.own = p.own[:0]
	for _, f := range fs {
		if err := p.apply(&it, &p.own, f); err != nil {
			return err
		}
	}
	it.Params = mergeParams(base.params, p.own)
	if len(p.drop) > 0 {
		it.Params = dropParams(it.Params, p.drop)
		p.drop = p.drop[:0]
	}
	if err := p.check(&it, at, off, base.keys, fs); err != nil {
		return err
	}
	p.out = append(p.out, it)
	if p.canon != nil {
		p.canon = append(appendCanonObject(p.canon, fs), ",\n"...)
	}
	return nil
}

// check validates what only the merged item can tell.
func (p *paramParser) check(it *item, at where, off int, fromDefaults map[string]bool, own []field) error {
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
		return p.errAt(off, at, "both command%s and user_data%s are set: give command (spawn writes the script) or user_data (yours, verbatim), not both",
			origin("command"), origin("user_data"))
	}
	if it.Command == "" && it.UserData == "" {
		return p.errAt(off, at, `nothing to run: give "command" (a shell line) or "user_data" %s`, p.hereOrDefaults(at))
	}
	if it.SpotMaxPrice != "" && !it.Spot {
		return p.errAt(off, at, `spot_max_price%s is set but spot is not true: add "spot": true (or "prefer") or remove the price`, origin("spot_max_price"))
	}
	if err := p.checkFallback(it, at, off, origin); err != nil {
		return err
	}
	has := 0
	if it.TTL > 0 || p.sweepTTL > 0 {
		has = 1
	}
	if n := p.fixedTags[has] + len(it.Params); n > maxTagsPerResource {
		if it.TTL == 0 && p.sweepTTL > 0 {
			return p.errAt(off, at, "with --ttl the instance also gets tag %s, making %d tags, over EC2's limit of %d: drop a param",
				tagTTL, n, maxTagsPerResource)
		}
		return p.errAt(off, at, "%d params make %d tags, over EC2's limit of %d per instance: use at most %d params per item",
			len(it.Params), n, maxTagsPerResource, maxTagsPerResource-p.fixedTags[has])
	}
	if it.Command != "" {
		if n := userDataEstimate(it); n > maxUserDataBytes {
			return p.errAt(off, at, "the instance script would be about %d bytes, over EC2's user-data limit of %d: move the long command or values into a script the command downloads",
				n, maxUserDataBytes)
		}
	}
	return nil
}

// hereOrDefaults says where a key an item lacks can be given.
func (p *paramParser) hereOrDefaults(at where) string {
	switch {
	case at.sect == sectRow:
		return "as a column or in the --defaults file's defaults"
	case at.sect == sectGrid:
		return "in defaults or as a grid axis"
	case at.sect == sectRandom:
		return "in defaults"
	}
	return "here or in defaults"
}

// fields reads the object at w.i (which must be '{') and moves past it. Keys are
// unescaped; a key given twice is refused, since JSON would silently keep the last.
// obj names the object: each field's place is obj.key.
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
			return nil, p.errAt(keyOff, obj.with(key), "the key appears twice in one %s: keep one", p.objectNoun())
		}
		fs = append(fs, field{key: key, val: val, off: off, koff: keyOff, at: obj.with(key)})
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

// where names a place in the file for messages: params[3].ttl, defaults.region,
// grid.lr[2]. It is formatted only when a message needs it: parsing 100,000 items builds
// none.
type where struct {
	idx  int    // item index, or inDefaults, or atTop
	key  string // a key within it
	elem int    // 1 + index within an array value; 0: none
	// path is the place of a value the grid or the random search hands to an item,
	// formatted once per value when the section is read: grid.model[1].batch.
	path string
	sect uint8 // what made the item idx
}

const (
	inDefaults = -1
	atTop      = -2
)

// What made an item, for the place of a message about the item as a whole.
const (
	sectParams = iota
	sectGrid
	sectRandom
	sectRow // a CSV file's row: the line says which
)

func (w where) with(key string) where { w.key = key; return w }

// inner is the place of element i of the value at w.
func (w where) inner(i int) where {
	if w.elem == 0 {
		w.elem = i + 1
	}
	return w
}

func (w where) String() string {
	var s string
	switch {
	case w.path != "":
		s = w.path
	case w.idx == atTop:
		s = w.key
	case w.idx == inDefaults:
		s = "defaults"
	case w.sect == sectRow:
		if w.key != "" {
			s = "column " + w.key
		}
	case w.sect == sectGrid:
		s = "item " + strconv.Itoa(w.idx) + " (grid)"
	case w.sect == sectRandom:
		s = "item " + strconv.Itoa(w.idx) + " (random)"
	default:
		s = "params[" + strconv.Itoa(w.idx) + "]"
	}
	if w.idx != atTop && w.sect != sectRow && w.key != "" {
		s += "." + w.key
	}
	if w.elem > 0 {
		s += "[" + strconv.Itoa(w.elem-1) + "]"
	}
	return s
}

// apply sets one key of an item or of the defaults; f.at names it in messages.
func (p *paramParser) apply(it *item, params *[]param, f field) error {
	at := f.at
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
		err = p.setInstanceTypes(it, f, at)
	case "region":
		err = p.setRegions(it, f, at)
	case "ami", "subnet_id", "security_group_ids":
		if handled, err := p.setPerRegionKey(it, f, at); handled {
			return true, err
		}
		return true, p.setOneRegionKey(it, f, at)
	default:
		return p.setOther(it, f, at)
	}
	return true, err
}

// setOneRegionKey sets ami, subnet_id or security_group_ids given as one value.
func (p *paramParser) setOneRegionKey(it *item, f field, at where) (err error) {
	switch f.key {
	case "ami":
		if it.AMI, err = p.str(f, at); err == nil && !validAMI(it.AMI) {
			err = p.errAt(f.off, at, "%q is not an AMI id: use ami-0123456789abcdef0 or resolve:ssm:<parameter>, or remove the key for Amazon Linux 2023", it.AMI)
		} else if err == nil && !readableAMIParameter(it.AMI) {
			err = p.errAt(f.off, at, "%q names a parameter the orchestrator may not read: resolve:ssm: takes AWS's public parameters (%s…) or your own under %s", it.AMI, publicAMIParameters, ownAMIParameters)
		}
	case "subnet_id":
		if it.SubnetID, err = p.str(f, at); err == nil && !hasIDPrefix(it.SubnetID, "subnet-") {
			err = p.errAt(f.off, at, "%q is not a subnet id: use subnet-0123456789abcdef0", it.SubnetID)
		}
	case "security_group_ids":
		it.SecurityGroupIDs, err = p.securityGroups(f, at)
	}
	return err
}

// setOther sets the known keys that have one form; known is false for a param's key.
func (p *paramParser) setOther(it *item, f field, at where) (known bool, err error) {
	switch f.key {
	case "key_name":
		it.KeyName, err = p.nonEmpty(f, at, "the EC2 key pair name")
	case "iam_instance_profile":
		it.IAMInstanceProfile, err = p.nonEmpty(f, at, "the instance profile name")
	case "spot":
		err = p.setSpot(it, f, at)
	case "spot_max_price":
		it.SpotMaxPrice, err = p.spotMaxPrice(f, at)
	case "ttl":
		it.TTL, err = p.duration(f, at)
	case "idle_timeout":
		it.IdleTimeout, err = p.duration(f, at)
		if err == nil {
			if _, _, shapeErr := idleAlarmShape(it.IdleTimeout); shapeErr != nil {
				err = p.errAt(f.off, at, "%v", shapeErr)
			}
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
	line := p.line(off)
	msg := fmt.Sprintf(format, args...)
	place := at.String()
	if place == "" {
		return paramErrorf("%s line %d: %s", p.file, line, msg)
	}
	return paramErrorf("%s line %d, %s: %s", p.file, line, place, msg)
}
