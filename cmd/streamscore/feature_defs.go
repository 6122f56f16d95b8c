package main

import (
	"github.com/streamscore/streamscore/features"
	"github.com/streamscore/streamscore/models"
)

// modelDefs converts feature definitions to the models package's.
func modelDefs(defs []features.Definition) []models.FeatureDef {
	out := make([]models.FeatureDef, len(defs))
	for i, d := range defs {
		out[i] = models.FeatureDef{Name: d.Name, Text: d.Text, Hash: d.Hash}
	}
	return out
}
