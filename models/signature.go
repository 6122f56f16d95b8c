package models

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
)

// Model signatures.
//
// A model file is signed by a detached signature file beside it, the model
// path with ".sig" appended (fraud.json → fraud.json.sig). The model file
// and its digest stay as they are, a file can be signed without being
// rewritten, and several keys can sign the same model (one line each),
// which is what a key rotation needs.
//
// A signature is ed25519 over the domain-separated message
//
//	"streamscore-model-v1\n" + name + "\n" + version + "\n" + digest + "\n"
//
// where digest is the model's verified "sha256:<hex>" (see [File]), which
// covers every value of the file. A signature therefore cannot be replayed
// onto a file with any other content, and the prefix keeps it from meaning
// anything outside streamscore model files.
//
// Text formats, one record a line (blank lines and lines starting with '#'
// are ignored in key and signature files):
//
//	public key:   streamscore-ed25519-public <keyid> <base64 32-byte key>
//	private key:  streamscore-ed25519-private <keyid> <base64 32-byte seed>
//	signature:    streamscore-ed25519-signature <keyid> <model digest> <base64 64-byte signature>
//
// keyid is the first 16 hex digits of the sha256 of the public key: short,
// stable, and checked against the key on every parse.

// SignatureExt is appended to a model file's path to name its signature file.
const SignatureExt = ".sig"

// signatureDomain starts every signed message.
const signatureDomain = "streamscore-model-v1\n"

// Record tags of the text formats.
const (
	publicKeyTag  = "streamscore-ed25519-public"
	privateKeyTag = "streamscore-ed25519-private"
	signatureTag  = "streamscore-ed25519-signature"
)

// maxKeyFile bounds a key or signature file read from disk.
const maxKeyFile = 64 << 10

// Errors of signing and verification; branch on them with errors.Is, or
// get a metric label with [SignatureReason].
var (
	// ErrUnsigned: the model has no signature file, or one without a
	// signature line.
	ErrUnsigned = errors.New("models: model is not signed")
	// ErrBadSignature: a signature by a trusted key does not verify (the
	// model or the signature was changed), is for another digest, or the
	// signature file is malformed.
	ErrBadSignature = errors.New("models: bad model signature")
	// ErrUntrustedKey: the model is signed, but by no trusted key.
	ErrUntrustedKey = errors.New("models: model signed by no trusted key")
	// ErrKey: a key file is malformed, or a private key file is readable
	// by group or others.
	ErrKey = errors.New("models: bad key file")
)

// SignatureReason classifies a verification error for metrics and logs:
// "unsigned", "bad_signature", "untrusted_key", or "" for an error that is
// none of them (nil, or a model that fails to parse).
func SignatureReason(err error) string {
	switch {
	case errors.Is(err, ErrUnsigned):
		return "unsigned"
	case errors.Is(err, ErrBadSignature):
		return "bad_signature"
	case errors.Is(err, ErrUntrustedKey):
		return "untrusted_key"
	}
	return ""
}

// keyID returns the id of an ed25519 public key.
func keyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:8])
}

// PublicKey is a model-signing public key.
type PublicKey struct {
	id  string
	key ed25519.PublicKey
}

// ID returns the key id: the first 16 hex digits of the key's sha256.
func (k PublicKey) ID() string { return k.id }

// MarshalText returns the key file line, newline-terminated.
func (k PublicKey) MarshalText() ([]byte, error) {
	if len(k.key) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("marshal public key: %w: empty key", ErrKey)
	}
	return fmt.Appendf(nil, "%s %s %s\n", publicKeyTag, k.id, base64.StdEncoding.EncodeToString(k.key)), nil
}

// PrivateKey is a model-signing private key.
type PrivateKey struct {
	id  string
	key ed25519.PrivateKey
}

// GenerateKey returns a new key pair read from rand (crypto/rand.Reader
// for real keys).
func GenerateKey(rand io.Reader) (PrivateKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand)
	if err != nil {
		return PrivateKey{}, fmt.Errorf("generate key: %w", err)
	}
	return PrivateKey{id: keyID(pub), key: priv}, nil
}

// ID returns the id of the key pair.
func (k PrivateKey) ID() string { return k.id }

// Public returns the public half.
func (k PrivateKey) Public() PublicKey {
	return PublicKey{id: k.id, key: k.key.Public().(ed25519.PublicKey)}
}

// MarshalText returns the private key file line, newline-terminated. Write
// it with mode 0600: [LoadPrivateKey] refuses anything wider.
func (k PrivateKey) MarshalText() ([]byte, error) {
	if len(k.key) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("marshal private key: %w: empty key", ErrKey)
	}
	return fmt.Appendf(nil, "%s %s %s\n", privateKeyTag, k.id, base64.StdEncoding.EncodeToString(k.key.Seed())), nil
}

