package main

// The lease: one orchestrator drives a sweep at a time. The record names the holder
// (lease_owner) and the epoch it took the lease at (lease_epoch: the record version its
// taking wrote), and every record write is fenced by the record's version, so taking
// the lease, itself a record write, makes any older holder's next write fail.
//
// The renewals live in a small item of their own, the lease item (key "<sweep id>#lease",
// no user_id: `list` and the watchdog never see it): a step that changes nothing in the
// record renews the lease and notes the step there, one write unit, instead of rewriting
// the whole record (DynamoDB bills a write, an UpdateItem of one attribute too, on the
// whole item's size, 1 unit per KB:
// https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/read-write-operations.html).
// A lease item write is conditional on its epoch, so an older holder can never renew
// over a newer one; a lease item that does not match the record's holder and epoch
// (a holder that died between taking the lease and its first renewal) counts as a
// lease never renewed.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// leaseItemSuffix makes the lease item's key from the sweep id; sweep ids cannot hold '#'.
const leaseItemSuffix = "#lease"

func leaseItemID(sweepID string) string { return sweepID + leaseItemSuffix }

// leaseBeat is the lease item: the holder's last renewal and step.
type leaseBeat struct {
	SweepID    string    `dynamodbav:"sweep_id"` // leaseItemID of the sweep
	Owner      string    `dynamodbav:"owner"`
	Epoch      int64     `dynamodbav:"epoch"`
	RenewedAt  time.Time `dynamodbav:"renewed_at,omitempty"`
	ExpiresAt  time.Time `dynamodbav:"expires_at,omitempty"`
	LastStepAt time.Time `dynamodbav:"last_step_at,omitempty"`
}

// beatOf is the lease item a holder of s writes.
func beatOf(s *sweep) leaseBeat {
	return leaseBeat{SweepID: leaseItemID(s.SweepID), Owner: s.LeaseOwner, Epoch: s.LeaseEpoch,
		RenewedAt: s.LeaseRenewedAt, ExpiresAt: s.LeaseExpiresAt, LastStepAt: s.LastStepAt}
}

// applyBeat fills a loaded record's lease times from its lease item: the renewal only
// when the item is the recorded holder's, at the recorded epoch; the last step always.
func applyBeat(s *sweep, b *leaseBeat) {
	s.LeaseRenewedAt, s.LeaseExpiresAt, s.LastStepAt = time.Time{}, time.Time{}, time.Time{}
	if b == nil {
		return
	}
	s.LastStepAt = b.LastStepAt
	if s.LeaseOwner != "" && b.Owner == s.LeaseOwner && b.Epoch == s.LeaseEpoch {
		s.LeaseRenewedAt, s.LeaseExpiresAt = b.RenewedAt, b.ExpiresAt
	}
}

// defaultLeaseTTL is how long a lease lasts without renewal: a crashed holder's
// successor waits at most this long.
const defaultLeaseTTL = 60 * time.Second

// leaseMark is one renewal of a lease: a holder that renews it makes a new mark.
type leaseMark struct {
	Owner     string
	RenewedAt time.Time
}

// leaseHeldError: another holder's lease is on the record. Whether that holder is alive
// is not decided here, where it would mean comparing this machine's clock with the
// holder's: the caller watches the mark on its own clock (orchestrator.acquire).
type leaseHeldError struct {
	mark      leaseMark
	expiresAt time.Time     // on the holder's clock
	length    time.Duration // how long the holder's lease lasts from a renewal
}

func (e *leaseHeldError) Error() string {
	return fmt.Sprintf("%v: %s, renewed %s", errLeaseHeld, e.mark.Owner, e.mark.RenewedAt.UTC().Format(time.RFC3339))
}

func (e *leaseHeldError) Is(target error) bool { return target == errLeaseHeld }

// leaseAttempts bounds acquireLease's reload-and-retry on stale writes; each lost race
// means someone else wrote, so a handful is plenty.
const leaseAttempts = 5

// acquireLease takes the sweep's lease for owner and returns the saved record: when the
// lease is free, already owner's, or still exactly the renewal takeover names (one the
// caller watched go unrenewed until it lapsed). Otherwise it gives *leaseHeldError.
func acquireLease(ctx context.Context, st sweepStore, id, owner string, now time.Time, leaseTTL time.Duration, takeover *leaseMark) (*sweep, error) {
	return acquireLeaseFrom(ctx, st, id, nil, owner, now, leaseTTL, takeover)
}

