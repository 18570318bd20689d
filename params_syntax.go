package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"unicode/utf8"
)

// The parameter file's JSON syntax: a walker over JSON that json.Valid accepted, and
// the decoder's complaints turned into a line, a column and a fix.

// syntaxError turns the decoder's complaint into the file's line and column and a fix.
func (p *paramParser) syntaxError(start int) error {
	var v any
	err := json.Unmarshal(p.data[start:], &v)
	var se *json.SyntaxError
	if !errors.As(err, &se) {
		return paramErrorf("%s is not valid JSON (%v): check the JSON", p.file, err)
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
	return paramErrorf("%s line %d, column %d: %s: %s", p.file, line, col, msg, hint)
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

// srcMark says that data from offset off on was written on line of the file: the JSON a
// YAML or CSV file was turned into carries one per key and value.
type srcMark struct{ off, line int }

// line is the file's line of data's offset off.
func (p *paramParser) line(off int) int {
	if p.marks == nil {
		line, _ := lineCol(p.data, off)
		return line
	}
	// The last mark at or before off: of several at one offset, the last written is the
	// innermost (a CSV row, then its first cell).
	i := sort.Search(len(p.marks), func(i int) bool { return p.marks[i].off > off }) - 1
	if i < 0 {
		return 1
	}
	return p.marks[i].line
}

// kindOf names a value's type for messages, in the words of the file's format.
func (p *paramParser) kindOf(v []byte) string {
	k := kindOf(v)
	if p.format == formatYAML {
		switch k {
		case "an object":
			return "a mapping"
		case "an array":
			return "a list"
		}
	}
	return k
}

// topWord is what the file must be, for messages.
func (p *paramParser) topWord() string {
	if p.format == formatYAML {
		return "a mapping of defaults: and params:, grid: or random:"
	}
	return `a JSON object {"defaults": {...}, "params": [...]}`
}

func (p *paramParser) objectWord() string { return p.kindOf([]byte("{}")) }

func (p *paramParser) objectNoun() string {
	if p.format == formatYAML {
		return "mapping"
	}
	return "object"
}

func (p *paramParser) listWord() string { return p.kindOf([]byte("[]")) }

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

// countElems counts the elements of a JSON array (valid, as every walk here).
func countElems(arr []byte) int {
	n := 0
	_ = elements(arr, func(int, []byte) error { n++; return nil })
	return n
}

// elements calls fn with each element of a JSON array (valid, as every walk here) and
// its offset in arr, in order, and stops at fn's first error.
func elements(arr []byte, fn func(off int, v []byte) error) error {
	w := &walker{b: arr, i: 1}
	for {
		w.skipWS()
		if w.b[w.i] == ']' {
			return nil
		}
		if w.b[w.i] == ',' {
			w.i++
			w.skipWS()
		}
		off := w.i
		if err := fn(off, w.value()); err != nil {
			return err
		}
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
