package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// envPrefix is the prefix of the environment variables that set flags:
// --max-batch is STREAMSCORE_MAX_BATCH.
const envPrefix = "STREAMSCORE_"

// parseFlags parses args into fs, then fills every flag not given on the
// command line from the environment (STREAMSCORE_<FLAG>, upper case, '-' as
// '_') and, failing that, from the YAML file named by --config (keys are the
// flag names; lists may be YAML sequences for repeatable flags). Precedence:
// command line > environment > config file > default.
//
// A --config flag is added to fs if it does not have one. Unknown keys in the
// config file are an error, so a typo never silently falls back to a default.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if fs.Lookup("config") == nil {
		fs.String("config", "", "YAML file with flag values (keys are flag names); env: "+envPrefix+"CONFIG")
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	// Environment.
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] {
			return
		}
		v, ok := os.LookupEnv(envName(f.Name))
		if !ok {
			return
		}
		if err := setFlag(f, v); err != nil {
			errs = append(errs, fmt.Errorf("env %s: %w", envName(f.Name), err))
			return
		}
		set[f.Name] = true
	})
	if len(errs) > 0 {
		return errors.Join(errs...)
	}

	// Config file.
	path := fs.Lookup("config").Value.String()
	if path == "" {
		return nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	// Nodes, not decoded values: a flag gets the value as written, as
	// from the command line or the environment (decoded, an unquoted date
	// became a time printed in Go's format, 0755 an integer in decimal).
	var doc map[string]yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return fmt.Errorf("parse config %s: %w", path, err)
	}
	keys := make([]string, 0, len(doc))
	for key := range doc {
		keys = append(keys, key)
	}
	sort.Strings(keys) // errors in a stable order
	for _, key := range keys {
		n := doc[key]
		node := unalias(&n)
		f := fs.Lookup(key)
		if f == nil || key == "config" {
			errs = append(errs, fmt.Errorf("config %s: unknown key %q", path, key))
			continue
		}
		if set[key] {
			continue
		}
		_, repeatable := f.Value.(*listFlag)
		var vals []string
		switch {
		case node.Kind == yaml.SequenceNode:
			if !repeatable {
				errs = append(errs, fmt.Errorf("config %s: key %q takes one value, not a list", path, key))
				continue
			}
			for _, e := range node.Content {
				e = unalias(e)
				if e.Kind != yaml.ScalarNode || e.Tag == "!!null" {
					errs = append(errs, fmt.Errorf("config %s: key %q: list items must be plain values", path, key))
					continue
				}
				vals = append(vals, e.Value)
			}
		case node.Kind == yaml.ScalarNode && node.Tag == "!!null":
			continue
		case node.Kind == yaml.ScalarNode:
			vals = []string{node.Value}
		default:
			errs = append(errs, fmt.Errorf("config %s: key %q takes a plain value, not a mapping", path, key))
			continue
		}
		for _, v := range vals {
			if err := f.Value.Set(v); err != nil {
				errs = append(errs, fmt.Errorf("config %s: key %q: %w", path, key, err))
			}
		}
	}
	return errors.Join(errs...)
}

// unalias returns the node an alias (*name) stands for, or n.
func unalias(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func envName(flagName string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// setFlag sets f from an environment value. Repeatable flags (those whose
// Value is a *listFlag) take a comma-separated list.
func setFlag(f *flag.Flag, v string) error {
	if _, ok := f.Value.(*listFlag); ok {
		for _, e := range strings.Split(v, ",") {
			if e = strings.TrimSpace(e); e != "" {
				if err := f.Value.Set(e); err != nil {
					return err
				}
			}
		}
		return nil
	}
	return f.Value.Set(v)
}

// listFlag is a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error {
	*l = append(*l, v)
	return nil
}

// splitList splits a comma-separated flag value, dropping empty parts.
func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
