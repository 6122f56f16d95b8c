package main

import (
	"flag"
	"fmt"
	"log/slog"

	"github.com/streamscore/streamscore/features"
)

// panConfig is the card-number protection of every command that decodes
// events or labels: run (and demo), features, score, train and eval. They
// must all be given the same key file, or offline rows and models no longer
// match the stream's cards.
type panConfig struct {
	PANKeyFile string
}

func (c *panConfig) register(fs *flag.FlagSet) {
	fs.StringVar(&c.PANKeyFile, "pan-key-file", "",
		"file of the card-number pseudonym key: lines \"<key-id> <hex or base64 key of >= 32 bytes>\", the active key first, "+
			"the previous one second during a rotation (each card's state moves to its new pseudonym when it is first seen); "+
			"must not be readable by others (0400/0440). card_id becomes "+
			"p1:<key-id>:<HMAC-SHA-256> at decode, before any state, record, log, snapshot or dead letter sees it. "+
			"Empty: no key, and any event or label holding a card number in clear is dead-lettered (reason clear_pan)")
}

// decoderOptions loads the key file, if any, and returns the decoder
// options that apply it. It logs the key ids, never the key.
func (c *panConfig) decoderOptions(log *slog.Logger) ([]features.DecoderOption, error) {
	if c.PANKeyFile == "" {
		return nil, nil
	}
	k, err := features.LoadPANKey(c.PANKeyFile)
	if err != nil {
		return nil, fmt.Errorf("load --pan-key-file: %w", err)
	}
	log.Info("card numbers are pseudonymised", "pan_key_id", k.KeyID(), "accepted_pan_key_ids", k.KeyIDs())
	return []features.DecoderOption{features.WithPANKey(k)}, nil
}
