package main

import (
	"bytes"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/streamscore/streamscore/internal/durable"
	"github.com/streamscore/streamscore/models"
)

// testKey signs the models the tests write, as a release key signs real
// ones; the tests trust it through testVerifier or --model-trust testPub.
var testKey = sync.OnceValue(func() models.PrivateKey {
	k, err := models.GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	return k
})

// writeKeyPair writes k as dir/name.key (0600) and dir/name.pub and
// returns their paths.
func writeKeyPair(t *testing.T, dir, name string, k models.PrivateKey) (priv, pub string) {
	t.Helper()
	pb, err := k.Public().MarshalText()
	if err != nil {
		t.Fatal(err)
	}
	kb, err := k.MarshalText()
	if err != nil {
		t.Fatal(err)
	}
	priv, pub = filepath.Join(dir, name+".key"), filepath.Join(dir, name+".pub")
	if err := os.WriteFile(priv, kb, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pub, pb, 0o644); err != nil {
		t.Fatal(err)
	}
	return priv, pub
}

// testPub writes the test key's public key file and returns its path.
func testPub(t *testing.T) string {
	t.Helper()
	_, pub := writeKeyPair(t, t.TempDir(), "test", testKey())
	return pub
}

// testVerifier trusts the test key only.
func testVerifier(t *testing.T) *modelVerifier {
	t.Helper()
	tr, err := models.NewTrust(testKey().Public())
	if err != nil {
		t.Fatal(err)
	}
	return &modelVerifier{trust: tr, failures: newSignatureFailures(), log: quietLog()}
}

// signWith writes path's signature file with one signature per key.
func signWith(t *testing.T, path string, keys ...models.PrivateKey) {
	t.Helper()
	m, err := models.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	var sigs []models.Signature
	for _, k := range keys {
		sigs = append(sigs, k.Sign(m))
	}
	if err := durable.ReplaceFile(path+models.SignatureExt, models.MarshalSignatures(sigs), 0o644); err != nil {
		t.Fatal(err)
	}
}

// writeModel replaces a model file with b signed by the test key, without
// a moment in which a poll sees the model refused: the new signature is
// added to the signature file first (the old model's line stays, so the
// file on disk verifies throughout), then the model is replaced.
func writeModel(t *testing.T, path string, b []byte) {
	t.Helper()
	m, err := models.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	old, err := models.ReadSignatureFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sigs, err := models.ParseSignatures(old)
	if err != nil {
		t.Fatal(err)
	}
	sigs = append(sigs, testKey().Sign(m))
	if err := durable.ReplaceFile(path+models.SignatureExt, models.MarshalSignatures(sigs), 0o644); err != nil {
		t.Fatal(err)
	}
	writeFile(t, path, b)
}

