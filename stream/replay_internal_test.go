package stream

import (
	"reflect"
	"testing"
)

// TestReplayOptionsComplete is a tripwire: a new field of config (a new
// Option) must be sorted into those Replay honours and those it refuses
// (replayIgnored), then counted here.
func TestReplayOptionsComplete(t *testing.T) {
	if got, want := reflect.TypeFor[config]().NumField(), 37; got != want {
		t.Fatalf("config has %d fields, was %d: decide whether Replay honours the new option (replayIgnored) and update this count", got, want)
	}
	c := defaultConfig()
	if got := c.replayIgnored(); len(got) != 0 {
		t.Fatalf("the defaults count as set: %v", got)
	}
}
