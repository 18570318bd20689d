package main

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"time"
)

// What a launch may cost, and who says yes to it: every item needs an end (a TTL or an
// idle timeout, its own or from --ttl / --idle-timeout) unless a detached launch says
// --no-ttl; the cost bound is printed; above SPAWN_CONFIRM_ABOVE (default $100) a launch
// without --yes asks on a terminal and is refused otherwise.

// defaultConfirmAbove is the cost bound (USD) above which a launch needs --yes.
const defaultConfirmAbove = 100.0

// costBound is the most a sweep can cost if every item with an end runs to its TTL,
// priced from the embedded table (no AWS call); endless counts the items with no TTL.
type costBound struct {
	USD     float64
	Endless int
	Sources map[string]int
}

func (c costBound) String() string {
	if c.Endless > 0 {
		return fmt.Sprintf("unbounded: %s without a TTL (--no-ttl); the rest $%.2f at most", plural(c.Endless, "item"), c.USD)
	}
	return fmt.Sprintf("$%.2f at most", c.USD)
}

// checkEnds refuses items with no end: each needs a TTL or an idle timeout, its own or
// the flags', unless the launch is detached and says --no-ttl.
func (lf *launchFlags) checkEnds(items []item, detach bool) error {
	var endless []int
	for _, it := range items {
		if it.TTL <= 0 && it.IdleTimeout <= 0 && !lf.ttl.set && !lf.idleTimeout.set {
			endless = append(endless, it.Index)
		}
	}
	switch {
	case len(endless) == 0:
		return nil
	case !detach:
		return usageErrorf("--no-detach needs --ttl or --idle-timeout: give one, so that the sweep's instances end even if this process dies (%s without a ttl or idle_timeout of its own)",
			plural(len(endless), "item"))
	case lf.noTTL:
		return nil
	}
	return usageErrorf("item %d%s has no end: give each item a ttl or idle_timeout, pass --ttl D or --idle-timeout D, or pass --no-ttl to let them run until their command ends",
		endless[0], moreThan(len(endless)-1))
}

func moreThan(n int) string {
	if n == 0 {
		return ""
	}
	return fmt.Sprintf(" (and %d more)", n)
}

// launchBound prices the items (ttl, --ttl, for those without their own).
func launchBound(ctx context.Context, region string, items []item, ttl time.Duration) costBound {
	priced := make([]item, len(items))
	for i, it := range items {
		if it.Region == "" {
			it.Region = region
		}
		priced[i] = it
	}
	usd, sources := newTablePricer(region).dryRunCostBound(ctx, priced, ttl)
	return costBound{USD: math.Round(usd*100) / 100, Endless: sources[priceSourceNoTTL], Sources: sources}
}

// confirmAbove is SPAWN_CONFIRM_ABOVE, or the default.
func confirmAbove() (float64, error) {
	s := os.Getenv("SPAWN_CONFIRM_ABOVE")
	if s == "" {
		return defaultConfirmAbove, nil
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || v < 0 || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, usageErrorf("SPAWN_CONFIRM_ABOVE=%q is not an amount of dollars: give one such as 250", s)
	}
	return v, nil
}

// confirm lets a launch whose bound is above the threshold go ahead: with --yes, or when
// the user answers yes on a terminal; refused otherwise, before anything is created.
func (r *rootConfig) confirm(c costBound, yes bool) error {
	limit, err := confirmAbove()
	if err != nil || yes || c.USD <= limit {
		return err
	}
	if !isTerminal(r.stdin) || !isTerminal(r.stderr) {
		return usageErrorf("the sweep may cost up to $%.2f, over the $%.2f that needs a yes (SPAWN_CONFIRM_ABOVE): pass --yes to launch it", c.USD, limit)
	}
	fmt.Fprintf(r.stderr, "the sweep may cost up to $%.2f (over $%.2f). Launch it? [y/N] ", c.USD, limit)
	answer, _ := bufio.NewReader(r.stdin).ReadString('\n')
	if a := strings.ToLower(strings.TrimSpace(answer)); a == "y" || a == "yes" {
		return nil
	}
	return withExitCode(exitUsage, fmt.Errorf("not launched: the cost bound of $%.2f was not confirmed", c.USD))
}
