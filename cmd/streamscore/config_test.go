package main

import (
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// newRunFlags returns a flag set with the engine flags of `run`, as cmdRun
// builds it, and the config they fill in.
func newRunFlags() (*flag.FlagSet, *engineConfig) {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var cfg engineConfig
	cfg.register(fs)
	return fs, &cfg
}

// writeConfig writes a YAML file into a test directory and returns its path.
func writeConfig(t *testing.T, yaml string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "streamscore.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// clearEnv unsets every STREAMSCORE_ variable for the test, so that the
// environment of whoever runs `go test` does not leak into the cases.
func clearEnv(t *testing.T) {
	t.Helper()
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, envPrefix) {
			t.Setenv(name, "") // restores the value after the test
			os.Unsetenv(name)
		}
	}
}

func TestEnvName(t *testing.T) {
	for _, tc := range []struct{ flag, want string }{
		{"max-batch", "STREAMSCORE_MAX_BATCH"},
		{"brokers", "STREAMSCORE_BROKERS"},
		{"deadletter-topic", "STREAMSCORE_DEADLETTER_TOPIC"},
		{"config", "STREAMSCORE_CONFIG"},
	} {
		if got := envName(tc.flag); got != tc.want {
			t.Errorf("envName(%q) = %q, want %q", tc.flag, got, tc.want)
		}
	}
}

