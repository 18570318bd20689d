package main

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
)

// The layout of docs/design.md: the command layer calls the engine and provisioning,
// never the reverse. Every other non-test file but main.go (the mode switch) is below it.
// The command layer is cli.go and every cmd_*.go, so a new command file joins it by its name.
var commandFiles = func() []string {
	files := []string{"cli.go"}
	names, _ := filepath.Glob("cmd_*.go")
	for _, n := range names {
		if !strings.HasSuffix(n, "_test.go") {
			files = append(files, n)
		}
	}
	return files
}()

func belowCommandLayer(t *testing.T) []string {
	names, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	var below []string
	for _, n := range names {
		if !strings.HasSuffix(n, "_test.go") && n != "main.go" && !slices.Contains(commandFiles, n) {
			below = append(below, n)
		}
	}
	if len(below) < 10 {
		t.Fatalf("found %d files below the command layer: run the test from the package directory", len(below))
	}
	return below
}

const (
	maxFileLines = 900
	maxFuncLines = 80
)

func parseFiles(t *testing.T, names []string) (*token.FileSet, map[string]*ast.File) {
	t.Helper()
	fset := token.NewFileSet()
	files := map[string]*ast.File{}
	for _, n := range names {
		f, err := parser.ParseFile(fset, n, nil, parser.ParseComments)
		if err != nil {
			t.Fatal(err)
		}
		files[n] = f
	}
	return fset, files
}

// topLevelNames lists what a file declares: funcs (methods as Type.name), types, consts, vars.
func topLevelNames(f *ast.File) map[string]bool {
	names := map[string]bool{}
	for _, d := range f.Decls {
		switch x := d.(type) {
		case *ast.FuncDecl:
			if x.Recv == nil {
				names[x.Name.Name] = true
			}
		case *ast.GenDecl:
			for _, sp := range x.Specs {
				switch y := sp.(type) {
				case *ast.TypeSpec:
					names[y.Name.Name] = true
				case *ast.ValueSpec:
					for _, n := range y.Names {
						names[n.Name] = true
					}
				}
			}
		}
	}
	return names
}

func TestEngineNeverNamesTheCommandLayer(t *testing.T) {
	_, cmds := parseFiles(t, commandFiles)
	commandNames := map[string]string{}
	for file, f := range cmds {
		for n := range topLevelNames(f) {
			commandNames[n] = file
		}
	}
	fset, engine := parseFiles(t, belowCommandLayer(t))
	for _, f := range engine {
		ast.Inspect(f, func(n ast.Node) bool {
			switch x := n.(type) {
			case *ast.SelectorExpr: // x.name: a field or method, not a package-level name
				return checkIdent(t, fset, commandNames, x.X)
			case *ast.KeyValueExpr: // a struct literal's field name
				if _, ok := x.Key.(*ast.Ident); ok {
					return checkIdent(t, fset, commandNames, x.Value)
				}
			}
			return checkIdent(t, fset, commandNames, n)
		})
	}
}

// checkIdent reports n when it names a package-level declaration of the command layer;
// it returns whether to look inside n.
func checkIdent(t *testing.T, fset *token.FileSet, commandNames map[string]string, n ast.Node) bool {
	id, ok := n.(*ast.Ident)
	if !ok {
		if n != nil {
			ast.Inspect(n, func(m ast.Node) bool {
				if m == n {
					return true
				}
				return checkIdent(t, fset, commandNames, m)
			})
		}
		return false
	}
	{
		// Only identifiers that resolve to package scope: a local of the same name is not
		// a reference.
		if from, ok := commandNames[id.Name]; ok && id.Obj == nil {
			t.Errorf("%s: %s of the command layer (%s) is named below it: pass the value down or move the declaration", fset.Position(id.Pos()), id.Name, from)
		}
	}
	return false
}

func TestFilesAndFunctionsStayShort(t *testing.T) {
	names, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	var src []string
	for _, n := range names {
		if !strings.HasSuffix(n, "_test.go") {
			src = append(src, n)
		}
	}
	sort.Strings(src)
	fset, files := parseFiles(t, src)
	for _, name := range src {
		f := files[name]
		if lines := fset.Position(f.End()).Line; lines > maxFileLines {
			t.Errorf("%s has %d lines: split it by concern (at most %d)", name, lines, maxFileLines)
		}
		for _, d := range f.Decls {
			fn, ok := d.(*ast.FuncDecl)
			if !ok {
				continue
			}
			lines := fset.Position(fn.End()).Line - fset.Position(fn.Pos()).Line + 1
			if lines > maxFuncLines && !strings.Contains(fn.Doc.Text(), "Long because") {
				t.Errorf("%s: %s has %d lines: split it into named steps, or say why beside it (\"Long because …\")",
					fset.Position(fn.Pos()), fn.Name.Name, lines)
			}
		}
	}
}
