package main

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"

	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// destroy removes every resource deploy created. Missing ones are reported skipped.
func (d *deployer) destroy(ctx context.Context, force bool) error {
	if !force {
		if err := d.refuseActiveSweeps(ctx); err != nil {
			return err
		}
	}
	if err := d.deleteWatchdog(ctx); err != nil {
		return err
	}
	if err := d.deleteFunction(ctx); err != nil {
		return err
	}
	if err := d.deleteRole(ctx, d.iam, d.names.account, orchestratorRoleName); err != nil {
		return err
	}
	if err := d.deleteInstanceRole(ctx, d.iam, d.names.account); err != nil {
		return err
	}
	if c := d.compute; c != nil {
		if err := d.deleteRole(ctx, c.iam, c.account, crossAccountRoleName); err != nil {
			return err
		}
		if c.account != d.names.account {
			if err := d.deleteInstanceRole(ctx, c.iam, c.account); err != nil {
				return err
			}
		}
	}
	for _, t := range []string{d.names.table, d.names.instancesTable} {
		if err := d.deleteTable(ctx, t); err != nil {
			return err
		}
	}
	return d.deleteBucket(ctx)
}

func (d *deployer) notFound(kind, name, arn string) {
	d.report(resourceResult{Kind: kind, Name: name, ARN: arn, Action: actionSkipped, Reason: "not found"})
}

// refuseActiveSweeps scans the orchestration table for sweeps still RUNNING or
// INITIALIZING. A Scan is fine here: destroy is rare and the table small.
func (d *deployer) refuseActiveSweeps(ctx context.Context) error {
	in := &dynamodb.ScanInput{
		TableName:                aws.String(d.names.table),
		FilterExpression:         aws.String("#s IN (:running, :init)"),
		ProjectionExpression:     aws.String("sweep_id, #s"),
		ExpressionAttributeNames: map[string]string{"#s": "status"},
		ExpressionAttributeValues: map[string]ddbtypes.AttributeValue{
			":running": &ddbtypes.AttributeValueMemberS{Value: statusRunning},
			":init":    &ddbtypes.AttributeValueMemberS{Value: statusInitializing},
		},
	}
	var active []string
	for {
		out, err := d.ddb.Scan(ctx, in)
		if isNotFound(err) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("looking for running sweeps in table %s (%w): pass --force to destroy anyway", d.names.table, err)
		}
		for _, item := range out.Items {
			id, _ := item["sweep_id"].(*ddbtypes.AttributeValueMemberS)
			st, _ := item["status"].(*ddbtypes.AttributeValueMemberS)
			// An emulator may ignore the filter: check the status again.
			if id != nil && st != nil && (st.Value == statusRunning || st.Value == statusInitializing) {
				active = append(active, id.Value)
			}
		}
		if len(out.LastEvaluatedKey) == 0 {
			break
		}
		in.ExclusiveStartKey = out.LastEvaluatedKey
	}
	if len(active) == 0 {
		return nil
	}
	sort.Strings(active)
	return fmt.Errorf("%d sweep(s) still running (%s): cancel them first (spawn cancel --sweep-id %s) or pass --force",
		len(active), strings.Join(active, ", "), active[0])
}

func (d *deployer) deleteFunction(ctx context.Context) error {
	name := d.names.function
	_, err := d.lambda.DeleteFunction(ctx, &lambda.DeleteFunctionInput{FunctionName: aws.String(name)})
	switch {
	case isNotFound(err):
		d.notFound(kindFunction, name, d.names.functionARN())
	case err != nil:
		return fmt.Errorf("deleting function %s: %w", name, err)
	default:
		d.report(resourceResult{Kind: kindFunction, Name: name, ARN: d.names.functionARN(), Action: actionDeleted})
	}
	return nil
}

func (d *deployer) deleteTable(ctx context.Context, name string) error {
	arn := d.names.tableARN(name)
	out, err := d.ddb.DeleteTable(ctx, &dynamodb.DeleteTableInput{TableName: aws.String(name)})
	switch {
	case isNotFound(err):
		d.notFound(kindTable, name, arn)
	case err != nil:
		return fmt.Errorf("deleting table %s: %w", name, err)
	default:
		if out.TableDescription != nil && out.TableDescription.TableArn != nil {
			arn = aws.ToString(out.TableDescription.TableArn)
		}
		d.report(resourceResult{Kind: kindTable, Name: name, ARN: arn, Action: actionDeleted})
	}
	return nil
}

// deleteBucket empties the bucket (every object version and delete marker), then
// deletes it.
func (d *deployer) deleteBucket(ctx context.Context) error {
	bucket := aws.String(d.names.bucket)
	in := &s3.ListObjectVersionsInput{Bucket: bucket}
	for {
		out, err := d.s3.ListObjectVersions(ctx, in)
		if isNotFound(err) {
			d.notFound(kindBucket, d.names.bucket, d.names.bucketARN())
			return nil
		}
		if err != nil {
			return fmt.Errorf("listing bucket %s's objects: %w", d.names.bucket, err)
		}
		var ids []s3types.ObjectIdentifier
		for _, v := range out.Versions {
			ids = append(ids, s3types.ObjectIdentifier{Key: v.Key, VersionId: versionOrNil(v.VersionId)})
		}
		for _, m := range out.DeleteMarkers {
			ids = append(ids, s3types.ObjectIdentifier{Key: m.Key, VersionId: versionOrNil(m.VersionId)})
		}
		if len(ids) > 0 {
			del, err := d.s3.DeleteObjects(ctx, &s3.DeleteObjectsInput{Bucket: bucket, Delete: &s3types.Delete{Objects: ids, Quiet: aws.Bool(true)}})
			if err != nil {
				return fmt.Errorf("emptying bucket %s: %w", d.names.bucket, err)
			}
			if len(del.Errors) > 0 {
				e := del.Errors[0]
				return fmt.Errorf("emptying bucket %s: %s: %s %s", d.names.bucket, aws.ToString(e.Key), aws.ToString(e.Code), aws.ToString(e.Message))
			}
		}
		if !aws.ToBool(out.IsTruncated) {
			break
		}
		in.KeyMarker, in.VersionIdMarker = out.NextKeyMarker, out.NextVersionIdMarker
	}
	if _, err := d.s3.DeleteBucket(ctx, &s3.DeleteBucketInput{Bucket: bucket}); err != nil {
		if isNotFound(err) {
			d.notFound(kindBucket, d.names.bucket, d.names.bucketARN())
			return nil
		}
		return fmt.Errorf("deleting bucket %s: %w", d.names.bucket, err)
	}
	d.report(resourceResult{Kind: kindBucket, Name: d.names.bucket, ARN: d.names.bucketARN(), Action: actionDeleted})
	return nil
}
