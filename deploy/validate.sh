#!/usr/bin/env bash
# Validates the manifests in deploy/ with kubeconform, in strict mode, against
# schemas made from the Kubernetes release's own OpenAPI document. Both come
# from the Go module proxy (kubeconform's default schema source, GitHub, is
# not needed). Used by .ci/run; needs only Go.
set -euo pipefail
cd "$(dirname "$0")/.."

K8S_VERSION="${K8S_VERSION:-v1.34.2}"
KUBECONFORM_VERSION="${KUBECONFORM_VERSION:-v0.8.0}"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

k8s_dir=$(cd "$tmp" && go mod download -json "k8s.io/kubernetes@${K8S_VERSION}" |
  sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -n "$k8s_dir" ] || { echo "could not download k8s.io/kubernetes@${K8S_VERSION}" >&2; exit 1; }

go run ./deploy/kubeschema -swagger "$k8s_dir/api/openapi-spec/swagger.json" -out "$tmp/schemas"
kubeconform() {
  (cd "$tmp" && go run "github.com/yannh/kubeconform/cmd/kubeconform@${KUBECONFORM_VERSION}" \
    -strict -summary -schema-location "$tmp/schemas/{{ .ResourceKind }}{{ .KindSuffix }}.json" "$@")
}

# The checker must refuse a manifest with a misspelt field, or it proves nothing.
sed 's/readinessProbe:/readinesProbe:/' deploy/deployment.yaml > "$tmp/broken.yaml"
if kubeconform "$tmp/broken.yaml" >/dev/null 2>&1; then
  echo "kubeconform accepted a misspelt field: the schemas are not strict" >&2
  exit 1
fi

manifests=()
for f in deploy/*.yaml; do manifests+=("$PWD/$f"); done
kubeconform "${manifests[@]}"
