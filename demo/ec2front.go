package main

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"log"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
)

// ec2Front sits in front of kumo and gives EC2's DescribeInstances the tags EC2 shows:
// those a launch's TagSpecifications named, and those CreateTags added since. kumo drops
// the first and shows neither there, and spawn acts only on instances whose tags say
// they are the sweep's (spawn:managed and spawn:sweep-id), as on AWS. Everything else
// passes straight through (the Lambda runtime API's long polls included).
func ec2Front(target string) (*httptest.Server, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, err
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.FlushInterval = -1
	rp.ErrorLog = log.New(io.Discard, "", 0) // a long poll cut at the demo's end is no news
	var mu sync.Mutex
	tags := map[string][][2]string{} // instance id → its tags, in order
	instanceID := regexp.MustCompile(`<instanceId>(i-[^<]+)</instanceId>`)
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || !strings.Contains(r.Header.Get("Content-Type"), "x-www-form-urlencoded") {
			rp.ServeHTTP(w, r)
			return
		}
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		form, _ := url.ParseQuery(string(body))
		action := form.Get("Action")
		if action != "RunInstances" && action != "CreateTags" && action != "DescribeInstances" {
			rp.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		rp.ServeHTTP(rec, r)
		out := rec.Body.Bytes()
		mu.Lock()
		switch {
		case rec.Code != http.StatusOK:
		case action == "RunInstances":
			for _, m := range instanceID.FindAllSubmatch(out, -1) {
				for n := 1; form.Get(fmt.Sprintf("TagSpecification.%d.ResourceType", n)) != ""; n++ {
					if form.Get(fmt.Sprintf("TagSpecification.%d.ResourceType", n)) == "instance" {
						addTags(tags, string(m[1]), form, fmt.Sprintf("TagSpecification.%d.", n))
					}
				}
			}
		case action == "CreateTags":
			for n := 1; form.Get(fmt.Sprintf("ResourceId.%d", n)) != ""; n++ {
				addTags(tags, form.Get(fmt.Sprintf("ResourceId.%d", n)), form, "")
			}
		default:
			out = instanceID.ReplaceAllFunc(out, func(m []byte) []byte {
				return append(append([]byte{}, m...), tagSetXML(tags[string(instanceID.FindSubmatch(m)[1])])...)
			})
		}
		mu.Unlock()
		maps.Copy(w.Header(), rec.Header())
		w.Header().Set("Content-Length", strconv.Itoa(len(out)))
		w.WriteHeader(rec.Code)
		_, _ = w.Write(out)
	})), nil
}

// addTags records the form's tags under prefix ("TagSpecification.N." or "") for id,
// a later value of a key replacing the earlier one.
func addTags(tags map[string][][2]string, id string, form url.Values, prefix string) {
	for m := 1; form.Get(fmt.Sprintf("%sTag.%d.Key", prefix, m)) != ""; m++ {
		k, v := form.Get(fmt.Sprintf("%sTag.%d.Key", prefix, m)), form.Get(fmt.Sprintf("%sTag.%d.Value", prefix, m))
		replaced := false
		for i := range tags[id] {
			if tags[id][i][0] == k {
				tags[id][i][1], replaced = v, true
			}
		}
		if !replaced {
			tags[id] = append(tags[id], [2]string{k, v})
		}
	}
}

func tagSetXML(kvs [][2]string) string {
	if len(kvs) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("<tagSet>")
	for _, kv := range kvs {
		var k, v bytes.Buffer
		_ = xml.EscapeText(&k, []byte(kv[0]))
		_ = xml.EscapeText(&v, []byte(kv[1]))
		fmt.Fprintf(&b, "<item><key>%s</key><value>%s</value></item>", k.String(), v.String())
	}
	return b.String() + "</tagSet>"
}