// TestParseFlagsPrecedence checks command line > environment > YAML file >
// default, flag by flag, for strings, ints, durations and bools.
func TestParseFlagsPrecedence(t *testing.T) {
	const yamlAll = `
brokers: yaml-1:9092,yaml-2:9092
group: yaml-group
max-batch: 300
max-delay: 30ms
start-at-end: true
`
	defaults := func() engineConfig {
		fs, cfg := newRunFlags()
		if err := fs.Parse(nil); err != nil {
			t.Fatal(err)
		}
		return *cfg
	}()
	for _, tc := range []struct {
		name  string
		args  []string
		env   map[string]string
		yaml  string // "" means no --config
		check func(t *testing.T, c *engineConfig)
	}{
		{
			name: "defaults",
			check: func(t *testing.T, c *engineConfig) {
				if c.Brokers != "127.0.0.1:9092" || c.Group != "streamscore" || c.MaxBatch != 256 ||
					c.MaxDelay != 2*time.Millisecond || c.StartAtEnd || len(c.Models) != 0 {
					t.Errorf("got %+v, want the defaults", *c)
				}
			},
		},
		{
			name: "yaml beats default",
			yaml: yamlAll,
			check: func(t *testing.T, c *engineConfig) {
				if got, want := c.Brokers, "yaml-1:9092,yaml-2:9092"; got != want {
					t.Errorf("brokers %q, want %q", got, want)
				}
				if got, want := c.Group, "yaml-group"; got != want {
					t.Errorf("group %q, want %q", got, want)
				}
				if got, want := c.MaxBatch, 300; got != want {
					t.Errorf("max-batch %d, want %d", got, want)
				}
				if got, want := c.MaxDelay, 30*time.Millisecond; got != want {
					t.Errorf("max-delay %v, want %v", got, want)
				}
				if !c.StartAtEnd {
					t.Errorf("start-at-end false, want true")
				}
				if got, want := c.Topic, defaults.Topic; got != want {
					t.Errorf("topic %q, want default %q", got, want)
				}
			},
		},
		{
			name: "env beats yaml",
			yaml: yamlAll,
			env: map[string]string{
				"STREAMSCORE_GROUP":        "env-group",
				"STREAMSCORE_MAX_BATCH":    "400",
				"STREAMSCORE_START_AT_END": "false",
			},
			check: func(t *testing.T, c *engineConfig) {
				if got, want := c.Group, "env-group"; got != want {
					t.Errorf("group %q, want %q", got, want)
				}
				if got, want := c.MaxBatch, 400; got != want {
					t.Errorf("max-batch %d, want %d", got, want)
				}
				if c.StartAtEnd {
					t.Errorf("start-at-end true, want false from env")
				}
				if got, want := c.MaxDelay, 30*time.Millisecond; got != want {
					t.Errorf("max-delay %v, want %v from yaml", got, want)
				}
			},
		},
		{
			name: "flag beats env and yaml",
			yaml: yamlAll,
			args: []string{"--group", "flag-group", "--max-delay=7ms"},
			env: map[string]string{
				"STREAMSCORE_GROUP":     "env-group",
				"STREAMSCORE_MAX_DELAY": "9ms",
				"STREAMSCORE_MAX_BATCH": "400",
			},
			check: func(t *testing.T, c *engineConfig) {
				if got, want := c.Group, "flag-group"; got != want {
					t.Errorf("group %q, want %q", got, want)
				}
				if got, want := c.MaxDelay, 7*time.Millisecond; got != want {
					t.Errorf("max-delay %v, want %v", got, want)
				}
				if got, want := c.MaxBatch, 400; got != want {
					t.Errorf("max-batch %d, want %d from env", got, want)
				}
				if got, want := c.Brokers, "yaml-1:9092,yaml-2:9092"; got != want {
					t.Errorf("brokers %q, want %q from yaml", got, want)
				}
			},
		},
		{
			name: "flag set to its default value still beats env and yaml",
			yaml: yamlAll,
			args: []string{"--max-batch", "256"},
			env:  map[string]string{"STREAMSCORE_MAX_BATCH": "400"},
			check: func(t *testing.T, c *engineConfig) {
				if got, want := c.MaxBatch, 256; got != want {
					t.Errorf("max-batch %d, want %d", got, want)
				}
			},
		},
		{
			name: "empty env value disables a sink over yaml",
			yaml: "nats: nats://yaml:4222\n",
			env:  map[string]string{"STREAMSCORE_NATS": ""},
			check: func(t *testing.T, c *engineConfig) {
				if c.NATS != "" {
					t.Errorf("nats %q, want empty", c.NATS)
				}
			},
		},
		{
			name: "config path from env",
			env:  map[string]string{"STREAMSCORE_CONFIG": "<yaml>"},
			yaml: "group: from-env-config\n",
			check: func(t *testing.T, c *engineConfig) {
				if got, want := c.Group, "from-env-config"; got != want {
					t.Errorf("group %q, want %q", got, want)
				}
			},
		},
		{
			name: "null yaml value keeps the default",
			yaml: "group:\nmax-batch: 12\n",
			check: func(t *testing.T, c *engineConfig) {
				if c.Group != defaults.Group || c.MaxBatch != 12 {
					t.Errorf("group %q max-batch %d, want %q 12", c.Group, c.MaxBatch, defaults.Group)
				}
			},
		},
		{
			name: "empty yaml file",
			yaml: "# nothing\n",
			check: func(t *testing.T, c *engineConfig) {
				if c.Group != defaults.Group {
					t.Errorf("group %q, want %q", c.Group, defaults.Group)
				}
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clearEnv(t)
			args := tc.args
			if tc.yaml != "" {
				path := writeConfig(t, tc.yaml)
				if tc.env["STREAMSCORE_CONFIG"] == "<yaml>" {
					t.Setenv("STREAMSCORE_CONFIG", path)
				} else {
					args = append([]string{"--config", path}, args...)
				}
			}
			for k, v := range tc.env {
				if k != "STREAMSCORE_CONFIG" {
					t.Setenv(k, v)
				}
			}
			fs, cfg := newRunFlags()
			if err := parseFlags(fs, args); err != nil {
				t.Fatalf("parseFlags: %v", err)
			}
			tc.check(t, cfg)
		})
	}
}

