package main

import (
	"bytes"
	"errors"
	"io"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// A YAML parameter file has the JSON file's schema. It is turned into the JSON the
// parser reads, with the YAML line of every key and value, so that one parser checks
// both and a message names the line the user wrote: sweep.yaml line 9, grid.lr: ….

// maxYAMLJSON bounds the JSON a YAML file becomes: aliases can repeat a node many times
// over (a "billion laughs" file), and such a file is refused, not expanded.
const maxYAMLJSON = 64 << 20

type yamlConv struct {
	file  string
	out   []byte
	marks []srcMark
	// open are the aliased nodes being written: an alias to one of them is a cycle.
	open []*yaml.Node
}

// yamlToJSON turns one YAML document into JSON, with the line of each key and value.
func yamlToJSON(file string, data []byte) ([]byte, []srcMark, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil, paramErrorf("%s: the file is empty: write defaults:, then params:, grid: or random:", file)
		}
		return nil, nil, yamlSyntaxError(file, err)
	}
	var next yaml.Node
	if err := dec.Decode(&next); !errors.Is(err, io.EOF) {
		if err != nil {
			return nil, nil, yamlSyntaxError(file, err)
		}
		return nil, nil, paramErrorf("%s line %d: a second YAML document: a parameter file is one document, so remove the --- before it or split the sweep", file, max(next.Line, 1))
	}
	if len(doc.Content) == 0 {
		return nil, nil, paramErrorf("%s: the file holds only comments: write defaults:, then params:, grid: or random:", file)
	}
	c := &yamlConv{file: file, out: make([]byte, 0, len(data)+len(data)/2)}
	if err := c.node(doc.Content[0]); err != nil {
		return nil, nil, err
	}
	return c.out, c.marks, nil
}

var yamlLineError = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// yamlParserProblems are the library's parser (not scanner) errors: it reports their line
// counted from 0, the line where the mapping, list or document they are about starts.
var yamlParserProblems = []string{
	"did not find expected <document start>", "did not find expected node content", "did not find expected key",
	"did not find expected '-' indicator", "did not find expected ',' or ']'", "did not find expected ',' or '}'",
}

// yamlSyntaxError turns the YAML library's complaint into the file's line and a fix.
func yamlSyntaxError(file string, err error) error {
	msg := strings.ReplaceAll(err.Error(), "\n", " ")
	const hint = "check the YAML: indentation, a missing colon, or a quote left open"
	if m := yamlLineError.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		if slices.Contains(yamlParserProblems, m[2]) {
			line++
		}
		return paramErrorf("%s line %d: %s: %s", file, line, m[2], hint)
	}
	return paramErrorf("%s: %s: %s", file, strings.TrimPrefix(msg, "yaml: "), hint)
}

func (c *yamlConv) mark(line int) {
	c.marks = append(c.marks, srcMark{off: len(c.out), line: line})
}

func (c *yamlConv) node(n *yaml.Node) error {
	if len(c.out) > maxYAMLJSON {
		return paramErrorf("%s line %d: the file's aliases expand past %d MB: write the values out, or use defaults for what items share",
			c.file, n.Line, maxYAMLJSON>>20)
	}
	c.mark(n.Line)
	switch n.Kind {
	case yaml.AliasNode:
		c.marks = c.marks[:len(c.marks)-1]
		for _, o := range c.open {
			if o == n.Alias {
				return paramErrorf("%s line %d: the alias *%s is inside the node it names: write the value out", c.file, n.Line, n.Value)
			}
		}
		c.open = append(c.open, n.Alias)
		err := c.node(n.Alias)
		c.open = c.open[:len(c.open)-1]
		return err
	case yaml.ScalarNode:
		c.out = appendYAMLScalar(c.out, n)
	case yaml.SequenceNode:
		c.out = append(c.out, '[')
		for i, e := range n.Content {
			if i > 0 {
				c.out = append(c.out, ',')
			}
			if err := c.node(e); err != nil {
				return err
			}
		}
		c.out = append(c.out, ']')
	case yaml.MappingNode:
		return c.mapping(n)
	default:
		return paramErrorf("%s line %d: a YAML node of a kind the file cannot hold: write mappings, lists and values", c.file, n.Line)
	}
	return nil
}

func (c *yamlConv) mapping(n *yaml.Node) error {
	c.out = append(c.out, '{')
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.AliasNode {
			k = k.Alias
		}
		if k.Kind != yaml.ScalarNode {
			return paramErrorf("%s line %d: a key is a %s: keys are plain names such as lr", c.file, k.Line, yamlKind(k))
		}
		if k.ShortTag() == "!!merge" {
			return paramErrorf("%s line %d: merge keys (<<) are not supported: put what items share in defaults", c.file, k.Line)
		}
		if i > 0 {
			c.out = append(c.out, ',')
		}
		c.mark(k.Line)
		c.out = append(appendJSONString(c.out, k.Value), ':')
		if err := c.node(v); err != nil {
			return err
		}
	}
	c.out = append(c.out, '}')
	return nil
}

func yamlKind(n *yaml.Node) string {
	if n.Kind == yaml.MappingNode {
		return "mapping"
	}
	return "list"
}

// appendYAMLScalar writes a scalar as JSON. A number is kept as written when JSON writes
// it the same way (1e-5, 64), so the instance sees what the JSON file would give it;
// other YAML spellings (0x1f, 1_000, .5, +1) become their decimal value, and .inf or
// .nan, which JSON cannot hold, stay text.
func appendYAMLScalar(b []byte, n *yaml.Node) []byte {
	switch n.ShortTag() {
	case "!!null":
		return append(b, "null"...)
	case "!!bool":
		return strconv.AppendBool(b, strings.EqualFold(n.Value, "true"))
	case "!!int":
		if jsonNumber(n.Value) {
			return append(b, n.Value...)
		}
		var i int64
		if n.Decode(&i) == nil {
			return strconv.AppendInt(b, i, 10)
		}
	case "!!float":
		if jsonNumber(n.Value) {
			return append(b, n.Value...)
		}
		var f float64
		if n.Decode(&f) == nil && !math.IsInf(f, 0) && !math.IsNaN(f) {
			return strconv.AppendFloat(b, f, 'g', -1, 64)
		}
	}
	return appendJSONString(b, n.Value)
}

// jsonNumber reports whether s is a number as JSON writes one.
func jsonNumber(s string) bool {
	i := 0
	if i < len(s) && s[i] == '-' {
		i++
	}
	digits := func() int {
		j := i
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		return i - j
	}
	start := i
	if n := digits(); n == 0 || (n > 1 && s[start] == '0') {
		return false
	}
	if i < len(s) && s[i] == '.' {
		i++
		if digits() == 0 {
			return false
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		if digits() == 0 {
			return false
		}
	}
	return i == len(s)
}
