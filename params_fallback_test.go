package main

import (
	"strings"
	"testing"
)

// What an item's own keys do to the fallback it shares with the defaults: override it,
// take it back with null, or leave it; the defaults' fallback is never changed by an
// item, and a one-element list is no fallback.
func TestFallbackKeysOverDefaults(t *testing.T) {
	data := `{"defaults": {"command": "x", "instance_type": ["c5.large", "m5.large"], "region": ["us-east-1", "us-west-2"],
	  "spot": "prefer", "ami": {"us-east-1": "ami-0aaaaaaaaaaaaaaaa", "us-west-2": "ami-0bbbbbbbbbbbbbbbb"}},
	 "params": [
	  {},
	  {"instance_type": "c7i.large"},
	  {"instance_type": null, "spot": false},
	  {"region": "us-west-2", "ami": "ami-0cccccccccccccccc"},
	  {"region": ["eu-west-1"], "ami": null, "spot": null, "instance_type": ["t3.micro"]},
	  {}
	 ]}`
	ps, err := readParamFile("f.json", []byte(data), paramFileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, it := range ps.Items {
		var cs []string
		for _, c := range candidatesOf(it) {
			cs = append(cs, c.String())
		}
		got = append(got, strings.Join(cs, ", "))
	}
	want := []string{
		"c5.large spot in us-east-1, c5.large on-demand in us-east-1, m5.large spot in us-east-1, m5.large on-demand in us-east-1, " +
			"c5.large spot in us-west-2, c5.large on-demand in us-west-2, m5.large spot in us-west-2, m5.large on-demand in us-west-2",
		"c7i.large spot in us-east-1, c7i.large on-demand in us-east-1, c7i.large spot in us-west-2, c7i.large on-demand in us-west-2",
		"t3.micro on-demand in us-east-1, t3.micro on-demand in us-west-2",
		"c5.large spot in us-west-2, c5.large on-demand in us-west-2, m5.large spot in us-west-2, m5.large on-demand in us-west-2",
		"t3.micro on-demand in eu-west-1",
	}
	for i, w := range want {
		if got[i] != w {
			t.Errorf("item %d: candidates\n  %s\nwant\n  %s", i, got[i], w)
		}
	}
	if got[5] != got[0] {
		t.Errorf("the last item, like the first, has the defaults' candidates; got %s", got[5])
	}
	if it := ps.Items[4]; it.Fallback != nil || it.InstanceType != "t3.micro" || it.Region != "eu-west-1" || it.AMI != "" {
		t.Errorf("item 4 has no fallback left: %+v %+v", it, it.Fallback)
	}
	if it := ps.Items[3]; it.AMI != "ami-0cccccccccccccccc" || it.Fallback.AMIs != nil {
		t.Errorf("item 3's own ami replaces the per-region ones: %q %v", it.AMI, it.Fallback.AMIs)
	}
}
