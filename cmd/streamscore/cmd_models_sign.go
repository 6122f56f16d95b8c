package main

import (
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/streamscore/streamscore/internal/durable"
	"github.com/streamscore/streamscore/models"
)

// modelsKeygen writes a new model-signing key pair: PREFIX.key (the
// private key, mode 0600, never overwritten) and PREFIX.pub (the public
// key, for --model-trust).
func modelsKeygen(w io.Writer, args []string) error {
	fs := flag.NewFlagSet("models keygen", flag.ContinueOnError)
	out := fs.String("out", "", "path prefix of the key pair: writes PREFIX.key (private, mode 0600) and PREFIX.pub (required)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" || fs.NArg() != 0 {
		return errors.New("models keygen: want --out PREFIX and no arguments")
	}
	k, err := models.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	priv, err := k.MarshalText()
	if err != nil {
		return err
	}
	pub, err := k.Public().MarshalText()
	if err != nil {
		return err
	}
	// O_EXCL: an existing key is never replaced by accident.
	f, err := os.OpenFile(*out+".key", os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("models keygen: write private key: %w", err)
	}
	if _, err := f.Write(priv); err != nil {
		f.Close()
		return fmt.Errorf("models keygen: write private key: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("models keygen: write private key: %w", err)
	}
	if err := os.WriteFile(*out+".pub", pub, 0o644); err != nil {
		return fmt.Errorf("models keygen: write public key: %w", err)
	}
	fmt.Fprintf(w, "key %s\n  private %s.key (mode 0600: keep it off the engine's hosts; it signs models)\n  public  %s.pub (give it to --model-trust)\n",
		k.ID(), *out, *out)
	return nil
}

// modelsSign signs model files with a private key: it adds (or replaces)
// the key's line in each MODEL.sig and drops lines signing another digest
// (stale signatures of a previous version of the file).
func modelsSign(w io.Writer, args []string) error {
	fs := flag.NewFlagSet("models sign", flag.ContinueOnError)
	keyPath := fs.String("key", "", "private key file (from `models keygen`; mode 0600) (required)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *keyPath == "" || fs.NArg() == 0 {
		return errors.New("models sign: want --key KEY and one or more model files")
	}
	k, err := models.LoadPrivateKey(*keyPath)
	if err != nil {
		return err
	}
	for _, path := range fs.Args() {
		m, err := models.Load(path)
		if err != nil {
			return err
		}
		old, err := models.ReadSignatureFile(path)
		if err != nil {
			return err
		}
		prev, err := models.ParseSignatures(old)
		if err != nil {
			return fmt.Errorf("models sign %s: existing %s: %w (remove it to start afresh)", path, models.SignatureExt, err)
		}
		var sigs []models.Signature
		for _, s := range prev {
			switch {
			case s.KeyID == k.ID():
			case s.Digest != m.Digest():
				fmt.Fprintf(w, "  dropped key %s's signature of %s (the file is now %s)\n", s.KeyID, s.Digest, m.Digest())
			default:
				sigs = append(sigs, s)
			}
		}
		sigs = append(sigs, k.Sign(m))
		if err := durable.ReplaceFile(path+models.SignatureExt, models.MarshalSignatures(sigs), 0o644); err != nil {
			return fmt.Errorf("models sign: %w", err)
		}
		fmt.Fprintf(w, "signed %s (%s) with key %s: %s%s, %d signature(s)\n", path, m.Ident(), k.ID(), path, models.SignatureExt, len(sigs))
	}
	return nil
}

// modelsVerify verifies model files (digest, content, signature) against
// the trusted keys, as `run` would before scoring with them. It prints one
// line per file and fails if any file is refused.
func modelsVerify(w io.Writer, args []string) error {
	fs := flag.NewFlagSet("models verify", flag.ContinueOnError)
	var tc modelTrustConfig
	fs.Var(&tc.ModelTrust, "model-trust", "public key file or directory of *.pub files to trust (repeatable; \""+shippedTrust+"\" = the built-in release key; default: the built-in release key)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return errors.New("models verify: want one or more model files")
	}
	t, err := loadTrust(tc.ModelTrust)
	if err != nil {
		return err
	}
	failed := 0
	for _, path := range fs.Args() {
		m, id, err := models.LoadVerified(path, t)
		if err != nil {
			failed++
			reason := models.SignatureReason(err)
			if reason == "" {
				reason = "invalid"
			}
			fmt.Fprintf(w, "REFUSED %s: %s: %v\n", path, reason, err)
			continue
		}
		fmt.Fprintf(w, "ok %s %s signed by key %s\n", path, m.Ident(), id)
	}
	if failed > 0 {
		return fmt.Errorf("models verify: %d of %d model files refused (trusted keys: %s)", failed, fs.NArg(), trustSummary(t))
	}
	return nil
}
