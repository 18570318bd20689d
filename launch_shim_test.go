package main

// Stand-ins for launch.go's parseParamFile and runInstancesInput (their signatures),
// until the launch branch lands.

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
)

func parseParamFile(path string, data []byte) ([]item, error) {
	var f struct {
		Params []map[string]any `json:"params"`
	}
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	items := make([]item, len(f.Params))
	for i := range items {
		items[i] = item{Index: i, InstanceType: "t3.micro"}
	}
	return items, nil
}

func runInstancesInput(sw *sweep, it item, attempt int) *ec2.RunInstancesInput {
	return &ec2.RunInstancesInput{
		ClientToken:  aws.String(fmt.Sprintf("%s-%d-%d", sw.SweepID, it.Index, attempt)),
		ImageId:      aws.String("ami-12345678"),
		InstanceType: ec2types.InstanceType(it.InstanceType),
		MinCount:     aws.Int32(1),
		MaxCount:     aws.Int32(1),
	}
}

func resolveAMI(ctx context.Context, api interface {
	GetParameter(ctx context.Context, in *ssm.GetParameterInput, optFns ...func(*ssm.Options)) (*ssm.GetParameterOutput, error)
}, instanceType string) (string, error) {
	return "ami-12345678", nil
}
