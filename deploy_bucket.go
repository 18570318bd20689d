// The bucket deploy creates: its expiry rule, public access block and TLS-only policy,
// and S3's eventual consistency right after CreateBucket.

package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// ensureBucket creates the bucket and brings its expiry rule, public access block and
// TLS-only policy up to date.
func (d *deployer) ensureBucket(ctx context.Context) error {
	bucket := aws.String(d.names.bucket)
	arn := d.names.bucketARN()
	_, err := d.s3.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: bucket})
	action := actionUnchanged
	switch {
	case isNotFound(err):
		action = actionCreated
		if d.dryRun {
			d.report(resourceResult{Kind: kindBucket, Name: d.names.bucket, ARN: arn, Action: action})
			return nil
		}
		in := &s3.CreateBucketInput{Bucket: bucket}
		if d.names.region != "us-east-1" {
			in.CreateBucketConfiguration = &s3types.CreateBucketConfiguration{
				LocationConstraint: s3types.BucketLocationConstraint(d.names.region)}
		}
		if err := d.createBucket(ctx, in); err != nil {
			return err
		}
	case err != nil:
		var re *awshttp.ResponseError
		if errors.As(err, &re) && re.HTTPStatusCode() == 403 {
			return fmt.Errorf("bucket %s exists and this account may not use it: pass --bucket with a name of your own", d.names.bucket)
		}
		return fmt.Errorf("reading bucket %s: %w", d.names.bucket, err)
	}
	expiryChanged, err := d.ensureBucketExpiry(ctx)
	if err != nil {
		return err
	}
	blockChanged, err := d.ensurePublicAccessBlock(ctx)
	if err != nil {
		return err
	}
	policyChanged, reason, err := d.ensureBucketPolicy(ctx)
	if err != nil {
		return err
	}
	if (expiryChanged || blockChanged || policyChanged) && action == actionUnchanged {
		action = actionUpdated
	}
	if reason != "" {
		reason += "; "
	}
	reason += fmt.Sprintf("%s expires after %d days, params and exit records are kept", logsPrefix, bucketExpiryDays)
	d.report(resourceResult{Kind: kindBucket, Name: d.names.bucket, ARN: arn, Action: action, Reason: reason})
	return nil
}

// createBucket creates the bucket and waits until S3 shows it. A create that landed
// though its answer was lost (BucketAlreadyOwnedByYou on the retry) counts as created;
// OperationAborted (a delete of the same name still in progress, as after destroy) is
// retried.
func (d *deployer) createBucket(ctx context.Context, in *s3.CreateBucketInput) error {
	err := d.retryPropagation(ctx, "creating bucket "+d.names.bucket, bucketSettling, func() error {
		_, err := d.s3.CreateBucket(ctx, in)
		if apiErrorCode(err) == "BucketAlreadyOwnedByYou" {
			return nil
		}
		return err
	})
	switch {
	case apiErrorCode(err) == "BucketAlreadyExists":
		return fmt.Errorf("bucket %s belongs to another account: pass --bucket with a name of your own", d.names.bucket)
	case err != nil:
		return fmt.Errorf("creating bucket %s: %w", d.names.bucket, err)
	}
	w := s3.NewBucketExistsWaiter(d.s3, func(o *s3.BucketExistsWaiterOptions) {
		o.MinDelay, o.MaxDelay = d.propagationDelay, max(d.propagationDelay, 10*time.Second)
	})
	if err := w.Wait(ctx, &s3.HeadBucketInput{Bucket: in.Bucket}, d.propagationWait); err != nil {
		return fmt.Errorf("waiting for the new bucket %s to answer (%w): run spawn deploy again", d.names.bucket, err)
	}
	return nil
}

// bucketSettling is S3 refusing a bucket call for a while after CreateBucket or
// DeleteBucket: outside us-east-1 a new bucket may answer NoSuchBucket briefly, and a
// create after a delete of the same name may meet OperationAborted (S3 API reference,
// CreateBucket and "Error responses"; S3 User Guide, "Amazon S3 data consistency model":
// bucket configurations are eventually consistent).
func bucketSettling(err error) bool {
	switch apiErrorCode(err) {
	case "NoSuchBucket", "OperationAborted":
		return true
	}
	return false
}

