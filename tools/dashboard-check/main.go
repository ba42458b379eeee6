// dashboard-check decodes Grafana dashboard JSON files strictly, the way Grafana's own schema
// reads them, with grafana-foundation-sdk (Apache-2.0): the dashboard, its panels with their
// plugin-specific options and field config, its queries (Prometheus), annotations and
// variables. A field the schema does not know, a field of the wrong type or a required field
// missing is an error.
//
// Usage: dashboard-check FILE...  Prints every error as "FILE: path: message" and exits 1 if
// there is any; prints "FILE: ok" for a file without one.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/plugins"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: dashboard-check FILE...")
		os.Exit(2)
	}
	// Panel options, field config and queries decode into their plugins' own types.
	plugins.RegisterDefaultPlugins()
	failed := false
	for _, file := range os.Args[1:] {
		problems, err := check(file)
		if err != nil {
			fmt.Printf("%s: %v\n", file, err)
			failed = true
			continue
		}
		for _, p := range problems {
			fmt.Printf("%s: %s\n", file, p)
		}
		if len(problems) == 0 {
			fmt.Printf("%s: ok\n", file)
		}
		failed = failed || len(problems) > 0
	}
	if failed {
		os.Exit(1)
	}
}

// check returns every problem the strict decode finds in one file.
func check(file string) ([]string, error) {
	raw, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var problems []string
	var d dashboard.Dashboard
	problems = append(problems, explain(d.UnmarshalJSONStrict(raw))...)
	// The SDK decodes a panel's fieldConfig leniently apart from its `custom` part: decode the
	// rest (defaults, overrides, mappings, thresholds) strictly too, also in collapsed rows.
	var loose struct {
		Panels []json.RawMessage `json:"panels"`
	}
	if err := json.Unmarshal(raw, &loose); err != nil {
		return nil, err
	}
	var walk func(prefix string, panels []json.RawMessage)
	walk = func(prefix string, panels []json.RawMessage) {
		for i, p := range panels {
			var fields struct {
				FieldConfig json.RawMessage   `json:"fieldConfig"`
				Panels      []json.RawMessage `json:"panels"`
			}
			if err := json.Unmarshal(p, &fields); err != nil {
				problems = append(problems, fmt.Sprintf("%s[%d]: %v", prefix, i, err))
				continue
			}
			if fields.FieldConfig != nil {
				var fc dashboard.FieldConfigSource
				for _, e := range explain(fc.UnmarshalJSONStrict(fields.FieldConfig)) {
					problems = append(problems, fmt.Sprintf("%s[%d].fieldConfig.%s", prefix, i, e))
				}
			}
			walk(fmt.Sprintf("%s[%d].panels", prefix, i), fields.Panels)
		}
	}
	walk("panels", loose.Panels)
	return problems, nil
}

// explain splits the SDK's collected errors into one line each.
func explain(err error) []string {
	if err == nil {
		return nil
	}
	var many cog.BuildErrors
	if errors.As(err, &many) {
		lines := make([]string, 0, len(many))
		for _, e := range many {
			lines = append(lines, e.Error())
		}
		return lines
	}
	return []string{err.Error()}
}
