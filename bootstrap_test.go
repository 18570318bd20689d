package main

import (
	"archive/zip"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	lambdatypes "github.com/aws/aws-sdk-go-v2/service/lambda/types"
)

func TestBootstrapZipIsReproducibleExecutableAndArchitectureAware(t *testing.T) {
	exe := testBootstrap(t)
	a, err := zipBootstrap(exe)
	if err != nil {
		t.Fatal(err)
	}
	b, err := zipBootstrap(exe)
	if err != nil {
		t.Fatal(err)
	}
	if a.sha256 != b.sha256 || !bytes.Equal(a.zip, b.zip) {
		t.Error("zipping the same binary twice gave different bytes")
	}
	if a.goArch != runtime.GOARCH {
		t.Errorf("architecture %s (%s), this binary is %s", a.arch, a.goArch, runtime.GOARCH)
	}
	zr, err := zip.NewReader(bytes.NewReader(a.zip), int64(len(a.zip)))
	if err != nil || len(zr.File) != 1 || zr.File[0].Name != "bootstrap" || zr.File[0].Mode().Perm() != 0o755 {
		t.Fatalf("zip: %v %+v", err, zr)
	}
	rc, err := zr.File[0].Open()
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(rc)
	rc.Close()
	orig, _ := os.ReadFile(exe)
	if !bytes.Equal(body, orig) {
		t.Error("the zipped bootstrap is not the executable")
	}

	// An arm64 ELF is deployed as arm64 whatever this machine is: patch e_machine.
	arm := filepath.Join(t.TempDir(), "spawn-arm64")
	patched := append([]byte(nil), orig...)
	patched[18], patched[19] = byte(183), 0 // EM_AARCH64, little-endian
	if err := os.WriteFile(arm, patched, 0o755); err != nil {
		t.Fatal(err)
	}
	if arch, goArch, err := elfArchitecture(arm); err != nil || arch != lambdatypes.ArchitectureArm64 || goArch != "arm64" {
		t.Errorf("patched arm64 ELF: %s %s %v", arch, goArch, err)
	}

	script := filepath.Join(t.TempDir(), "not-elf")
	if err := os.WriteFile(script, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err = zipBootstrap(script)
	if err == nil || !strings.Contains(err.Error(), "--bootstrap") {
		t.Errorf("a non-ELF bootstrap: %v", err)
	}
	_, errOut, code := runSpawn(t, deployEnv(t), "deploy", "--bootstrap", script)
	if code != exitUsage || !strings.Contains(errOut, "not a Linux executable") {
		t.Errorf("deploy --bootstrap script: exit %d %q", code, errOut)
	}
}

// BenchmarkBootstrapZip builds spawn as a release does (buildRelease) and reports the zipped bootstrap's size and the zip time.
func BenchmarkBootstrapZip(b *testing.B) {
	if runtime.GOOS != "linux" {
		b.Skip("zips a Linux build")
	}
	bin := buildRelease(b)
	fi, err := os.Stat(bin)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	var pkg *bootstrapPackage
	for i := 0; i < b.N; i++ {
		if pkg, err = zipBootstrap(bin); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(pkg.zip))/1e6, "MB-zip")
	b.ReportMetric(float64(fi.Size())/1e6, "MB-binary")
}
