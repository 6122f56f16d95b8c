package models

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func newKey(t *testing.T) PrivateKey {
	t.Helper()
	k, err := GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func encodeTest(t *testing.T, f *File) *Model {
	t.Helper()
	b, err := f.Encode()
	if err != nil {
		t.Fatal(err)
	}
	m, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestKeyFiles: keys round-trip through their text formats; a key id that
// does not match the key, a wrong tag or a short key is refused; a private
// key file readable by group or others is refused.
func TestKeyFiles(t *testing.T) {
	k := newKey(t)
	pub, err := k.Public().MarshalText()
	if err != nil {
		t.Fatal(err)
	}
	priv, err := k.MarshalText()
	if err != nil {
		t.Fatal(err)
	}
	if len(k.ID()) != 16 || !bytes.Contains(pub, []byte(k.ID())) {
		t.Fatalf("key id %q, public key file %q", k.ID(), pub)
	}
	p2, err := ParsePublicKey(append([]byte("# a comment\n\n"), pub...))
	if err != nil || p2.ID() != k.ID() {
		t.Fatalf("ParsePublicKey = %v, %v", p2.ID(), err)
	}
	k2, err := ParsePrivateKey(priv)
	if err != nil || k2.ID() != k.ID() {
		t.Fatalf("ParsePrivateKey = %v, %v", k2.ID(), err)
	}
	other := newKey(t)
	for _, tc := range []struct {
		name string
		b    string
	}{
		{"wrong key id", strings.Replace(string(pub), k.ID(), other.ID(), 1)},
		{"private as public", string(priv)},
		{"short key", publicKeyTag + " " + k.ID() + " AAAA\n"},
		{"two keys", string(pub) + string(pub)},
		{"empty", ""},
	} {
		if _, err := ParsePublicKey([]byte(tc.b)); !errors.Is(err, ErrKey) {
			t.Errorf("%s: ParsePublicKey = %v, want ErrKey", tc.name, err)
		}
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "k.key")
	if err := os.WriteFile(path, priv, 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chmod(path, 0o644) // whatever the umask
	if _, err := LoadPrivateKey(path); !errors.Is(err, ErrKey) || !strings.Contains(err.Error(), "0644") {
		t.Fatalf("LoadPrivateKey(0644) = %v, want ErrKey naming the mode", err)
	}
	os.Chmod(path, 0o600)
	if got, err := LoadPrivateKey(path); err != nil || got.ID() != k.ID() {
		t.Fatalf("LoadPrivateKey(0600) = %v, %v", got.ID(), err)
	}
}

// TestVerify covers the outcomes of Trust.Verify.
func TestVerify(t *testing.T) {
	k1, k2, k3 := newKey(t), newKey(t), newKey(t)
	m := encodeTest(t, testFile(FamilyLogistic, 3, nil, 1))
	f2 := testFile(FamilyLogistic, 3, nil, 1)
	f2.Thresholds.Alert = 0.95
	m2 := encodeTest(t, f2)
	trust12, err := NewTrust(k1.Public(), k2.Public())
	if err != nil {
		t.Fatal(err)
	}
	flipped := k1.Sign(m)
	flipped.Sig = bytes.Clone(flipped.Sig)
	flipped.Sig[0] ^= 1
	replayed := k1.Sign(m2)
	replayed.Digest = m.Digest() // the other file's signature, relabelled
	// A signature of the bare digest, without the domain prefix.
	bare := Signature{KeyID: k1.ID(), Digest: m.Digest(), Sig: ed25519.Sign(k1.key, []byte(m.Digest()))}
	for _, tc := range []struct {
		name string
		sigs []Signature
		raw  string // used instead of sigs when set
		want error  // nil: accepted
		key  string
	}{
		{"k1", []Signature{k1.Sign(m)}, "", nil, k1.ID()},
		{"k3 then k2", []Signature{k3.Sign(m), k2.Sign(m)}, "", nil, k2.ID()},
		{"none", nil, "", ErrUnsigned, ""},
		{"comment only", nil, "# nothing\n", ErrUnsigned, ""},
		{"untrusted", []Signature{k3.Sign(m)}, "", ErrUntrustedKey, ""},
		{"flipped", []Signature{flipped}, "", ErrBadSignature, ""},
		{"other model's signature", []Signature{k1.Sign(m2)}, "", ErrBadSignature, ""},
		{"replayed under this digest", []Signature{replayed}, "", ErrBadSignature, ""},
		{"no domain prefix", []Signature{bare}, "", ErrBadSignature, ""},
		{"bad then good", []Signature{flipped, k2.Sign(m)}, "", nil, k2.ID()},
		{"malformed", nil, signatureTag + " " + k1.ID() + " " + m.Digest() + " !!!\n", ErrBadSignature, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := MarshalSignatures(tc.sigs)
			if tc.raw != "" {
				b = []byte(tc.raw)
			}
			id, err := trust12.Verify(m, b)
			if !errors.Is(err, tc.want) || (tc.want == nil && err != nil) || id != tc.key {
				t.Fatalf("Verify = %q, %v; want %q, %v", id, err, tc.key, tc.want)
			}
			if tc.want != nil && SignatureReason(err) == "" {
				t.Fatalf("SignatureReason(%v) is empty", err)
			}
		})
	}
}

// TestLoadVerified: the signature file beside the model file.
func TestLoadVerified(t *testing.T) {
	k := newKey(t)
	b, err := testFile(FamilyLinear, 2, nil, 1).Encode()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "risk.json")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	trust, _ := NewTrust(k.Public())
	if _, _, err := LoadVerified(path, trust); !errors.Is(err, ErrUnsigned) {
		t.Fatalf("without a .sig: %v", err)
	}
	m, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path+SignatureExt, MarshalSignatures([]Signature{k.Sign(m)}), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, id, err := LoadVerified(path, trust); err != nil || id != k.ID() {
		t.Fatalf("signed: %q, %v", id, err)
	}
	shippedTrust, _ := NewTrust(ShippedKey())
	if _, _, err := LoadVerified(path, shippedTrust); !errors.Is(err, ErrUntrustedKey) {
		t.Fatalf("against the release key: %v", err)
	}
}
