package main

import (
	"go/ast"
	"go/parser"
	"go/token"
	"strconv"
	"strings"
	"testing"
)

// voiceFiles are the files whose messages already follow cli.go's rule (one ": "
// between what was wrong and what to do). For now it lists the command layer and the
// parameter file only; the engine's files join it as they are brought in line.
var voiceFiles = []string{
	"cli.go", "cmd_launch.go", "cmd_sweep.go", "cmd_status.go", "cmd_deploy.go",
	"main.go", "params.go", "params_syntax.go", "status.go",
}

// TestMessagesUseOneSeparator fails on a string literal holding " — ", the separator
// the rule replaced by ": ". Comments may use it; only literals reach a user.
func TestMessagesUseOneSeparator(t *testing.T) {
	fset := token.NewFileSet()
	checked := 0
	for _, name := range voiceFiles {
		f, err := parser.ParseFile(fset, name, nil, parser.SkipObjectResolution)
		if err != nil {
			if strings.Contains(err.Error(), "no such file") {
				continue // a file of the list that this tree does not have (yet)
			}
			t.Fatal(err)
		}
		checked++
		ast.Inspect(f, func(n ast.Node) bool {
			lit, ok := n.(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				return true
			}
			s, err := strconv.Unquote(lit.Value)
			if err != nil {
				t.Fatalf("%s: %v", fset.Position(lit.Pos()), err)
			}
			if strings.Contains(s, " — ") {
				t.Errorf("%s: %q uses \" — \": join what was wrong and what to do with \": \"", fset.Position(lit.Pos()), s)
			}
			return true
		})
	}
	if checked < 8 {
		t.Fatalf("checked %d files of %d: the list is stale", checked, len(voiceFiles))
	}
}