// acquireLeaseFrom is acquireLease starting from cur, the record as the caller just
// read it (nil: read it here): a short invocation saves the reads.
func acquireLeaseFrom(ctx context.Context, st sweepStore, id string, cur *sweep, owner string, now time.Time, leaseTTL time.Duration, takeover *leaseMark) (*sweep, error) {
	for range leaseAttempts {
		s, err := cur, error(nil)
		if s == nil {
			s, err = st.loadSweep(ctx, id)
		}
		cur = nil
		if err != nil {
			return nil, err
		}
		mark := leaseMark{Owner: s.LeaseOwner, RenewedAt: s.LeaseRenewedAt}
		if s.LeaseOwner != "" && s.LeaseOwner != owner && (takeover == nil || mark != *takeover) {
			length := s.LeaseExpiresAt.Sub(s.LeaseRenewedAt)
			if length <= 0 { // never renewed: its holder died before its first renewal
				length = leaseFor(s, leaseTTL)
			}
			return nil, &leaseHeldError{mark: mark, expiresAt: s.LeaseExpiresAt, length: length}
		}
		s.LeaseEpoch = s.Version + 1 // the version this write makes: a later taking's is higher
		renewLease(s, owner, now, leaseFor(s, leaseTTL))
		err = st.saveSweep(ctx, s)
		if err == nil {
			if err := st.beatLease(ctx, beatOf(s)); err != nil {
				return nil, fmt.Errorf("renewing the lease of sweep %s: %w", id, err)
			}
			return s, nil
		}
		if !errors.Is(err, errStaleVersion) {
			return nil, err
		}
	}
	return nil, fmt.Errorf("taking the lease of sweep %s: lost %d races in a row: %w", id, leaseAttempts, errStaleVersion)
}

// renewLease extends owner's lease in memory; the caller's next save writes it to the
// lease item.
func renewLease(s *sweep, owner string, now time.Time, leaseTTL time.Duration) {
	if leaseTTL <= 0 {
		leaseTTL = defaultLeaseTTL
	}
	s.LeaseOwner = owner
	s.LeaseExpiresAt = now.Add(leaseTTL)
	s.LeaseRenewedAt = now
}

// releaseLease clears owner's lease and saves s (with whatever else the caller changed).
// If s is stale it reloads and clears the lease only if owner still holds it; the
// caller's other changes are then lost, as any stale write's are. On return s is the
// stored record.
func releaseLease(ctx context.Context, st sweepStore, s *sweep, owner string) error {
	for range leaseAttempts {
		if s.LeaseOwner != owner {
			return nil
		}
		// The lease item is left as it is: the record names no holder, so it is no
		// one's renewal (applyBeat).
		clearLease(s)
		err := st.saveSweep(ctx, s)
		if err == nil {
			return nil
		}
		if !errors.Is(err, errStaleVersion) {
			return err
		}
		fresh, err := st.loadSweep(ctx, s.SweepID)
		if err != nil {
			return err
		}
		*s = *fresh
	}
	return fmt.Errorf("releasing the lease of sweep %s: lost %d races in a row: %w", s.SweepID, leaseAttempts, errStaleVersion)
}

// clearLease drops the holder from a record in memory.
func clearLease(s *sweep) {
	s.LeaseOwner, s.LeaseEpoch = "", 0
	s.LeaseExpiresAt, s.LeaseRenewedAt = time.Time{}, time.Time{}
}

// loadBeat reads the sweep's lease item (strongly consistent); nil when there is none.
func (d *dynamoStore) loadBeat(ctx context.Context, id string) (*leaseBeat, error) {
	out, err := d.db.GetItem(ctx, &dynamodb.GetItemInput{
		TableName:      aws.String(d.table),
		Key:            map[string]types.AttributeValue{"sweep_id": &types.AttributeValueMemberS{Value: leaseItemID(id)}},
		ConsistentRead: aws.Bool(true),
	})
	if err != nil {
		return nil, fmt.Errorf("reading the lease of sweep %s from table %s: %w", id, d.table, err)
	}
	if len(out.Item) == 0 {
		return nil, nil
	}
	var b leaseBeat
	if err := attributevalue.UnmarshalMap(out.Item, &b); err != nil {
		return nil, fmt.Errorf("decoding the lease of sweep %s: %w", id, err)
	}
	return &b, nil
}

func (d *dynamoStore) beatLease(ctx context.Context, b leaseBeat) error {
	item, err := marshalItem(&b)
	if err != nil {
		return fmt.Errorf("encoding the lease item %s: %w", b.SweepID, err)
	}
	_, err = d.db.PutItem(ctx, &dynamodb.PutItemInput{
		TableName:                 aws.String(d.table),
		Item:                      item,
		ConditionExpression:       aws.String("attribute_not_exists(#e) OR #e <= :e"),
		ExpressionAttributeNames:  map[string]string{"#e": "epoch"},
		ExpressionAttributeValues: map[string]types.AttributeValue{":e": numberAV(b.Epoch)},
	})
	if isConditionFailed(err) {
		return fmt.Errorf("renewing lease item %s at epoch %d: %w", b.SweepID, b.Epoch, errLeaseLost)
	}
	if err != nil {
		return fmt.Errorf("renewing lease item %s in table %s: %w", b.SweepID, d.table, err)
	}
	return nil
}