// TestParseFlagsLists checks the repeatable --model flag from each source.
func TestParseFlagsLists(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		env  string // STREAMSCORE_MODEL; "-" means unset
		yaml string
		want []string
	}{
		{name: "none", env: "-", want: nil},
		{name: "yaml sequence", env: "-", yaml: "model: [a.json, b.json]\n", want: []string{"a.json", "b.json"}},
		{name: "yaml block sequence", env: "-", yaml: "model:\n  - a.json\n  - b.json\n  - c.json\n", want: []string{"a.json", "b.json", "c.json"}},
		{name: "yaml scalar", env: "-", yaml: "model: a.json\n", want: []string{"a.json"}},
		{name: "env comma list", env: "x.json, y.json,,z.json", want: []string{"x.json", "y.json", "z.json"}},
		{name: "env beats yaml", env: "x.json,y.json", yaml: "model: [a.json, b.json]\n", want: []string{"x.json", "y.json"}},
		{name: "repeated flag", env: "-", args: []string{"--model", "f1.json", "--model=f2.json"}, want: []string{"f1.json", "f2.json"}},
		{name: "flag beats env and yaml", env: "x.json", yaml: "model: [a.json]\n", args: []string{"--model", "f1.json"}, want: []string{"f1.json"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clearEnv(t)
			if tc.env != "-" {
				t.Setenv("STREAMSCORE_MODEL", tc.env)
			}
			args := tc.args
			if tc.yaml != "" {
				args = append([]string{"--config", writeConfig(t, tc.yaml)}, args...)
			}
			fs, cfg := newRunFlags()
			if err := parseFlags(fs, args); err != nil {
				t.Fatalf("parseFlags: %v", err)
			}
			if got := []string(cfg.Models); !slices.Equal(got, tc.want) {
				t.Errorf("models %q, want %q", got, tc.want)
			}
		})
	}
}

