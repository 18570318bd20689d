package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// eventOracle decides, without decodeEvent, what the function must make of raw: it walks
// the top-level object token by token (encoding/json's rules: keys match field names
// ignoring case, a later key overwrites an earlier one, null leaves a field as it is,
// a known field of the wrong type makes the event malformed).
func eventOracle(raw []byte) (want orchestratorEvent, accept bool) {
	if !json.Valid(raw) {
		return orchestratorEvent{}, false
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	tok, err := dec.Token()
	if err != nil || tok != json.Delim('{') {
		return orchestratorEvent{}, false // null, a scalar or an array: no sweep, no health check
	}
	var ev orchestratorEvent
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return orchestratorEvent{}, false
		}
		key, _ := tok.(string)
		var val json.RawMessage
		if err := dec.Decode(&val); err != nil {
			return orchestratorEvent{}, false
		}
		var dst any
		switch {
		case strings.EqualFold(key, "sweep_id"):
			dst = &ev.SweepID
		case strings.EqualFold(key, "force_download"):
			dst = &ev.ForceDownload
		case strings.EqualFold(key, "health_check"):
			dst = &ev.HealthCheck
		case strings.EqualFold(key, "lease_watch"):
			dst = &ev.LeaseWatch
		case strings.EqualFold(key, "watchdog"):
			dst = &ev.Watchdog
		case strings.EqualFold(key, "source"):
			dst = &ev.Source
		case strings.EqualFold(key, "detail-type"):
			dst = &ev.DetailType
		default:
			continue
		}
		if string(val) == "null" {
			continue
		}
		if json.Unmarshal(val, dst) != nil {
			return orchestratorEvent{}, false
		}
	}
	// EventBridge's scheduled event (no constant input) is the watchdog's too.
	if ev.Source == "aws.events" && ev.DetailType == "Scheduled Event" {
		ev.Watchdog = true
	}
	return ev, ev.SweepID != "" || ev.HealthCheck || ev.Watchdog
}

// FuzzDecodeEvent: decodeEvent never panics, accepts exactly the events that name a
// sweep, ask for a health check or are the watchdog's, decodes them as the oracle does, and refuses
// everything else with errMalformedEvent.
// Huge strings and deep nesting are in testdata/fuzz/FuzzDecodeEvent.
func FuzzDecodeEvent(f *testing.F) {
	for _, s := range []string{
		`{"sweep_id": "sw-20260101-000000-abcdef", "force_download": false}`,
		`{"sweep_id": "sw-1", "force_download": true}`,
		`{"health_check": true}`,
		`{"health_check": false}`,
		`{}`, `null`, `[]`, `"sweep_id"`, `42`, ``, `{`, `{"sweep_id": "x"} trailing`,
		`{"sweep_id": 42}`, `{"sweep_id": ["a"]}`, `{"health_check": "true"}`, `{"force_download": 1, "sweep_id": "a"}`,
		`{"SWEEP_ID": "a"}`, `{"Health_Check": true}`, `{"sweep_id": "a", "sweep_id": ""}`, `{"sweep_id": "a", "sweep_id": null}`,
		`{"sweep_id": "", "health_check": true}`, `{"sweep_id": "\u0000\ud800"}`, "{\"sweep_id\": \"\xff\xfe\"}",
		`{"sweep_id": "a", "extra": {"deep": [1, {"x": [null, true, 1e999]}]}}`,
		`{"sweep_id": "a", "lease_watch": {"owner": "lambda-1", "renewed_at": "2026-01-01T00:00:00Z", "watched_seconds": 2.5}}`,
		`{"sweep_id": "a", "lease_watch": {"owner": 1}}`, `{"sweep_id": "a", "lease_watch": {"renewed_at": "yesterday"}}`,
		`{"sweep_id": "a", "lease_watch": {"owner": "x"}, "LEASE_WATCH": {"watched_seconds": 1}}`,
		`{"watchdog": true}`, `{"watchdog": false}`, `{"watchdog": "true"}`, `{"Watchdog": true, "sweep_id": "a"}`,
		`{"version":"0","id":"e","detail-type":"Scheduled Event","source":"aws.events","account":"123456789012","time":"2026-12-06T08:00:00Z","region":"us-east-1","resources":["arn:aws:events:us-east-1:123456789012:rule/spawn-sweep-watchdog"],"detail":{}}`,
		`{"detail-type":"Scheduled Event","source":"aws.ec2"}`, `{"detail-type":"Object Created","source":"aws.events"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		got, err := decodeEvent(raw)
		want, accept := eventOracle(raw)
		if accept != (err == nil) {
			t.Fatalf("decodeEvent(%q) = %+v, %v; the oracle says accept=%v (%+v)", raw, got, err, accept, want)
		}
		if err != nil {
			if !errors.Is(err, errMalformedEvent) || got != (orchestratorEvent{}) {
				t.Fatalf("decodeEvent(%q) refused with %+v, %v; want a zero event and errMalformedEvent", raw, got, err)
			}
			return
		}
		if !reflect.DeepEqual(got, want) || (got.SweepID == "" && !got.HealthCheck && !got.Watchdog) {
			t.Fatalf("decodeEvent(%q) = %+v, want %+v", raw, got, want)
		}
	})
}
