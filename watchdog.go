package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// The watchdog: every five minutes the EventBridge rule spawn-sweep-watchdog sends the
// function {"watchdog": true}, and it starts an invocation for every detached sweep
// nobody drives (its chain died: retries exhausted, an event too old, a throttled
// invoke). docs/design.md, promise 10.
//
// It finds them in the running index: one small item of the sweep table, under a key no
// sweep id can have and that carries no user_id (so `list`, which queries by user, never
// sees it), holding the set of sweeps not yet ended. Adding and removing an id are
// single atomic set updates, so they need no fence: a sweep is added before its record
// is written and removed after its record turned terminal, and an id left behind by a
// crash is removed by the next watchdog, which reads the record.

// runningIndexID is the running index's key in the sweep table.
const runningIndexID = "#running"

// runningIndex is the set of sweeps not yet ended.
type runningIndex interface {
	markRunning(ctx context.Context, id string) error
	unmarkRunning(ctx context.Context, id string) error
	runningSweeps(ctx context.Context) ([]string, error)
}

func (d *dynamoStore) updateRunning(ctx context.Context, op, id string) error {
	_, err := d.db.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:                 aws.String(d.table),
		Key:                       map[string]types.AttributeValue{"sweep_id": &types.AttributeValueMemberS{Value: runningIndexID}},
		UpdateExpression:          aws.String(op + " #s :id"),
		ExpressionAttributeNames:  map[string]string{"#s": "sweeps"},
		ExpressionAttributeValues: map[string]types.AttributeValue{":id": &types.AttributeValueMemberSS{Value: []string{id}}},
	})
	if err != nil {
		return fmt.Errorf("updating the running index of table %s: %w", d.table, err)
	}
	return nil
}

func (d *dynamoStore) markRunning(ctx context.Context, id string) error {
	return d.updateRunning(ctx, "ADD", id)
}

func (d *dynamoStore) unmarkRunning(ctx context.Context, id string) error {
	return d.updateRunning(ctx, "DELETE", id)
}

func (d *dynamoStore) runningSweeps(ctx context.Context) ([]string, error) {
	out, err := d.db.GetItem(ctx, &dynamodb.GetItemInput{
		TableName:      aws.String(d.table),
		Key:            map[string]types.AttributeValue{"sweep_id": &types.AttributeValueMemberS{Value: runningIndexID}},
		ConsistentRead: aws.Bool(true),
	})
	if err != nil {
		return nil, fmt.Errorf("reading the running index of table %s: %w", d.table, err)
	}
	if ss, ok := out.Item["sweeps"].(*types.AttributeValueMemberSS); ok {
		return ss.Value, nil
	}
	return nil, nil
}

// watchdogAnswer is the function's answer to {"watchdog": true}, also logged.
type watchdogAnswer struct {
	Running  int      `json:"running"`            // sweeps in the index
	Revived  []string `json:"revived"`            // started again
	Attached int      `json:"attached,omitempty"` // --no-detach sweeps: their own process drives them
	Failed   []string `json:"failed,omitempty"`   // could not be looked at or started; next time
}

// watchdog starts an invocation for every detached sweep in the index whose lease is
// free or has lapsed, and drops ended or unknown sweeps from the index. It never takes a
// lease itself: the invocation it starts watches the lease as any newcomer does, so a
// holder that is alive after all keeps the sweep and the newcomer leaves.
func watchdog(ctx context.Context, st sweepStore, idx runningIndex, now time.Time, start func(ctx context.Context, id string) error) (watchdogAnswer, error) {
	ids, err := idx.runningSweeps(ctx)
	if err != nil {
		return watchdogAnswer{}, err
	}
	ans := watchdogAnswer{Running: len(ids), Revived: []string{}}
	for _, id := range ids {
		sw, err := st.loadSweep(ctx, id)
		switch {
		case errors.Is(err, errSweepNotFound):
			_ = idx.unmarkRunning(ctx, id) // its launch died before the record was written
			continue
		case err != nil:
			ans.Failed = append(ans.Failed, id)
			continue
		case terminalStatus(sw.Status):
			_ = idx.unmarkRunning(ctx, id) // it ended and the removal was lost
			continue
		case !sw.Detached:
			ans.Attached++
			continue
		case sw.LeaseOwner != "" && sw.LeaseExpiresAt.After(now):
			continue // driven (by the holder's clock, which is AWS's for a Lambda holder)
		}
		if err := start(ctx, id); err != nil {
			ans.Failed = append(ans.Failed, id)
			continue
		}
		ans.Revived = append(ans.Revived, id)
	}
	return ans, nil
}

// isScheduledEvent: EventBridge's scheduled event, which a rule delivers when its target
// has no constant input ({"source": "aws.events", "detail-type": "Scheduled Event"}).
func (ev orchestratorEvent) isScheduledEvent() bool {
	return ev.Source == "aws.events" && ev.DetailType == "Scheduled Event"
}
