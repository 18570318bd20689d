package main

import (
	"bytes"
	"encoding/csv"
	"errors"
	"io"
	"strings"
)

// A CSV parameter file: the header row names the keys, each further row is an item.
// Like YAML it is turned into the JSON the parser reads ({"params": [{...}, ...]}) with
// the line of every cell. A cell is text, except that spot's true or false is a boolean,
// security_group_ids holds ids separated by spaces or semicolons, and instance_type or
// region so separated is a list in order of preference (capacity fallback); an empty cell
// leaves its key unset, so the defaults hold.

// csvToJSON turns a CSV file into {"params": [...]}, with the line of each cell.
func csvToJSON(file string, data []byte) ([]byte, []srcMark, error) {
	r := csv.NewReader(bytes.NewReader(data[bomLen(data):]))
	r.FieldsPerRecord = -1 // a row of the wrong length is refused below, with a better message
	r.TrimLeadingSpace = true
	r.ReuseRecord = true
	header, err := r.Read()
	if errors.Is(err, io.EOF) {
		return nil, nil, paramErrorf("%s: the file is empty: write a header row of keys (e.g. lr,batch,command), then one row per instance", file)
	}
	if err != nil {
		return nil, nil, csvSyntaxError(file, err)
	}
	keys, err := csvHeader(file, header)
	if err != nil {
		return nil, nil, err
	}
	out := make([]byte, 0, len(data)*2)
	marks := []srcMark{{off: 0, line: 1}}
	out = append(out, `{"params":[`...)
	mark := func(line int) { marks = append(marks, srcMark{off: len(out), line: line}) }
	rows := 0
	for {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, nil, csvSyntaxError(file, err)
		}
		line, _ := r.FieldPos(0)
		if len(rec) != len(keys) {
			return nil, nil, paramErrorf("%s line %d: %d fields where the header has %d: give every column (an empty field keeps the default), and quote a value that holds a comma",
				file, line, len(rec), len(keys))
		}
		if rows > 0 {
			out = append(out, ',')
		}
		rows++
		mark(line)
		out = append(out, '{')
		n := 0
		for i, cell := range rec {
			if cell == "" {
				continue
			}
			if n > 0 {
				out = append(out, ',')
			}
			n++
			cellLine, _ := r.FieldPos(i)
			mark(cellLine)
			out = append(appendJSONString(out, keys[i]), ':')
			out = appendCSVCell(out, keys[i], cell)
		}
		out = append(out, '}')
	}
	if rows == 0 {
		return nil, nil, paramErrorf("%s line 1: a header and no rows: add one row per instance under it", file)
	}
	return append(out, "]}"...), marks, nil
}

// csvHeader reads the header row's keys: named, each once.
func csvHeader(file string, header []string) ([]string, error) {
	keys := make([]string, len(header))
	column := make(map[string]int, len(header))
	for i, h := range header {
		k := strings.TrimSpace(h)
		if k == "" {
			return nil, paramErrorf("%s line 1, column %d: the header names no key: name every column, e.g. lr", file, i+1)
		}
		if j, dup := column[k]; dup {
			return nil, paramErrorf("%s line 1, column %d: %q names columns %d and %d: keep one", file, i+1, k, j+1, i+1)
		}
		column[k] = i
		keys[i] = k
	}
	return keys, nil
}

// appendCSVCell writes one cell as the JSON value its key takes.
func appendCSVCell(b []byte, key, cell string) []byte {
	switch key {
	case "spot":
		if strings.EqualFold(cell, "true") || strings.EqualFold(cell, "false") {
			return append(b, strings.ToLower(cell)...)
		}
	case "security_group_ids":
		return appendCSVList(b, cell)
	case "instance_type", "region":
		// A preference list for capacity fallback: c5.large;m5.large.
		if strings.ContainsAny(strings.TrimSpace(cell), "; \t") {
			return appendCSVList(b, cell)
		}
	}
	return appendJSONString(b, cell)
}

// appendCSVList writes a cell of values separated by semicolons or spaces as a list.
func appendCSVList(b []byte, cell string) []byte {
	b = append(b, '[')
	for i, v := range strings.FieldsFunc(cell, func(r rune) bool { return r == ';' || r == ' ' || r == '\t' }) {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, v)
	}
	return append(b, ']')
}

// csvSyntaxError turns encoding/csv's complaint into the file's line and column and a fix.
func csvSyntaxError(file string, err error) error {
	var pe *csv.ParseError
	if !errors.As(err, &pe) {
		return paramErrorf("%s: %v: check the CSV", file, err)
	}
	hint := "check the CSV"
	switch {
	case errors.Is(pe.Err, csv.ErrBareQuote):
		hint = `a quote inside a field that does not start with one: quote the whole field and double the quotes inside, as "say ""hi"""`
	case errors.Is(pe.Err, csv.ErrQuote):
		hint = `a quoted field must end with a quote before the next comma or line end: double the quotes inside it, as "say ""hi"""`
	}
	return paramErrorf("%s line %d, column %d: %s", file, pe.Line, pe.Column, hint)
}