// ensureBucketExpiry keeps spawn's expiry rule on the bucket beside any rule of the user's.
func (d *deployer) ensureBucketExpiry(ctx context.Context) (bool, error) {
	bucket := aws.String(d.names.bucket)
	changed := false
	wantRule := s3types.LifecycleRule{
		ID:         aws.String(lifecycleRuleID),
		Status:     s3types.ExpirationStatusEnabled,
		Filter:     &s3types.LifecycleRuleFilter{Prefix: aws.String(logsPrefix)},
		Expiration: &s3types.LifecycleExpiration{Days: aws.Int32(bucketExpiryDays)},
	}
	lc, err := d.s3.GetBucketLifecycleConfiguration(ctx, &s3.GetBucketLifecycleConfigurationInput{Bucket: bucket})
	if err != nil && !isNotFound(err) {
		return false, fmt.Errorf("reading bucket %s's lifecycle rules: %w", d.names.bucket, err)
	}
	var rules []s3types.LifecycleRule
	found := false
	if lc != nil {
		for _, r := range lc.Rules {
			if aws.ToString(r.ID) != lifecycleRuleID {
				rules = append(rules, r) // a rule the user added stays
				continue
			}
			found = r.Status == s3types.ExpirationStatusEnabled && r.Expiration != nil &&
				aws.ToInt32(r.Expiration.Days) == bucketExpiryDays &&
				r.Filter != nil && aws.ToString(r.Filter.Prefix) == logsPrefix && aws.ToString(r.Prefix) == ""
		}
	}
	if !found {
		changed = true
		if !d.dryRun {
			err := d.retryPropagation(ctx, "setting bucket "+d.names.bucket+"'s expiry", bucketSettling, func() error {
				_, err := d.s3.PutBucketLifecycleConfiguration(ctx, &s3.PutBucketLifecycleConfigurationInput{
					Bucket:                 bucket,
					LifecycleConfiguration: &s3types.BucketLifecycleConfiguration{Rules: append(rules, wantRule)},
				})
				return err
			})
			if err != nil {
				return false, fmt.Errorf("setting bucket %s's %d-day expiry: %w", d.names.bucket, bucketExpiryDays, err)
			}
		}
	}
	return changed, nil
}

// ensurePublicAccessBlock blocks every kind of public access to the bucket.
func (d *deployer) ensurePublicAccessBlock(ctx context.Context) (bool, error) {
	bucket := aws.String(d.names.bucket)
	changed := false
	pab, err := d.s3.GetPublicAccessBlock(ctx, &s3.GetPublicAccessBlockInput{Bucket: bucket})
	if err != nil && !isNotFound(err) {
		return false, fmt.Errorf("reading bucket %s's public access block: %w", d.names.bucket, err)
	}
	if err != nil || !allTrue(pab.PublicAccessBlockConfiguration) {
		changed = true
		if !d.dryRun {
			err := d.retryPropagation(ctx, "blocking public access to bucket "+d.names.bucket, bucketSettling, func() error {
				_, err := d.s3.PutPublicAccessBlock(ctx, &s3.PutPublicAccessBlockInput{
					Bucket: bucket,
					PublicAccessBlockConfiguration: &s3types.PublicAccessBlockConfiguration{
						BlockPublicAcls: aws.Bool(true), IgnorePublicAcls: aws.Bool(true),
						BlockPublicPolicy: aws.Bool(true), RestrictPublicBuckets: aws.Bool(true),
					},
				})
				return err
			})
			if err != nil {
				return false, fmt.Errorf("blocking public access to bucket %s: %w", d.names.bucket, err)
			}
		}
	}
	return changed, nil
}

// ensureBucketPolicy writes the TLS-only bucket policy, or on a plain-http endpoint (an
// emulator) leaves it out and says why.
func (d *deployer) ensureBucketPolicy(ctx context.Context) (changed bool, reason string, err error) {
	bucket := aws.String(d.names.bucket)
	wantDoc := d.names.bucketPolicy()
	if d.plainHTTP {
		wantDoc.Statement = wantDoc.Statement[1:]
		reason = "TLS-only policy left out: the endpoint is plain http, which it would refuse"
	}
	want := wantDoc.json()
	pol, err := d.s3.GetBucketPolicy(ctx, &s3.GetBucketPolicyInput{Bucket: bucket})
	if err != nil && !isNotFound(err) {
		return false, "", fmt.Errorf("reading bucket %s's policy: %w", d.names.bucket, err)
	}
	switch {
	case len(wantDoc.Statement) == 0:
		if err == nil && !d.dryRun { // a policy from before: it would refuse plain http too
			changed = true
			if _, err := d.s3.DeleteBucketPolicy(ctx, &s3.DeleteBucketPolicyInput{Bucket: bucket}); err != nil {
				return false, "", fmt.Errorf("removing bucket %s's policy: %w", d.names.bucket, err)
			}
		}
	case err != nil || !samePolicy(aws.ToString(pol.Policy), want):
		changed = true
		if !d.dryRun {
			settling := func(err error) bool { return isInvalidPrincipal(err) || bucketSettling(err) }
			err := d.retryPropagation(ctx, "writing bucket "+d.names.bucket+"'s policy", settling, func() error {
				_, err := d.s3.PutBucketPolicy(ctx, &s3.PutBucketPolicyInput{Bucket: bucket, Policy: aws.String(want)})
				return err
			})
			if err != nil {
				return false, "", fmt.Errorf("writing bucket %s's TLS-only policy: %w", d.names.bucket, err)
			}
		}
	}
	return changed, reason, nil
}

// s3PlainHTTP reports whether S3 requests go to a plain-http endpoint.
func s3PlainHTTP(cfg aws.Config) bool {
	ep := aws.ToString(cfg.BaseEndpoint)
	for _, v := range []string{os.Getenv("AWS_ENDPOINT_URL_S3"), os.Getenv("AWS_ENDPOINT_URL")} {
		if ep == "" {
			ep = v
		}
	}
	return strings.HasPrefix(strings.ToLower(ep), "http://")
}

func allTrue(c *s3types.PublicAccessBlockConfiguration) bool {
	return c != nil && aws.ToBool(c.BlockPublicAcls) && aws.ToBool(c.IgnorePublicAcls) &&
		aws.ToBool(c.BlockPublicPolicy) && aws.ToBool(c.RestrictPublicBuckets)
}
