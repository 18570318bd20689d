package main

import (
	"archive/zip"
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"encoding/base64"
	"fmt"
	"io"
	"os"
	"runtime"
	"time"

	lambdatypes "github.com/aws/aws-sdk-go-v2/service/lambda/types"
)

// zipEpoch is the fixed timestamp of the zipped bootstrap, so an unchanged binary gives
// the same bytes and the same CodeSha256.
var zipEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// bootstrapPackage is the function's code: spawn zipped as "bootstrap".
type bootstrapPackage struct {
	path   string
	zip    []byte
	sha256 string // base64, as Lambda's CodeSha256
	arch   lambdatypes.Architecture
	goArch string // what the binary reports as runtime.GOARCH
}

// selfBootstrap is the executable to zip: --bootstrap, else this binary when it is a
// Linux build.
func selfBootstrap(flagPath string) (string, error) {
	if flagPath != "" {
		return flagPath, nil
	}
	if runtime.GOOS != "linux" {
		return "", fmt.Errorf("this spawn is a %s build and Lambda runs Linux: pass --bootstrap FILE with a Linux build of spawn, such as the spawn in the same release's spawn_<version>_linux_arm64.tar.gz, or one built with GOOS=linux GOARCH=arm64 go build -o spawn-linux-arm64", runtime.GOOS)
	}
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("finding this executable to zip (%w): pass --bootstrap FILE", err)
	}
	return exe, nil
}

// elfArchitecture reads the Lambda architecture from the binary itself, so a
// --bootstrap of another architecture is deployed as what it is.
func elfArchitecture(path string) (lambdatypes.Architecture, string, error) {
	f, err := elf.Open(path)
	if err != nil {
		return "", "", fmt.Errorf("%s is not a Linux executable (%v): pass --bootstrap FILE with a Linux build of spawn", path, err)
	}
	defer f.Close()
	if f.OSABI != elf.ELFOSABI_NONE && f.OSABI != elf.ELFOSABI_LINUX {
		return "", "", fmt.Errorf("%s is a %v executable, not Linux: pass --bootstrap FILE with a Linux build of spawn", path, f.OSABI)
	}
	if f.Type != elf.ET_EXEC && f.Type != elf.ET_DYN {
		return "", "", fmt.Errorf("%s is an ELF %v, not an executable: pass --bootstrap FILE with a Linux build of spawn", path, f.Type)
	}
	switch f.Machine {
	case elf.EM_X86_64:
		return lambdatypes.ArchitectureX8664, "amd64", nil
	case elf.EM_AARCH64:
		return lambdatypes.ArchitectureArm64, "arm64", nil
	}
	return "", "", fmt.Errorf("%s is a Linux %v executable and Lambda runs only x86_64 and arm64: build with GOARCH=amd64 or GOARCH=arm64", path, f.Machine)
}

// zipBootstrap zips the executable at path as "bootstrap" (mode 0755) with fixed
// timestamps: the same binary always gives the same zip.
func zipBootstrap(path string) (*bootstrapPackage, error) {
	arch, goArch, err := elfArchitecture(path)
	if err != nil {
		return nil, err
	}
	bin, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading the bootstrap: %w", err)
	}
	defer bin.Close()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	h := &zip.FileHeader{Name: "bootstrap", Method: zip.Deflate, Modified: zipEpoch}
	h.SetMode(0o755)
	w, err := zw.CreateHeader(h)
	if err != nil {
		return nil, fmt.Errorf("zipping the bootstrap: %w", err)
	}
	if _, err := io.Copy(w, bin); err != nil {
		return nil, fmt.Errorf("zipping %s: %w", path, err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("zipping the bootstrap: %w", err)
	}
	sum := sha256.Sum256(buf.Bytes())
	return &bootstrapPackage{
		path:   path,
		zip:    buf.Bytes(),
		sha256: base64.StdEncoding.EncodeToString(sum[:]),
		arch:   arch,
		goArch: goArch,
	}, nil
}
