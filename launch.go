package main

import "time"

// item is one parameter set of a sweep after defaults were merged and validated.
// Items are numbered from 0 in file order.
type item struct {
	Index              int
	Name               string
	InstanceType       string // default t3.micro
	Region             string // empty: the sweep's region
	AMI                string // empty: latest Amazon Linux 2023 for the type's architecture (SSM)
	KeyName            string
	SubnetID           string
	SecurityGroupIDs   []string
	IAMInstanceProfile string // default spawnd-role
	Spot               bool
	SpotMaxPrice       string
	TTL                time.Duration
	IdleTimeout        time.Duration
	Command            string
	UserData           string
	// Params are every other key, sorted by key: env PARAM_<key> and tag spawn:param:<key>.
	Params []param
}

type param struct {
	Key   string
	Value string
}

// launchRequest is what `spawn launch` hands on once flags and the file are valid.
type launchRequest struct {
	ParamFile     string // path as given
	Raw           []byte // the file's bytes: uploaded as-is, re-parsed by the orchestrator
	Items         []item
	Name          string
	MaxConcurrent int
	LaunchDelay   time.Duration
	PollInterval  time.Duration
	TTL           time.Duration // sweep-wide default for items without their own
	IdleTimeout   time.Duration
	Detach        bool
	Wait          bool
}
