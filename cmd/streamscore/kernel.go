package main

import (
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/streamscore/streamscore/models"
)

// registerKernelPath logs which matrix kernels this CPU runs (avx512, avx2
// or generic, chosen once at start-up) and exposes it as
// streamscore_models_kernel_info{path} = 1.
func registerKernelPath(reg prometheus.Registerer, log *slog.Logger) {
	path := models.KernelPath()
	log.Info("matrix kernels", "path", path)
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "streamscore_models_kernel_info",
		Help: "The matrix kernel path chosen at start-up from the CPU's features (avx512, avx2 or generic); always 1.",
	}, []string{"path"})
	g.WithLabelValues(path).Set(1)
	reg.MustRegister(g)
}