// records returns the non-comment lines of a key or signature file, split
// into fields.
func records(b []byte) [][]string {
	var out [][]string
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, maxKeyFile)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		out = append(out, strings.Fields(line))
	}
	return out
}

// decodeKey checks one key record and returns its decoded key bytes.
func decodeKey(rec []string, tag string, size int) (id string, key []byte, err error) {
	if len(rec) != 3 || rec[0] != tag {
		return "", nil, fmt.Errorf("want one line %q <keyid> <base64>: %w", tag, ErrKey)
	}
	key, err = base64.StdEncoding.DecodeString(rec[2])
	if err != nil || len(key) != size {
		return "", nil, fmt.Errorf("key is not %d bytes of base64: %w", size, ErrKey)
	}
	return rec[1], key, nil
}

// ParsePublicKey parses a public key file: one line
// "streamscore-ed25519-public <keyid> <base64>", the key id matching the
// key.
func ParsePublicKey(b []byte) (PublicKey, error) {
	recs := records(b)
	if len(recs) != 1 {
		return PublicKey{}, fmt.Errorf("parse public key: %d key lines, want 1: %w", len(recs), ErrKey)
	}
	id, key, err := decodeKey(recs[0], publicKeyTag, ed25519.PublicKeySize)
	if err != nil {
		return PublicKey{}, fmt.Errorf("parse public key: %w", err)
	}
	pub := ed25519.PublicKey(key)
	if want := keyID(pub); id != want {
		return PublicKey{}, fmt.Errorf("parse public key: key id %q, the key's id is %s: %w", id, want, ErrKey)
	}
	return PublicKey{id: id, key: pub}, nil
}

// ParsePrivateKey parses a private key file: one line
// "streamscore-ed25519-private <keyid> <base64 seed>".
func ParsePrivateKey(b []byte) (PrivateKey, error) {
	recs := records(b)
	if len(recs) != 1 {
		return PrivateKey{}, fmt.Errorf("parse private key: %d key lines, want 1: %w", len(recs), ErrKey)
	}
	id, seed, err := decodeKey(recs[0], privateKeyTag, ed25519.SeedSize)
	if err != nil {
		return PrivateKey{}, fmt.Errorf("parse private key: %w", err)
	}
	priv := ed25519.NewKeyFromSeed(seed)
	if want := keyID(priv.Public().(ed25519.PublicKey)); id != want {
		return PrivateKey{}, fmt.Errorf("parse private key: key id %q, the key's id is %s: %w", id, want, ErrKey)
	}
	return PrivateKey{id: id, key: priv}, nil
}

// readSmall reads a file of at most maxKeyFile bytes.
func readSmall(path string) ([]byte, os.FileInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, nil, fmt.Errorf("%s is not a regular file", path)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, nil, err
	}
	if len(b) > maxKeyFile {
		return nil, nil, fmt.Errorf("%s is larger than %d bytes", path, maxKeyFile)
	}
	return b, fi, nil
}

// LoadPublicKey reads a public key file.
func LoadPublicKey(path string) (PublicKey, error) {
	b, _, err := readSmall(path)
	if err != nil {
		return PublicKey{}, fmt.Errorf("load public key: %w", err)
	}
	k, err := ParsePublicKey(b)
	if err != nil {
		return PublicKey{}, fmt.Errorf("load public key %s: %w", path, err)
	}
	return k, nil
}

// LoadPrivateKey reads a private key file. It refuses a file that group or
// others may read or write (mode & 0077 != 0): a signing key readable by
// other accounts is a key anyone on the machine may have copied.
func LoadPrivateKey(path string) (PrivateKey, error) {
	b, fi, err := readSmall(path)
	if err != nil {
		return PrivateKey{}, fmt.Errorf("load private key: %w", err)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return PrivateKey{}, fmt.Errorf("load private key %s: mode %04o lets group or others access it (chmod 600): %w", path, perm, ErrKey)
	}
	k, err := ParsePrivateKey(b)
	if err != nil {
		return PrivateKey{}, fmt.Errorf("load private key %s: %w", path, err)
	}
	return k, nil
}

// signedMessage is what a signature of m covers.
func signedMessage(name string, version int, digest string) []byte {
	return []byte(signatureDomain + name + "\n" + strconv.Itoa(version) + "\n" + digest + "\n")
}

// Signature is one line of a signature file: a key's signature of a
// model digest.
type Signature struct {
	KeyID  string // id of the signing key
	Digest string // the model digest signed, "sha256:<hex>"
	Sig    []byte // ed25519 signature of the domain-separated message
}

// Sign returns k's signature of m.
func (k PrivateKey) Sign(m *Model) Signature {
	return Signature{KeyID: k.id, Digest: m.digest, Sig: ed25519.Sign(k.key, signedMessage(m.name, m.version, m.digest))}
}

