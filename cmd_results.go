package main

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/peterbourgon/ff/v3/ffcli"
)

func newResultsCmd(r *rootConfig) *ffcli.Command {
	fs := r.newFlagSet("results")
	var (
		sweepID, sortKey string
		top              int
	)
	fs.StringVar(&sweepID, "sweep-id", "", "the sweep (or give it as the argument)")
	fs.StringVar(&sortKey, "sort", "", "a metric or column to sort by, -KEY for descending (default: the objective, else index)")
	fs.IntVar(&top, "top", 0, "show only the first N items after sorting (default: all)")
	return r.command("results", "spawn results [--sweep-id ID | ID] [--sort KEY] [--top N] [--output text|json|csv|markdown]",
		"one row per item: its params, outcome, cost and the metrics its instance reported",
		[]string{"spawn results sw-20250101-120000-a1b2c3 --sort -acc --top 5", "spawn results sw-20250101-120000-a1b2c3 --output csv > results.csv"}, fs,
		func(ctx context.Context, args []string) error {
			id, err := sweepIDArg(fs, &sweepID, args)
			if err != nil {
				return err
			}
			if top < 0 {
				return withHelp(fs.Name(), fmt.Errorf("--top %d must be positive, e.g. --top 10", top))
			}
			src, err := r.openSweepSource(ctx)
			if err != nil {
				return err
			}
			doc, err := src.results(ctx, id)
			if err != nil {
				return err
			}
			rs, err := doc.parseSortKey(sortKey)
			if errors.Is(err, errSortKey) {
				return withHelp(fs.Name(), fmt.Errorf("--sort %s", err))
			}
			doc.sortRows(rs, top)
			switch r.output {
			case "json":
				return r.printJSON(doc)
			case "csv":
				return writeResultsCSV(r.stdout, doc)
			case "markdown":
				return renderResultsMarkdown(r.stdout, doc)
			}
			return renderResults(r.stdout, doc)
		})
}

// results reads a sweep the caller owns, its instance items and its params, and joins
// them, one row per item in index order.
func (src *sweepSource) results(ctx context.Context, id string) (*resultsDoc, error) {
	s, err := src.load(ctx, id)
	if err != nil {
		return nil, err
	}
	recs, err := src.store.listInstances(ctx, id)
	if err != nil {
		return nil, explainStoreError(err, src.d, src.d.instancesTable, id)
	}
	bucket := s.S3Bucket
	if bucket == "" {
		bucket = src.d.bucket
	}
	ps, err := loadSweepParams(ctx, newParamsStore(newS3Client(src.d.cfg, src.d.accountID), bucket, ""), s)
	if err != nil {
		if missingBucket(err) {
			return nil, explainStoreError(err, src.d, src.d.table, id)
		}
		return nil, explain(err, "reading the params of sweep %s: %v", id, err)
	}
	v := buildStatus(ctx, s, recs, src.price, src.now())
	return buildResults(v, ps.Items, ps.Objective, recs), nil
}

// objective is the sweep's objective, read from its params object only once an item
// has reported metrics (the object is cached by checksum); nil when there is none or it
// cannot be read: status shows the rest without it.
func (src *sweepSource) objective(ctx context.Context, s *sweep, recs []instanceRecord) *objective {
	if !slices.ContainsFunc(recs, func(r instanceRecord) bool { return len(r.Metrics) > 0 }) {
		return nil
	}
	bucket := s.S3Bucket
	if bucket == "" {
		bucket = src.d.bucket
	}
	raw, err := newParamsStore(newS3Client(src.d.cfg, src.d.accountID), bucket, "").downloadParams(ctx, s.S3ParamsKey, s.ParamsChecksum, false)
	if err != nil {
		return nil
	}
	return objectiveOf(raw)
}
