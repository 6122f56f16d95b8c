package main

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/streamscore/streamscore/internal/promreg"
	"github.com/streamscore/streamscore/models"
)

// shippedTrust is the --model-trust value naming the release public key
// built into the binary (models.ShippedKey).
const shippedTrust = "shipped"

// modelTrustConfig is the model-signature part of the process
// configuration: which public keys a model file read from disk must be
// signed by (see models.Trust) before it scores or is swapped in.
type modelTrustConfig struct {
	ModelTrust          listFlag
	AllowUnsignedModels bool

	// verifier is built by validateTrust from the flags.
	verifier *modelVerifier
}

// registerTrust defines --model-trust and --allow-unsigned-models on fs.
func (c *modelTrustConfig) registerTrust(fs *flag.FlagSet) {
	fs.Var(&c.ModelTrust, "model-trust", "public key file, or directory of *.pub key files, whose signatures (MODEL.json.sig) make a model file acceptable (repeatable; \""+shippedTrust+"\" = the release key built into the binary). Default: the built-in release key; once given, only the keys given (add \""+shippedTrust+"\" to keep it). Give every key of a rotation; removing a key refuses the models only it signed. The models built into the binary are always verified against the built-in key")
	fs.BoolVar(&c.AllowUnsignedModels, "allow-unsigned-models", false, "accept model files without a valid signature by a trusted key (logged as a warning per file and at start); for development only: anyone who can write a model file then sets the thresholds")
}

// validateTrust loads the trusted keys and builds the verifier.
func (c *modelTrustConfig) validateTrust() error {
	t, err := loadTrust(c.ModelTrust)
	if err != nil {
		return err
	}
	c.verifier = &modelVerifier{trust: t, allowUnsigned: c.AllowUnsignedModels, failures: newSignatureFailures(), log: slog.Default()}
	return nil
}

// trustVerifier returns the verifier built by validateTrust, or the
// default one (the built-in release key, no opt-out) if it was not run.
func (c *modelTrustConfig) trustVerifier() *modelVerifier {
	if c.verifier != nil {
		return c.verifier
	}
	t, err := models.NewTrust(models.ShippedKey())
	if err != nil {
		panic("streamscore: the built-in release key: " + err.Error()) // a constant of the binary
	}
	return &modelVerifier{trust: t, failures: newSignatureFailures(), log: slog.Default()}
}

// loadTrust builds the trust set of --model-trust values: public key
// files, directories of *.pub files, or "shipped". No value means the
// built-in release key.
func loadTrust(vals []string) (*models.Trust, error) {
	if len(vals) == 0 {
		return models.NewTrust(models.ShippedKey())
	}
	var keys []models.PublicKey
	for _, v := range vals {
		if v == shippedTrust {
			keys = append(keys, models.ShippedKey())
			continue
		}
		fi, err := os.Stat(v)
		if err != nil {
			return nil, fmt.Errorf("--model-trust %s: %w", v, err)
		}
		if !fi.IsDir() {
			k, err := models.LoadPublicKey(v)
			if err != nil {
				return nil, fmt.Errorf("--model-trust: %w", err)
			}
			keys = append(keys, k)
			continue
		}
		paths, err := filepath.Glob(filepath.Join(v, "*.pub"))
		if err != nil {
			return nil, fmt.Errorf("--model-trust %s: %w", v, err)
		}
		if len(paths) == 0 {
			return nil, fmt.Errorf("--model-trust %s: a directory without *.pub key files", v)
		}
		sort.Strings(paths)
		for _, p := range paths {
			k, err := models.LoadPublicKey(p)
			if err != nil {
				return nil, fmt.Errorf("--model-trust: %w", err)
			}
			keys = append(keys, k)
		}
	}
	return models.NewTrust(keys...)
}

// newSignatureFailures returns streamscore_models_signature_failures_total,
// not yet registered.
func newSignatureFailures() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "streamscore_models_signature_failures_total",
		Help: "Model files refused for their signature, at start or reload, by reason: unsigned, bad_signature (changed model or signature, or a malformed signature file), untrusted_key.",
	}, []string{"reason"})
}

// modelVerifier checks the signature of every model file the engine
// reads from disk (--model, --models-dir, --shadow-model). Safe for
// concurrent use.
type modelVerifier struct {
	trust         *models.Trust
	allowUnsigned bool
	failures      *prometheus.CounterVec
	log           *slog.Logger
}

// observe registers the failure counter on reg and logs the trust set
// (and a warning with --allow-unsigned-models).
func (v *modelVerifier) observe(reg prometheus.Registerer, log *slog.Logger) error {
	v.log = log.With("component", "model-trust")
	for _, r := range []string{"unsigned", "bad_signature", "untrusted_key"} {
		v.failures.WithLabelValues(r)
	}
	failures, err := promreg.Register(reg, v.failures)
	if err != nil {
		return fmt.Errorf("register model signature metrics: %w", err)
	}
	v.failures = failures
	if v.allowUnsigned {
		v.log.Warn("--allow-unsigned-models: model files are accepted without a valid signature; anyone who can write them sets the decisions",
			"trusted_keys", v.trust.KeyIDs())
	} else {
		v.log.Info("model files must be signed", "trusted_keys", v.trust.KeyIDs())
	}
	return nil
}

// check verifies the signature file sig (nil if none) of model m, read
// from path. A refusal is counted and logged, and returned unless
// --allow-unsigned-models is set.
func (v *modelVerifier) check(path string, m *models.Model, sig []byte) error {
	id, err := v.trust.Verify(m, sig)
	if err == nil {
		v.log.Debug("model signature verified", "path", path, "model", m.Ident(), "key", id)
		return nil
	}
	reason := models.SignatureReason(err)
	if v.allowUnsigned {
		v.log.Warn("model accepted WITHOUT a valid signature (--allow-unsigned-models)", "path", path, "reason", reason, "err", err)
		return nil
	}
	v.failures.WithLabelValues(reason).Inc()
	v.log.Error("model refused: signature", "path", path, "reason", reason, "err", err)
	return fmt.Errorf("model %s: %w (sign it with `streamscore models sign`, or trust its key with --model-trust)", path, err)
}

// load loads and verifies the model file at path.
func (v *modelVerifier) load(path string) (*models.Model, error) {
	m, err := models.Load(path)
	if err != nil {
		return nil, err
	}
	sig, err := models.ReadSignatureFile(path)
	if err != nil {
		return nil, err
	}
	if err := v.check(path, m, sig); err != nil {
		return nil, err
	}
	return m, nil
}

// trustSummary is the trust set in one line, for command output.
func trustSummary(t *models.Trust) string {
	return strings.Join(t.KeyIDs(), ", ")
}