// ParseSignatures parses a signature file. A malformed line is an error
// (wrapping ErrBadSignature) naming the line; no lines is not an error.
func ParseSignatures(b []byte) ([]Signature, error) {
	var out []Signature
	for i, rec := range records(b) {
		if len(rec) != 4 || rec[0] != signatureTag {
			return nil, fmt.Errorf("parse signatures: record %d: want %q <keyid> <digest> <base64>: %w", i+1, signatureTag, ErrBadSignature)
		}
		sig, err := base64.StdEncoding.DecodeString(rec[3])
		if err != nil || len(sig) != ed25519.SignatureSize {
			return nil, fmt.Errorf("parse signatures: record %d: signature is not %d bytes of base64: %w", i+1, ed25519.SignatureSize, ErrBadSignature)
		}
		out = append(out, Signature{KeyID: rec[1], Digest: rec[2], Sig: sig})
	}
	return out, nil
}

// MarshalSignatures returns the signature file holding sigs, one line each.
func MarshalSignatures(sigs []Signature) []byte {
	var b []byte
	for _, s := range sigs {
		b = fmt.Appendf(b, "%s %s %s %s\n", signatureTag, s.KeyID, s.Digest, base64.StdEncoding.EncodeToString(s.Sig))
	}
	return b
}

// Trust is a set of public keys whose signatures make a model acceptable.
// It is immutable and safe for concurrent use.
type Trust struct {
	keys map[string]PublicKey
}

// NewTrust returns the trust set of keys. Duplicates are merged.
func NewTrust(keys ...PublicKey) (*Trust, error) {
	t := &Trust{keys: make(map[string]PublicKey, len(keys))}
	for _, k := range keys {
		if len(k.key) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("new trust: %w: an empty public key", ErrKey)
		}
		t.keys[k.id] = k
	}
	return t, nil
}

// KeyIDs returns the ids of the trusted keys, sorted.
func (t *Trust) KeyIDs() []string {
	ids := make([]string, 0, len(t.keys))
	for id := range t.keys {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// Verify checks the signature file sigFile (nil when there is none) of
// model m and returns the id of the trusted key whose signature verifies.
// One valid signature by a trusted key suffices; signatures by other keys
// are ignored. Errors wrap [ErrUnsigned] (no signature), [ErrBadSignature]
// (a trusted key's signature fails, or the file is malformed) or
// [ErrUntrustedKey] (signed only by keys not in t), and name the keys.
func (t *Trust) Verify(m *Model, sigFile []byte) (string, error) {
	sigs, err := ParseSignatures(sigFile)
	if err != nil {
		return "", fmt.Errorf("verify model %s: %w", m.ident, err)
	}
	if len(sigs) == 0 {
		return "", fmt.Errorf("verify model %s: no signature (%s file): %w", m.ident, SignatureExt, ErrUnsigned)
	}
	msg := signedMessage(m.name, m.version, m.digest)
	var bad []string
	var others []string
	for _, s := range sigs {
		k, ok := t.keys[s.KeyID]
		if !ok {
			others = append(others, s.KeyID)
			continue
		}
		switch {
		case s.Digest != m.digest:
			bad = append(bad, fmt.Sprintf("key %s signed %s, the model's digest is %s", s.KeyID, s.Digest, m.digest))
		case !ed25519.Verify(k.key, msg, s.Sig):
			bad = append(bad, fmt.Sprintf("key %s: signature does not verify", s.KeyID))
		default:
			return s.KeyID, nil
		}
	}
	if len(bad) > 0 {
		return "", fmt.Errorf("verify model %s: %s: %w", m.ident, strings.Join(bad, "; "), ErrBadSignature)
	}
	return "", fmt.Errorf("verify model %s: signed by key(s) %s, trusted: %s: %w",
		m.ident, strings.Join(others, ", "), strings.Join(t.KeyIDs(), ", "), ErrUntrustedKey)
}

// LoadVerified loads the model file at path and verifies its signature file
// (path + SignatureExt) against t. It returns the model and the id of the
// key that signed it.
func LoadVerified(path string, t *Trust) (*Model, string, error) {
	m, err := Load(path)
	if err != nil {
		return nil, "", err
	}
	sig, err := ReadSignatureFile(path)
	if err != nil {
		return nil, "", err
	}
	id, err := t.Verify(m, sig)
	if err != nil {
		return nil, "", fmt.Errorf("load model %s: %w", path, err)
	}
	return m, id, nil
}

// ReadSignatureFile returns the signature file of the model file at
// modelPath, or nil if there is none.
func ReadSignatureFile(modelPath string) ([]byte, error) {
	b, _, err := readSmall(modelPath + SignatureExt)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read model signature: %w", err)
	}
	return b, nil
}
