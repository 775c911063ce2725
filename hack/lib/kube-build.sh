# Sourced by the hack/ scripts that build a Kubernetes component from the Go module proxy.
#
# kube_build VERSION PACKAGE OUT: builds PACKAGE (e.g. k8s.io/kubernetes/cmd/kubelet) of
# k8s.io/kubernetes at VERSION (v1.35.4) into the file OUT, with the version stamped as a
# release build does. Every staging module k8s.io/kubernetes replaces with ./staging/... comes
# from the proxy at the matching v0.x version instead. Runs in a temporary module under the
# directory holding OUT; progress goes to stderr.
kube_build() {
  local version=$1 package=$2 out=$3
  local minor src gomod staging ldflags
  minor=$(printf '%s' "$version" | sed -E 's/^v[0-9]+\.([0-9]+)\..*/\1/')
  src=$(mktemp -d "$(dirname "$out")/src.XXXXXX")
  (
    cd "$src"
    export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0
    go mod init tailor.dev/hack/build >/dev/null 2>&1
    gomod=$(go mod download -json "k8s.io/kubernetes@${version}" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')
    [ -f "$gomod" ] || { printf 'could not download k8s.io/kubernetes@%s\n' "$version" >&2; exit 1; }
    staging="v0.${version#v1.}"
    {
      printf 'require k8s.io/kubernetes %s\n' "$version"
      printf 'replace (\n'
      sed -n 's#^[[:space:]]*\(k8s\.io/[a-z0-9-]*\) => \./staging/.*#\1#p' "$gomod" |
        while read -r mod; do printf '\t%s => %s %s\n' "$mod" "$mod" "$staging"; done
      printf ')\n'
    } >>go.mod
    printf '//go:build tools\n\npackage tools\n\nimport _ "%s"\n' "$package" >tools.go
    go mod tidy >&2
    ldflags="-s -w -X k8s.io/component-base/version.gitVersion=${version}"
    ldflags="$ldflags -X k8s.io/component-base/version.gitMajor=1"
    ldflags="$ldflags -X k8s.io/component-base/version.gitMinor=${minor}"
    ldflags="$ldflags -X k8s.io/component-base/version.gitTreeState=clean"
    ldflags="$ldflags -X k8s.io/component-base/version.buildDate=1970-01-01T00:00:00Z"
    go build -trimpath -ldflags "$ldflags" -o "$out" "$package" >&2
  )
  local rc=$?
  rm -rf "$src"
  return $rc
}
