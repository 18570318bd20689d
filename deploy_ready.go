// What a fresh account needs before its first sweep, beyond the resources deploy owns:
// the Spot service-linked role, and an instance profile EC2 already accepts.

package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/smithy-go"
)

const kindServiceLinkedRole = "service-linked-role"

// deploySpotRoleAPI is the one IAM call the Spot role needs beyond deployIAMAPI.
type deploySpotRoleAPI interface {
	CreateServiceLinkedRole(context.Context, *iam.CreateServiceLinkedRoleInput, ...func(*iam.Options)) (*iam.CreateServiceLinkedRoleOutput, error)
}

// ensureSpotRole makes sure account has AWSServiceRoleForEC2Spot, which EC2 needs for
// the account's first spot launch (EC2 User Guide, "Service-linked role for Spot
// Instances"). It is the account's, not spawn's: destroy leaves it. A role that exists
// answers CreateServiceLinkedRole with InvalidInput "… has been taken in this account";
// a deploying user who may not create it gets a skipped line saying so, and the
// orchestrator's own grant (policy.go, SpotServiceLinkedRole) lets EC2 create it at the
// first spot launch.
func (d *deployer) ensureSpotRole(ctx context.Context, api deployIAMAPI, account string) error {
	arn := d.names.spotRoleARN(account)
	_, err := api.GetRole(ctx, &iam.GetRoleInput{RoleName: aws.String(spotRoleName)})
	switch {
	case err == nil:
		d.report(resourceResult{Kind: kindServiceLinkedRole, Name: spotRoleName, ARN: arn, Action: actionUnchanged})
		return nil
	case !isNotFound(err) && !isAccessDenied(err):
		return fmt.Errorf("reading role %s: %w", spotRoleName, err)
	}
	if d.dryRun {
		d.report(resourceResult{Kind: kindServiceLinkedRole, Name: spotRoleName, ARN: arn, Action: actionCreated})
		return nil
	}
	creator, ok := api.(deploySpotRoleAPI)
	if !ok {
		return fmt.Errorf("creating role %s: this IAM client cannot create service-linked roles", spotRoleName)
	}
	_, err = creator.CreateServiceLinkedRole(ctx, &iam.CreateServiceLinkedRoleInput{AWSServiceName: aws.String(spotService)})
	action := actionCreated
	switch {
	case err == nil:
	case spotRoleTaken(err):
		action = actionUnchanged
	case isAccessDenied(err):
		d.report(resourceResult{Kind: kindServiceLinkedRole, Name: spotRoleName, ARN: arn, Action: actionSkipped,
			Reason: "this user may not create it (" + shortError(err) + "); the orchestrator may, at the first spot launch"})
		return nil
	default:
		return d.optionalStep(kindServiceLinkedRole, spotRoleName, arn, err)
	}
	d.report(resourceResult{Kind: kindServiceLinkedRole, Name: spotRoleName, ARN: arn, Action: action})
	return nil
}

// spotRoleTaken is CreateServiceLinkedRole finding the role there already (AWS:
// InvalidInput "Service role name AWSServiceRoleForEC2Spot has been taken in this
// account"; emulators: EntityAlreadyExists).
func spotRoleTaken(err error) bool {
	var ae smithy.APIError
	return errors.As(err, &ae) && (ae.ErrorCode() == "EntityAlreadyExists" ||
		ae.ErrorCode() == "InvalidInput" && strings.Contains(ae.ErrorMessage(), "has been taken"))
}

func isAccessDenied(err error) bool {
	switch apiErrorCode(err) {
	case "AccessDenied", "AccessDeniedException", "UnauthorizedOperation":
		return true
	}
	return false
}

// deployEC2API is what the instance-profile check asks EC2.
type deployEC2API interface {
	RunInstances(context.Context, *ec2.RunInstancesInput, ...func(*ec2.Options)) (*ec2.RunInstancesOutput, error)
}

// profileProbeImage is the image the check names: EC2 resolves the public parameter
// itself, in every region.
const profileProbeImage = "resolve:ssm:" + al2023ParameterPath + "al2023-ami-kernel-default-x86_64"

// waitProfileAccepted ends once EC2 accepts spawnd-role's instance profile, so that the
// first sweep after deploy is not refused for it. It asks RunInstances with DryRun, which
// launches nothing (EC2 API reference, DryRun: "Checks whether you have the required
// permissions for the operation, without actually making the request"): a profile EC2
// does not know yet answers "Invalid IAM Instance Profile", and is asked again. DryRun
// is documented as a permission check only, and emulators ignore it (kumo would launch),
// so this runs only against AWS (probeProfile) and anything but that answer ends the
// wait: the engine waits out what is left (step.go, propagationLimit).
func (d *deployer) waitProfileAccepted(ctx context.Context) error {
	if d.dryRun || !d.probeProfile || d.ec2 == nil {
		return nil
	}
	in := &ec2.RunInstancesInput{
		DryRun: aws.Bool(true), ImageId: aws.String(profileProbeImage), InstanceType: ec2types.InstanceTypeT3Micro,
		MinCount: aws.Int32(1), MaxCount: aws.Int32(1),
		IamInstanceProfile: &ec2types.IamInstanceProfileSpecification{Name: aws.String(instanceRoleName)},
	}
	notYet := func(err error) bool {
		var ae smithy.APIError
		return errors.As(err, &ae) && iamNotVisibleYet(ae)
	}
	start := time.Now()
	err := d.retryPropagation(ctx, "waiting for EC2 to accept instance profile "+instanceRoleName, notYet, func() error {
		_, err := d.ec2.RunInstances(ctx, in)
		return err
	})
	switch {
	case apiErrorCode(err) == "DryRunOperation":
		d.log.Debug().Dur("after", time.Since(start)).Msg("EC2 accepts the instance profile")
		return nil
	case notYet(err):
		return fmt.Errorf("EC2 still does not accept instance profile %s after %s (%s): run spawn deploy again in a minute",
			instanceRoleName, d.propagationWait, shortError(err))
	case err == nil:
		return fmt.Errorf("checking instance profile %s: the endpoint launched an instance for a DryRun request: terminate it", instanceRoleName)
	}
	d.log.Info().Msgf("could not check that EC2 accepts instance profile %s (%s); the first launches wait for it if needed", instanceRoleName, shortError(err))
	return nil
}
