// Command spawn runs parameter sweeps on AWS EC2 that keep going when the laptop closes.
//
// As a CLI it deploys its own infrastructure and starts, watches, resumes and cancels sweeps.
// Inside AWS Lambda (AWS_LAMBDA_RUNTIME_API set) the same binary is the sweep orchestrator.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// Set by -ldflags "-X main.version=... -X main.commit=...".
var (
	version = "dev"
	commit  = "none"
)

func main() {
	if os.Getenv("AWS_LAMBDA_RUNTIME_API") != "" {
		runLambda()
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := runCLI(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if msg := err.Error(); msg != "" && !errors.Is(err, errSilent) {
			fmt.Fprintf(os.Stderr, "spawn: %s\n", msg)
		}
		os.Exit(exitCode(err))
	}
}
