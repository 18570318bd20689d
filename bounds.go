package main

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// The record's bounds (docs/design.md, promise 11). DynamoDB refuses an item over
// 400 KB, and the sweep record holds the instances alive now and the queued retries, so
// every input that grows it is bounded up front, and every write checks the size: a
// record that would not fit is a clear error, never a write retried for ever.

const (
	// dynamoItemLimit is DynamoDB's maximum item size (400 KB, names and values).
	dynamoItemLimit = 400 * 1024
	// maxAliveEntryBytes bounds one alive entry: every field set, at its longest (a CLI
	// owner's clock name included). TestRecordAtItsLimitsFits measures it.
	maxAliveEntryBytes = 700
	// maxRetryEntryBytes bounds one queued retry ({"index": 99999, "attempt": 99}).
	maxRetryEntryBytes = 40
	// recordBaseBytes is kept for the rest of the record: its settings, counts, names,
	// AMIs, the error message.
	recordBaseBytes = 24 * 1024
	// maxConcurrentLimit: at most this many instances alive at once. It keeps the alive
	// entries within 360 KB, with room left for the retry queue (README, "Limits").
	maxConcurrentLimit = 500
	// minRetryRoom is the retry queue's room at maxConcurrentLimit.
	minRetryRoom = (dynamoItemLimit - recordBaseBytes - maxConcurrentLimit*maxAliveEntryBytes) / maxRetryEntryBytes
	// maxPollInterval bounds --poll-interval: the lease is at least three poll intervals,
	// and a holder that stopped is replaced within a few of them.
	maxPollInterval = 5 * time.Minute
)

// maxWaitReason bounds the wait reason an alive entry keeps (its error code comes from
// AWS).
const maxWaitReason = 100

// clip cuts s to at most n bytes.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// errRecordTooBig: a write would pass DynamoDB's item limit.
var errRecordTooBig = errors.New("the sweep record would pass DynamoDB's 400 KB item limit")

// retryRoom is how many retries the record can queue beside maxConcurrent alive entries.
func retryRoom(maxConcurrent int) int {
	return (dynamoItemLimit - recordBaseBytes - max(maxConcurrent, 1)*maxAliveEntryBytes) / maxRetryEntryBytes
}

// leaseFor is the sweep's lease length: at least three poll intervals, so a holder
// renews it (at every step) well before it lapses.
func leaseFor(sw *sweep, base time.Duration) time.Duration {
	return max(base, 3*pollIntervalOf(sw))
}

// checkItemSize refuses an item DynamoDB would refuse, saying how big it is.
func checkItemSize(what string, item map[string]types.AttributeValue) error {
	if n := itemSize(item); n > dynamoItemLimit {
		return fmt.Errorf("%s: %d bytes: %w", what, n, errRecordTooBig)
	}
	return nil
}

// itemSize is an item's size as DynamoDB counts it against the 400 KB limit and for
// write units: attribute names plus values, numbers ~1 byte per 2 significant digits
// plus 1, lists and maps 3 bytes plus 1 per element.
func itemSize(item map[string]types.AttributeValue) int {
	n := 0
	for k, v := range item {
		n += len(k) + attributeSize(v)
	}
	return n
}

func attributeSize(v types.AttributeValue) int {
	switch v := v.(type) {
	case *types.AttributeValueMemberS:
		return len(v.Value)
	case *types.AttributeValueMemberN:
		return numberSize(v.Value)
	case *types.AttributeValueMemberB:
		return len(v.Value)
	case *types.AttributeValueMemberBOOL, *types.AttributeValueMemberNULL:
		return 1
	case *types.AttributeValueMemberSS:
		n := 0
		for _, s := range v.Value {
			n += len(s)
		}
		return n
	case *types.AttributeValueMemberNS:
		n := 0
		for _, s := range v.Value {
			n += numberSize(s)
		}
		return n
	case *types.AttributeValueMemberBS:
		n := 0
		for _, b := range v.Value {
			n += len(b)
		}
		return n
	case *types.AttributeValueMemberL:
		n := 3
		for _, e := range v.Value {
			n += 1 + attributeSize(e)
		}
		return n
	case *types.AttributeValueMemberM:
		n := 3
		for k, e := range v.Value {
			n += 1 + len(k) + attributeSize(e)
		}
		return n
	}
	return 0
}

func numberSize(s string) int {
	digits := strings.TrimLeft(strings.Map(func(r rune) rune {
		if r >= '0' && r <= '9' {
			return r
		}
		return -1
	}, strings.SplitN(strings.ToLower(s), "e", 2)[0]), "0")
	digits = strings.TrimRight(digits, "0")
	return (utf8.RuneCountInString(digits)+1)/2 + 1
}
