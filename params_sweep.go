package main

import (
	"bytes"
	"fmt"
	"math/big"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// The sweep as a whole: which format a file is in, how many items its sections make
// (refused past the limit before any is made), its objective, and the canonical JSON the
// CLI uploads so that the engine reads one format only.

const (
	formatJSON = "json"
	formatYAML = "yaml"
	formatCSV  = "csv"

	// maxSweepItems bounds a sweep after expansion; the function's memory is sized for it.
	maxSweepItems = 100_000
)

// paramFileOptions are what a launch knows besides the file.
type paramFileOptions struct {
	// Stdin: the file came on stdin, with no name to tell its format: JSON when it starts
	// with "{", else YAML.
	Stdin bool
	// DefaultsFile and Defaults are a CSV file's defaults and objective (JSON or YAML).
	DefaultsFile string
	Defaults     []byte
	// SweepTTL is the launch's sweep-wide TTL: it adds a tag to items without their own.
	SweepTTL time.Duration
	// Canonical asks for paramSet.Canonical.
	Canonical bool
}

// paramSet is a parsed sweep.
type paramSet struct {
	Items     []item
	Objective *objective // nil when the file names none
	Format    string
	// How many items each section made, in item order: params (or a CSV file's rows),
	// grid, random.
	FromParams, FromGrid, FromRandom int
	// Canonical is the sweep as one JSON file of fully expanded items, which parses to
	// exactly Items: the file the CLI uploads and the engine reads.
	Canonical []byte
}

// objective names the metric the sweep is judged by.
type objective struct {
	Metric string `json:"metric"`
	Goal   string `json:"goal"` // min or max
}

// paramFormat is the format a file's extension names; "" when it names none.
func paramFormat(path string) string {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".json":
		return formatJSON
	case ".yaml", ".yml":
		return formatYAML
	case ".csv":
		return formatCSV
	}
	return ""
}

func unknownFormat(path string) error {
	ext := filepath.Ext(path)
	if ext == "" {
		return paramErrorf("%s: the name has no extension to tell its format: name the file .json, .yaml, .yml or .csv", path)
	}
	return paramErrorf("%s: unknown file type %q: name the file .json, .yaml, .yml or .csv, whichever it holds", path, ext)
}

// readParamFile parses and validates a parameter file in any of its formats.
func readParamFile(path string, data []byte, o paramFileOptions) (*paramSet, error) {
	format := paramFormat(path)
	if o.Stdin {
		format = formatYAML
		if t := bytes.TrimLeft(data[bomLen(data):], " \t\r\n"); len(t) == 0 || t[0] == '{' {
			format = formatJSON
		}
	}
	if format == "" {
		return nil, unknownFormat(path)
	}
	if o.DefaultsFile != "" && format != formatCSV {
		return nil, paramErrorf(`%s: --defaults %s is for a CSV file, whose rows hold no defaults: put "defaults" and "objective" in %s itself`,
			path, o.DefaultsFile, path)
	}
	p := newParamParser(path, data, o)
	p.format = format
	var err error
	switch format {
	case formatYAML:
		p.data, p.marks, err = yamlToJSON(path, data)
	case formatCSV:
		if o.DefaultsFile != "" {
			if p.base, p.objective, err = readDefaultsFile(o); err != nil {
				return nil, err
			}
		}
		p.data, p.marks, err = csvToJSON(path, data)
	}
	if err != nil {
		return nil, err
	}
	if o.Canonical {
		p.canon = make([]byte, 0, len(p.data)+64)
	}
	return p.parse()
}

// readDefaultsFile reads a CSV file's --defaults: "defaults" and "objective" only.
func readDefaultsFile(o paramFileOptions) (*itemBase, *objective, error) {
	path := o.DefaultsFile
	format := paramFormat(path)
	if format != formatJSON && format != formatYAML {
		return nil, nil, paramErrorf(`%s: a defaults file is JSON or YAML: name it .json, .yaml or .yml and write {"defaults": {...}}`, path)
	}
	p := newParamParser(path, o.Defaults, o)
	p.format = format
	start := bomLen(p.data)
	if format == formatYAML {
		var err error
		if p.data, p.marks, err = yamlToJSON(path, o.Defaults); err != nil {
			return nil, nil, err
		}
		start = 0
	}
	sec, err := p.topLevel(start, true)
	if err != nil {
		return nil, nil, err
	}
	base, err := p.defaults(sec.defaults)
	if err != nil || sec.objective == nil {
		return base, nil, err
	}
	obj, err := p.readObjective(sec.objective)
	return base, obj, err
}

func bomLen(data []byte) int {
	if bytes.HasPrefix(data, []byte("\xef\xbb\xbf")) { // a UTF-8 byte-order mark some editors write
		return 3
	}
	return 0
}

// checkCount refuses a grid and random search that would pass maxSweepItems, before
// either makes an item: a 10^12-item grid is refused at once, in no memory.
func (p *paramParser) checkCount(sec *sections, grid *gridPlan, rnd *randomPlan) error {
	p.gridTotal, p.samples = grid.total, rnd.samples
	total := new(big.Int).Add(grid.total, big.NewInt(rnd.samples))
	if total.Cmp(big.NewInt(maxSweepItems)) <= 0 {
		return nil
	}
	f := sec.grid
	if f == nil || big.NewInt(rnd.samples).Cmp(grid.total) > 0 {
		f = sec.random
	}
	return p.tooMany(f, 0)
}