// TestModelSignatures: a model file is accepted only with a valid
// signature by a trusted key; tampered, unsigned, wrongly signed and
// untrusted files are refused, counted by reason, and accepted only with
// --allow-unsigned-models. A rotation trusts two keys; a key removed from
// the trust set refuses the models only it signed.
func TestModelSignatures(t *testing.T) {
	dir := t.TempDir()
	oldKey, newKey := testKey(), must(models.GenerateKey(rand.Reader))
	_, oldPub := writeKeyPair(t, dir, "old", oldKey)
	_, newPub := writeKeyPair(t, dir, "new", newKey)
	path := filepath.Join(dir, "fraud.json")
	v2 := shippedFile(t, "fraud.json", func(f *models.File) { f.Version = 2 })

	type check struct {
		trust  []string
		reason string // "" = accepted
	}
	for _, tc := range []struct {
		name   string
		write  func()
		checks []check
	}{
		{"signed", func() { writeFile(t, path, v2); signWith(t, path, oldKey) }, []check{{[]string{oldPub}, ""}, {nil, "untrusted_key"}}},
		{"unsigned", func() { writeFile(t, path, v2); os.Remove(path + ".sig") }, []check{{[]string{oldPub}, "unsigned"}}},
		{"empty signature file", func() { writeFile(t, path, v2); writeFile(t, path+".sig", []byte("# none\n")) }, []check{{[]string{oldPub}, "unsigned"}}},
		{"thresholds rewritten, digest recomputed, old signature kept", func() {
			writeFile(t, path, v2)
			signWith(t, path, oldKey)
			writeFile(t, path, shippedFile(t, "fraud.json", func(f *models.File) { f.Version = 2; f.Thresholds.Alert = 0.99 }))
		}, []check{{[]string{oldPub}, "bad_signature"}}},
		{"signature bytes flipped", func() {
			writeFile(t, path, v2)
			signWith(t, path, oldKey)
			sigs, err := models.ParseSignatures(must(os.ReadFile(path + ".sig")))
			if err != nil {
				t.Fatal(err)
			}
			sigs[0].Sig[5] ^= 1
			writeFile(t, path+".sig", models.MarshalSignatures(sigs))
		}, []check{{[]string{oldPub}, "bad_signature"}}},
		{"another model's signature", func() {
			other := filepath.Join(dir, "other.json")
			writeFile(t, other, shippedFile(t, "fraud.json", func(f *models.File) { f.Version = 3 }))
			signWith(t, other, oldKey)
			writeFile(t, path, v2)
			writeFile(t, path+".sig", must(os.ReadFile(other+".sig")))
		}, []check{{[]string{oldPub}, "bad_signature"}}},
		{"malformed signature file", func() {
			writeFile(t, path, v2)
			signWith(t, path, oldKey)
			writeFile(t, path+".sig", []byte("streamscore-ed25519-signature x\n"))
		},
			[]check{{[]string{oldPub}, "bad_signature"}}},
		{"wrong key", func() { writeFile(t, path, v2); signWith(t, path, newKey) },
			[]check{{[]string{oldPub}, "untrusted_key"}, {[]string{newPub}, ""}}},
		{"rotation: signed by both", func() { writeFile(t, path, v2); signWith(t, path, oldKey, newKey) },
			[]check{{[]string{oldPub, newPub}, ""}, {[]string{oldPub}, ""}, {[]string{newPub}, ""}, {[]string{shippedTrust}, "untrusted_key"}}},
		{"rotation: old key only, then removed", func() { writeFile(t, path, v2); signWith(t, path, oldKey) },
			[]check{{[]string{oldPub, newPub}, ""}, {[]string{newPub}, "untrusted_key"}, {[]string{dir}, ""}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.write()
			for _, c := range tc.checks {
				tr, err := loadTrust(c.trust)
				if err != nil {
					t.Fatal(err)
				}
				for _, allow := range []bool{false, true} {
					v := &modelVerifier{trust: tr, allowUnsigned: allow, failures: newSignatureFailures(), log: quietLog()}
					ms, err := loadFiles([]string{path}, v)
					want := c.reason
					if allow {
						want = ""
					}
					switch {
					case want == "" && (err != nil || len(ms) != 1):
						t.Fatalf("trust %v, allow %v: %v, want the model", c.trust, allow, err)
					case want != "" && models.SignatureReason(err) != want:
						t.Fatalf("trust %v: %v, want a refusal %s", c.trust, err, want)
					}
					counted := 0.0
					if c.reason != "" && !allow {
						counted = 1
					}
					if c.reason != "" {
						if got := testutil.ToFloat64(v.failures.WithLabelValues(c.reason)); got != counted {
							t.Fatalf("trust %v, allow %v: %s counted %v, want %v", c.trust, allow, c.reason, got, counted)
						}
					}
				}
			}
		})
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestModelKeysCLI: keygen writes a 0600 private key and refuses to
// overwrite it; sign refuses a group-readable key; sign then verify
// accepts with the key trusted, refuses without; re-signing after a change
// drops the stale signature.
func TestModelKeysCLI(t *testing.T) {
	dir := t.TempDir()
	prefix := filepath.Join(dir, "bank")
	var out bytes.Buffer
	if err := modelsKeygen(&out, []string{"--out", prefix}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(prefix + ".key")
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("private key: %v, mode %v", err, fi.Mode())
	}
	if err := modelsKeygen(&out, []string{"--out", prefix}); err == nil {
		t.Fatal("keygen overwrote an existing key")
	}
	model := filepath.Join(dir, "fraud.json")
	writeFile(t, model, shippedFile(t, "fraud.json", func(f *models.File) { f.Version = 5 }))

	os.Chmod(prefix+".key", 0o640)
	if err := modelsSign(&out, []string{"--key", prefix + ".key", model}); !errors.Is(err, models.ErrKey) || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("sign with a group-readable key: %v", err)
	}
	os.Chmod(prefix+".key", 0o600)
	if err := modelsSign(&out, []string{"--key", prefix + ".key", model}); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := modelsVerify(&out, []string{"--model-trust", prefix + ".pub", model}); err != nil || !strings.HasPrefix(out.String(), "ok ") {
		t.Fatalf("verify with the key trusted: %v\n%s", err, out.String())
	}
	out.Reset()
	if err := modelsVerify(&out, []string{model}); err == nil || !strings.Contains(out.String(), "REFUSED") || !strings.Contains(out.String(), "untrusted_key") {
		t.Fatalf("verify against the release key only: %v\n%s", err, out.String())
	}
	out.Reset()
	if err := modelsVerify(&out, []string{shippedPath("fraud.json"), shippedPath("risk.json")}); err != nil {
		t.Fatalf("the shipped models do not verify against the built-in key: %v\n%s", err, out.String())
	}
	out.Reset()
	if err := modelsInspect(&out, []string{"--model-trust", prefix + ".pub", model}); err != nil || !strings.Contains(out.String(), "valid, key "+must(models.LoadPublicKey(prefix+".pub")).ID()) {
		t.Fatalf("inspect: %v\n%s", err, out.String())
	}

	// A second key signs too; then the model changes and only the second
	// key re-signs: the first key's stale signature is dropped.
	k2 := must(models.GenerateKey(rand.Reader))
	priv2, pub2 := writeKeyPair(t, dir, "k2", k2)
	if err := modelsSign(&out, []string{"--key", priv2, model}); err != nil {
		t.Fatal(err)
	}
	if sigs := must(models.ParseSignatures(must(os.ReadFile(model + ".sig")))); len(sigs) != 2 {
		t.Fatalf("%d signatures after two keys signed, want 2", len(sigs))
	}
	writeFile(t, model, shippedFile(t, "fraud.json", func(f *models.File) { f.Version = 6 }))
	out.Reset()
	if err := modelsSign(&out, []string{"--key", priv2, model}); err != nil || !strings.Contains(out.String(), "dropped key") {
		t.Fatalf("re-sign: %v\n%s", err, out.String())
	}
	if err := modelsVerify(&out, []string{"--model-trust", pub2, model}); err != nil {
		t.Fatal(err)
	}
	if err := modelsVerify(&out, []string{"--model-trust", prefix + ".pub", model}); err == nil {
		t.Fatal("the first key's stale signature still verifies")
	}
}

// TestModelTrustFlags: --model-trust takes files, directories and
// "shipped"; bad key files fail validation; the engine's failure counter
// is registered with every reason at 0.
func TestModelTrustFlags(t *testing.T) {
	clearEnv(t)
	dir := t.TempDir()
	_, pub := writeKeyPair(t, dir, "a", testKey())
	empty := t.TempDir()
	bad := filepath.Join(dir, "bad.pub")
	os.WriteFile(bad, []byte("streamscore-ed25519-public 0000000000000000 QNOwI0PiYhAcQ+z5ghr4a/G5zcD6DYVV/b+7tfcBUwU=\n"), 0o644)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, ""},
		{[]string{"--model-trust", pub}, ""},
		{[]string{"--model-trust", shippedTrust, "--model-trust", pub}, ""},
		{[]string{"--model-trust", empty}, "without *.pub"},
		{[]string{"--model-trust", filepath.Join(dir, "missing.pub")}, "no such file"},
		{[]string{"--model-trust", bad}, "key id"},
		{[]string{"--model-trust", dir}, "key id"}, // the directory holds bad.pub
	} {
		fs, cfg := newRunFlags()
		if err := parseFlags(fs, tc.args); err != nil {
			t.Fatal(err)
		}
		err := cfg.Validate()
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%v: %v, want %q", tc.args, err, tc.want)
		}
	}
	fs, cfg := newRunFlags()
	if err := parseFlags(fs, []string{"--model-trust", pub, "--brokers", "127.0.0.1:1", "--nats", ""}); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	e, err := buildEngine(cfg, reg, quietLog())
	if err != nil {
		t.Fatal(err) // the shipped models: verified by the built-in key, whatever --model-trust says
	}
	defer e.Close()
	if n, err := testutil.GatherAndCount(reg, "streamscore_models_signature_failures_total"); err != nil || n != 3 {
		t.Fatalf("failure series: %d, %v; want 3 at 0", n, err)
	}
}