// TestParseFlagsErrors checks that every bad input is an error naming where
// it came from.
func TestParseFlagsErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		args  []string
		env   map[string]string
		yaml  string
		wants []string // substrings of the error
	}{
		{name: "unknown yaml key", yaml: "max-bacth: 10\n", wants: []string{"unknown key", `"max-bacth"`}},
		{name: "config is not a yaml key", yaml: "config: other.yaml\n", wants: []string{"unknown key", `"config"`}},
		{name: "two unknown keys", yaml: "foo: 1\nbar: 2\n", wants: []string{`"foo"`, `"bar"`}},
		{name: "bad yaml int", yaml: "max-batch: lots\n", wants: []string{`"max-batch"`}},
		{name: "bad yaml duration", yaml: "max-delay: 5\n", wants: []string{`"max-delay"`}},
		{name: "bad yaml bool", yaml: "start-at-end: sometimes\n", wants: []string{`"start-at-end"`}},
		{name: "yaml syntax", yaml: "group: [unclosed\n", wants: []string{"parse config"}},
		{name: "yaml not a mapping", yaml: "- a\n- b\n", wants: []string{"parse config"}},
		{name: "missing config file", args: []string{"--config", "/nonexistent/streamscore.yaml"}, wants: []string{"read config", "/nonexistent/streamscore.yaml"}},
		{name: "bad env int", env: map[string]string{"STREAMSCORE_MAX_BATCH": "many"}, wants: []string{"STREAMSCORE_MAX_BATCH"}},
		{name: "bad env duration", env: map[string]string{"STREAMSCORE_DRAIN_TIMEOUT": "soon"}, wants: []string{"STREAMSCORE_DRAIN_TIMEOUT"}},
		{name: "bad env bool", env: map[string]string{"STREAMSCORE_START_AT_END": "yes please"}, wants: []string{"STREAMSCORE_START_AT_END"}},
		{name: "two bad env values", env: map[string]string{"STREAMSCORE_MAX_BATCH": "x", "STREAMSCORE_WORKERS": "y"}, wants: []string{"STREAMSCORE_MAX_BATCH", "STREAMSCORE_WORKERS"}},
		{name: "bad flag value", args: []string{"--max-batch", "x"}, wants: []string{"max-batch"}},
		{name: "unknown flag", args: []string{"--nope"}, wants: []string{"nope"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clearEnv(t)
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			args := tc.args
			if tc.yaml != "" {
				args = append([]string{"--config", writeConfig(t, tc.yaml)}, args...)
			}
			fs, _ := newRunFlags()
			err := parseFlags(fs, args)
			if err == nil {
				t.Fatalf("parseFlags succeeded, want an error containing %q", tc.wants)
			}
			for _, w := range tc.wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// TestParseFlagsOverriddenBadValues: a bad value in a lower-precedence
// source that is overridden is not looked at (env) or still checked as a key
// (yaml: unknown keys are an error even when nothing uses them).
func TestParseFlagsOverriddenBadValues(t *testing.T) {
	clearEnv(t)
	t.Setenv("STREAMSCORE_MAX_BATCH", "many")
	fs, cfg := newRunFlags()
	if err := parseFlags(fs, []string{"--max-batch", "10"}); err != nil {
		t.Fatalf("bad env value overridden by a flag: %v", err)
	}
	if cfg.MaxBatch != 10 {
		t.Errorf("max-batch %d, want 10", cfg.MaxBatch)
	}

	clearEnv(t)
	fs, _ = newRunFlags()
	path := writeConfig(t, "group: g\ntypo: 1\n")
	if err := parseFlags(fs, []string{"--config", path, "--group", "x"}); err == nil || !strings.Contains(err.Error(), `"typo"`) {
		t.Errorf("got %v, want unknown key \"typo\"", err)
	}
}

func TestParseFlagsHelp(t *testing.T) {
	clearEnv(t)
	fs, _ := newRunFlags()
	if err := parseFlags(fs, []string{"-h"}); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("parseFlags(-h) = %v, want flag.ErrHelp", err)
	}
}

func TestParseFlagsAddsConfig(t *testing.T) {
	clearEnv(t)
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	n := fs.Int("n", 1, "")
	path := writeConfig(t, "n: 5\n")
	if err := parseFlags(fs, []string{"--config", path}); err != nil {
		t.Fatal(err)
	}
	if *n != 5 {
		t.Errorf("n = %d, want 5", *n)
	}
}

// TestParseFlagsYAMLAsWritten: a YAML value reaches its flag as written,
// as from the command line: an unquoted date (which YAML decodes as a
// time), a number with a leading zero, a float's trailing zero, an alias.
func TestParseFlagsYAMLAsWritten(t *testing.T) {
	clearEnv(t)
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	from := fs.String("from", "", "")
	to := fs.String("to", "", "")
	mode := fs.String("mode", "", "")
	rate := fs.String("rate", "", "")
	var list listFlag
	fs.Var(&list, "model", "")
	path := writeConfig(t, "from: 2026-02-01\nto: &end 2026-02-08T00:00:00Z\nmode: 0755\nrate: 0.10\nmodel: [*end, b.json]\n")
	if err := parseFlags(fs, []string{"--config", path}); err != nil {
		t.Fatal(err)
	}
	if *from != "2026-02-01" || *to != "2026-02-08T00:00:00Z" || *mode != "0755" || *rate != "0.10" {
		t.Errorf("from %q, to %q, mode %q, rate %q: want the values as written", *from, *to, *mode, *rate)
	}
	if !slices.Equal([]string(list), []string{"2026-02-08T00:00:00Z", "b.json"}) {
		t.Errorf("model %q", list)
	}
}

func TestSplitList(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     []string
	}{
		{"empty", "", nil},
		{"one", "a:1", []string{"a:1"}},
		{"spaces and empties", " a:1 , ,b:2,", []string{"a:1", "b:2"}},
		{"only commas", ",,", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := splitList(tc.in); !slices.Equal(got, tc.want) {
				t.Errorf("splitList(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestEngineConfigValidate(t *testing.T) {
	valid := func() engineConfig {
		fs, cfg := newRunFlags()
		if err := fs.Parse(nil); err != nil {
			t.Fatal(err)
		}
		return *cfg
	}
	if c := valid(); c.Validate() != nil {
		t.Fatalf("defaults do not validate: %v", c.Validate())
	}
	for _, tc := range []struct {
		name   string
		mutate func(c *engineConfig)
		wants  []string // substrings of the error; nil means valid
	}{
		{"defaults", func(c *engineConfig) {}, nil},
		{"nats only", func(c *engineConfig) { c.ScoresTopic, c.AlertsTopic, c.AuditTopic, c.DeadLetterTopic = "", "", "", "" }, nil},
		{"kafka only", func(c *engineConfig) { c.NATS = "" }, nil},
		{"nats alerts subject only", func(c *engineConfig) { c.ScoresSubject = "" }, nil},
		{"empty brokers", func(c *engineConfig) { c.Brokers = "" }, []string{"--brokers"}},
		{"only commas in brokers", func(c *engineConfig) { c.Brokers = " , ," }, []string{"--brokers"}},
		{"empty group", func(c *engineConfig) { c.Group = "" }, []string{"--group"}},
		{"empty topic", func(c *engineConfig) { c.Topic = "" }, []string{"--topic"}},
		{"every sink disabled", func(c *engineConfig) {
			c.NATS, c.ScoresTopic, c.AlertsTopic, c.AuditTopic = "", "", "", ""
		}, []string{"every sink is disabled"}},
		{"nats without subjects", func(c *engineConfig) { c.ScoresSubject, c.AlertsSubject = "", "" }, []string{"--scores-subject", "--alerts-subject"}},
		{"max-batch zero", func(c *engineConfig) { c.MaxBatch = 0 }, []string{"--max-batch 0"}},
		{"max-batch too big", func(c *engineConfig) { c.MaxBatch = 1<<16 + 1 }, []string{"--max-batch 65537"}},
		{"max-batch at limit", func(c *engineConfig) { c.MaxBatch = 1 << 16 }, nil},
		{"max-delay zero", func(c *engineConfig) { c.MaxDelay = 0 }, []string{"--max-delay"}},
		{"workers zero", func(c *engineConfig) { c.Workers = 0 }, []string{"--workers 0"}},
		{"negative lateness", func(c *engineConfig) { c.MaxLateness = -time.Second }, []string{"--max-lateness"}},
		{"zero lateness", func(c *engineConfig) { c.MaxLateness = 0 }, nil},
		{"negative future skew", func(c *engineConfig) { c.MaxFutureSkew = -time.Second }, []string{"--max-future-skew"}},
		{"state interval without state dir", func(c *engineConfig) { c.StateInterval = time.Minute }, []string{"--state-interval 1m0s needs --state-dir"}},
		{"state interval below 1s", func(c *engineConfig) { c.StateDir, c.StateInterval = "/tmp/s", time.Millisecond }, []string{"--state-interval 1ms"}},
		{"state dir and interval", func(c *engineConfig) { c.StateDir, c.StateInterval = "/tmp/s", time.Minute }, nil},
		{"negative max-cards", func(c *engineConfig) { c.MaxCards = -1 }, []string{"--max-cards -1"}},
		{"unbounded cards and terminals", func(c *engineConfig) { c.MaxCards, c.MaxTerminals = 0, 0 }, nil},
		{"negative max-terminals", func(c *engineConfig) { c.MaxTerminals = -1 }, []string{"--max-terminals -1"}},
		{"negative max-points", func(c *engineConfig) { c.MaxPoints = -1 }, []string{"--max-points -1"}},
		{"max-field-bytes zero", func(c *engineConfig) { c.MaxFieldBytes = 0 }, []string{"--max-field-bytes 0"}},
		{"align idle wait above the lag wait", func(c *engineConfig) { c.AlignIdleWait = 30 * time.Second }, []string{"--align-idle-wait 30s", "--align-lag-wait 10s"}},
		{"align idle wait out of range", func(c *engineConfig) { c.AlignIdleWait, c.AlignLagWait = 2*time.Minute, time.Hour }, []string{"--align-idle-wait 2m0s"}},
		{"align idle and lag waits raised together", func(c *engineConfig) { c.AlignIdleWait, c.AlignLagWait = 30*time.Second, time.Minute }, nil},
		{"align idle wait above the lag wait, repartition mode", func(c *engineConfig) {
			c.AlignIdleWait, c.TerminalStage = 30*time.Second, "repartition"
			c.CheckpointStore, c.StateInterval = "kafka", time.Second
		}, nil},
		{"no alignment, repartition mode", func(c *engineConfig) {
			c.AlignIdleWait, c.TerminalStage = -time.Millisecond, "repartition"
			c.CheckpointStore, c.StateInterval = "kafka", time.Second
		}, []string{"--align-idle-wait -1ms", "--terminal-stage repartition"}},
		{"no idle wait, repartition mode", func(c *engineConfig) {
			c.AlignIdleWait, c.TerminalStage = 0, "repartition"
			c.CheckpointStore, c.StateInterval = "kafka", time.Second
		}, nil},
		{"several at once", func(c *engineConfig) { c.Group, c.Topic, c.Workers = "", "", 0 }, []string{"--group", "--topic", "--workers"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := valid()
			tc.mutate(&c)
			err := c.Validate()
			if tc.wants == nil {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want an error containing %q", tc.wants)
			}
			for _, w := range tc.wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %q, want it to contain %q", err, w)
				}
			}
		})
	}
}
