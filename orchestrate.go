package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/rs/zerolog"
)

// orchestratorEvent is the function's input (SPEC.md).
type orchestratorEvent struct {
	SweepID       string `json:"sweep_id"`
	ForceDownload bool   `json:"force_download"`
	HealthCheck   bool   `json:"health_check,omitempty"`
}

// healthAnswer is the function's answer to {"health_check": true}.
type healthAnswer struct {
	OK      bool       `json:"ok"`
	Version versionDoc `json:"version"`
}

// runLambda serves orchestrator events on the Lambda runtime API until the runtime stops it.
func runLambda() {
	log := newLogger(os.Stderr, zerolog.InfoLevel, true)
	lambda.Start(func(ctx context.Context, raw json.RawMessage) (any, error) {
		var ev orchestratorEvent
		if err := json.Unmarshal(raw, &ev); err != nil {
			log.Error().Err(err).Msg("malformed event: expected {\"sweep_id\": \"...\"}; not retried")
			return nil, nil
		}
		if ev.HealthCheck {
			return healthAnswer{OK: true, Version: versionInfo()}, nil
		}
		return nil, fmt.Errorf("sweep orchestration is not built yet")
	})
}

func startSweep(ctx context.Context, r *rootConfig, req *launchRequest) error {
	return errors.New("launching is not available in this build")
}
