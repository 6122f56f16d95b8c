package sinks

import (
	"fmt"

	"github.com/streamscore/streamscore/sinks/output"
)

// route maps kinds to destinations ("" = not routed).
type route [output.NumKinds]string

func (r *route) set(k output.Kind, dest string) error {
	if int(k) >= output.NumKinds {
		return fmt.Errorf("sinks: set route: unknown kind %d", k)
	}
	if dest == "" {
		return fmt.Errorf("sinks: set route for %s: empty destination", k)
	}
	r[k] = dest
	return nil
}

func (r *route) get(k output.Kind) string {
	if int(k) < output.NumKinds {
		return r[k]
	}
	return ""
}

// routes reports whether the kind has a destination.
func (r *route) routes(k output.Kind) bool { return r.get(k) != "" }

// Routes reports whether the sink has a subject for kind k
// (output.Router: Fanout counts only the kinds a sink routes).
func (n *NATS) Routes(k output.Kind) bool { return n.cfg.route.routes(k) }

// Routes reports whether the sink has a topic for kind k (output.Router).
func (k *Kafka) Routes(kind output.Kind) bool { return k.cfg.route.routes(kind) }
