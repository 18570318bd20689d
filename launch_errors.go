// How a refused launch is classified: a refusal that clears with time (capacity,
// quotas, throttling, IAM propagation) waits with its reason in status; any other is bad
// input and fails its item.

package main

import (
	"errors"
	"net"
	"strings"
	"time"

	"github.com/aws/smithy-go"
)

// waitReasons are the EC2 refusals that clear with time, and how status names them:
// capacity, account quotas (a new account's vCPU quota cannot hold many instances) and
// the spot market. A launch refused with one of them waits, under the same client token;
// it never fails the item. Source: the EC2 API reference, "Error codes".
var waitReasons = map[string]string{
	"VcpuLimitExceeded":                 "vCPU quota",
	"InstanceLimitExceeded":             "instance quota",
	"MaxSpotInstanceCountExceeded":      "spot instance quota",
	"InsufficientFreeAddressesInSubnet": "no free addresses in the subnet",
	"SpotMaxPriceTooLow":                "spot price above spot_max_price",
	"UnfulfillableCapacity":             "no capacity",
	"RequestLimitExceeded":              "throttled",
	"Unavailable":                       "EC2 unavailable",
	"ServiceUnavailable":                "EC2 unavailable",
	"InternalError":                     "EC2 internal error",
	"InternalFailure":                   "EC2 internal error",
	"RequestTimeout":                    "EC2 timed out",
	"RequestExpired":                    "request expired",
	"IncorrectState":                    "EC2 busy",
	"PendingVerification":               "account pending verification",
}

// launchWaitReason says why a launch waits ("vCPU quota (VcpuLimitExceeded)"), or ""
// when the refusal is for bad input and the item fails.
func launchWaitReason(err error) string {
	var ae smithy.APIError
	if !errors.As(err, &ae) {
		return "no answer from EC2" // network errors and timeouts
	}
	code := ae.ErrorCode()
	reason, ok := waitReasons[code]
	switch {
	case ok:
	case iamNotVisibleYet(ae):
		reason = iamWaitReason
	case code == codeSLRNotPermitted:
		reason = slrWaitReason
	case code == "UnauthorizedOperation":
		reason = authWaitReason
	case strings.HasPrefix(code, "Insufficient") && strings.HasSuffix(code, "Capacity"):
		reason = "no capacity"
	case strings.HasPrefix(code, "Throttl"):
		reason = "throttled"
	default:
		var re interface{ HTTPStatusCode() int }
		var ne net.Error
		switch {
		case errors.As(err, &re) && re.HTTPStatusCode() >= 500:
			reason = "EC2 error"
		case errors.As(err, &ne):
			reason = "no answer from EC2"
		default:
			return ""
		}
	}
	return reason + " (" + code + ")"
}

// Refusals that IAM's eventual consistency explains for a while, and then do not. IAM
// propagates a change to every region's data plane after it answers ("Troubleshooting
// IAM: Changes that I make are not always immediately visible",
// https://docs.aws.amazon.com/IAM/latest/UserGuide/troubleshoot_general.html#troubleshoot_general_eventual-consistency):
//   - iamWaitReason: an instance profile EC2 does not know yet; a profile used right
//     after `spawn deploy` created it is refused for up to tens of seconds (EC2 User
//     Guide, "IAM roles for Amazon EC2").
//   - slrWaitReason: EC2 may not create the Spot service-linked role
//     (AuthFailure.ServiceLinkedRoleCreationNotPermitted; EC2 User Guide, "Service-linked
//     role for Spot Instances",
//     https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/service-linked-roles-spot-instance-requests.html):
//     deploy creates the role (or grants creating it) moments before.
//   - authWaitReason: UnauthorizedOperation right after deploy updated the role's policy.
//     It is also what a launch the policy never allows gets (passing a profile other
//     than spawnd-role, or a type or region outside the deployment's allow-lists, which
//     launch checks first but a sweep launched before a deploy narrowed them is not),
//     so it waits only briefly.
//
// Each is measured from the reservation's first such refusal, on one clock (its
// Propagating mark, kept apart from the marks that settle a token); past its limit the item fails
// with refusalHint's advice.
const (
	iamWaitReason        = "instance profile not visible to EC2 yet"
	slrWaitReason        = "spot service-linked role not usable yet"
	authWaitReason       = "EC2 refuses the orchestrator's permissions, perhaps not propagated yet"
	propagationLimitIAM  = 5 * time.Minute
	propagationLimitAuth = 2 * time.Minute
	codeSLRNotPermitted  = "AuthFailure.ServiceLinkedRoleCreationNotPermitted"
)

// propagationLimit is how long a refusal may be taken for IAM propagation, or 0 when it
// is not that kind of refusal.
func propagationLimit(err error) time.Duration {
	var ae smithy.APIError
	switch {
	case !errors.As(err, &ae):
		return 0
	case iamNotVisibleYet(ae), ae.ErrorCode() == codeSLRNotPermitted:
		return propagationLimitIAM
	case ae.ErrorCode() == "UnauthorizedOperation":
		return propagationLimitAuth
	}
	return 0
}

// refusalHint is what to do about a launch refusal that failed its item, when spawn knows.
func refusalHint(err error) string {
	var ae smithy.APIError
	if !errors.As(err, &ae) {
		return ""
	}
	switch {
	case ae.ErrorCode() == codeSLRNotPermitted:
		return "; EC2 needs the service-linked role AWSServiceRoleForEC2Spot for spot launches and may not create it: run " +
			"'aws iam create-service-linked-role --aws-service-name spot.amazonaws.com' in the sweep's account (or spawn deploy again), then spawn resume --retry-failed"
	case iamNotVisibleYet(ae):
		return "; EC2 did not know the instance profile for " + shortDuration(propagationLimitIAM) +
			": check iam_instance_profile, or run spawn deploy to create spawnd-role, then spawn resume --retry-failed"
	case ae.ErrorCode() == "UnauthorizedOperation":
		return "; the orchestrator's role may not launch this item: only spawnd-role may be passed as iam_instance_profile, " +
			"and a deployment's --allow-instance-types and --allow-regions bound the types and regions it launches; " +
			"decode the message with 'aws sts decode-authorization-message' to see which permission is missing"
	}
	return ""
}

func iamNotVisibleYet(ae smithy.APIError) bool {
	return ae.ErrorCode() == "InvalidParameterValue" && strings.Contains(strings.ToLower(ae.ErrorMessage()), "iam instance profile")
}

// retryableLaunchError: a refusal that clears with time. The same ClientToken is used
// again, so a call that did launch is never doubled.
func retryableLaunchError(err error) bool { return launchWaitReason(err) != "" }
