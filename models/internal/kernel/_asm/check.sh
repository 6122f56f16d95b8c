#!/usr/bin/env bash
# check.sh fails if `go generate` in models/internal/kernel does not
# reproduce the committed generated files byte for byte (as
# models/internal/kernel/doc.go promises; .ci/run runs this check).
# It regenerates in place and restores the originals afterwards, so a dirty
# tree is reported, never left behind. Run from anywhere:
#
#	models/internal/kernel/_asm/check.sh
set -euo pipefail
kdir="$(cd "$(dirname "$0")/.." && pwd)"
files=(gemm_amd64.s gemm_stub_amd64.go gemm_tiles_amd64.go f64_amd64.s f64_stub_amd64.go)
tmp="$(mktemp -d)"
trap 'for f in "${files[@]}"; do cp "$tmp/$f" "$kdir/$f"; done; rm -rf "$tmp"' EXIT
for f in "${files[@]}"; do cp "$kdir/$f" "$tmp/$f"; done
(cd "$kdir" && go generate .)
status=0
for f in "${files[@]}"; do
	if ! cmp -s "$tmp/$f" "$kdir/$f"; then
		echo "models/internal/kernel/$f is stale: run 'go generate ./models/internal/kernel' and commit the result" >&2
		diff -u "$tmp/$f" "$kdir/$f" | head -40 >&2 || true
		status=1
	fi
done
[ "$status" -eq 0 ] && echo "generated kernels up to date"
exit "$status"