// tooMany refuses the sweep at section f, counting the items of each section.
func (p *paramParser) tooMany(f *field, params int) error {
	total := new(big.Int).Add(p.gridTotal, big.NewInt(int64(params)+p.samples))
	var parts []string
	if params > 0 {
		parts = append(parts, "params "+groupDigits(strconv.Itoa(params)))
	}
	if p.gridTotal.Sign() > 0 {
		parts = append(parts, "grid "+groupDigits(p.gridTotal.String()))
	}
	if p.samples > 0 {
		parts = append(parts, "random "+groupDigits(strconv.FormatInt(p.samples, 10)))
	}
	return p.errAt(f.off, where{idx: atTop, key: f.key}, "the sweep would have %s items (%s), over spawn's limit of %s per sweep: split it into several sweeps, or make the grid or the samples smaller",
		groupDigits(total.String()), strings.Join(parts, ", "), groupDigits(strconv.Itoa(maxSweepItems)))
}

// groupDigits writes a decimal number with thousands separators: 1,000,000.
func groupDigits(s string) string {
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// readObjective reads {"metric": "loss", "goal": "min"}.
func (p *paramParser) readObjective(f *field) (*objective, error) {
	at := where{idx: atTop, key: "objective"}
	if f.val[0] != '{' {
		return nil, p.errAt(f.off, at, `expected %s like {"metric": "loss", "goal": "min"}, found %s`, p.objectWord(), p.kindOf(f.val))
	}
	fs, err := p.fields(&walker{b: p.data, i: f.off}, where{path: "objective"}, nil)
	if err != nil {
		return nil, err
	}
	obj := &objective{}
	for _, g := range fs {
		switch g.key {
		case "metric":
			obj.Metric, err = p.nonEmpty(g, g.at, "the name of a metric the instances report, e.g. loss")
		case "goal":
			if obj.Goal, err = p.str(g, g.at); err == nil && obj.Goal != "min" && obj.Goal != "max" {
				err = p.errAt(g.off, g.at, `%q is not a goal: use "min" (lower is better) or "max"`, obj.Goal)
			}
		default:
			hint := `an objective has only "metric" and "goal"`
			if s := closest(g.key, []string{"metric", "goal"}); s != "" {
				hint = fmt.Sprintf("did you mean %q?", s)
			}
			err = p.errAt(g.koff, g.at, "unknown key: %s", hint)
		}
		if err != nil {
			return nil, err
		}
	}
	switch {
	case obj.Metric == "":
		return nil, p.errAt(f.off, at, `no "metric": name the metric to rank items by, e.g. "metric": "loss"`)
	case obj.Goal == "":
		return nil, p.errAt(f.off, at, `no "goal": say whether %q is best low ("goal": "min") or high ("goal": "max")`, obj.Metric)
	}
	return obj, nil
}

// startCanon writes the canonical file's head: the defaults as they were given (items
// override them exactly as in the file), the objective, and the opening of "params".
func (p *paramParser) startCanon(base *itemBase, obj *objective) {
	if p.canon == nil {
		return
	}
	b := append(p.canon[:0], '{')
	if len(base.canon) > 2 {
		b = append(b, `"defaults":`...)
		b = append(append(b, base.canon...), ',')
	}
	if obj != nil {
		b = append(b, `"objective":{"metric":`...)
		b = appendJSONString(b, obj.Metric)
		b = append(b, `,"goal":`...)
		b = append(appendJSONString(b, obj.Goal), "},"...)
	}
	p.canon = append(b, "\"params\":[\n"...)
}

// endCanon closes the canonical file; nil when none was asked for.
func (p *paramParser) endCanon() []byte {
	if p.canon == nil {
		return nil
	}
	return append(bytes.TrimSuffix(p.canon, []byte(",\n")), "\n]}\n"...)
}

// appendCanonObject appends fs as one compact JSON object, in their order.
func appendCanonObject(b []byte, fs []field) []byte {
	b = append(b, '{')
	for i, f := range fs {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(appendJSONString(b, f.key), ':')
		b = appendCompact(b, f.val)
	}
	return append(b, '}')
}

// appendCompact appends a valid JSON value without the white space outside its strings.
func appendCompact(b, v []byte) []byte {
	if v[0] != '{' && v[0] != '[' {
		return append(b, v...)
	}
	inStr := false
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case inStr && c == '\\':
			b = append(b, c, v[i+1])
			i++
			continue
		case c == '"':
			inStr = !inStr
		case !inStr && (c == ' ' || c == '\t' || c == '\n' || c == '\r'):
			continue
		}
		b = append(b, c)
	}
	return b
}

// appendJSONString appends s as a JSON string. Bytes that are not valid UTF-8 pass
// through, to be refused where the value is read, as in a JSON file.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c == '\n':
			b = append(b, '\\', 'n')
		case c == '\t':
			b = append(b, '\\', 't')
		case c == '\r':
			b = append(b, '\\', 'r')
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}
