#!/usr/bin/env bash
# Packs Virtio.Ring and Virtio.Balloon and checks what a consumer gets: both target frameworks' assemblies and
# XML docs, the README and licence, the symbols package, a description and tags, and Virtio.Balloon's dependency
# on the same version of Virtio.Ring. Fails on any pack warning (warnings are errors in the build).
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for project in Virtio.Ring Virtio.Balloon; do
  dotnet pack "src/$project" -c Release --no-build -o "$out" -warnaserror >/dev/null
done
status=0
for project in Virtio.Ring Virtio.Balloon; do
  nupkg=$(ls "$out/$project".*.nupkg)
  version=$(basename "$nupkg" .nupkg | sed "s/^$project\.//")
  listing=$(unzip -l "$nupkg")
  for entry in README.md LICENSE "lib/net8.0/$project.dll" "lib/net8.0/$project.xml" "lib/net10.0/$project.dll" "lib/net10.0/$project.xml"; do
    if ! grep -q " $entry\$" <<<"$listing"; then
      echo "package $project: $entry is missing"; status=1
    fi
  done
  [ -f "$out/$project.$version.snupkg" ] || { echo "package $project: no symbols package"; status=1; }
  nuspec=$(unzip -p "$nupkg" "$project.nuspec")
  for field in '<readme>README.md</readme>' '<license type="expression">MIT</license>' '<tags>' '<description>'; do
    grep -qF "$field" <<<"$nuspec" || { echo "package $project: nuspec lacks $field"; status=1; }
  done
  if [ "$project" = Virtio.Balloon ]; then
    grep -q "<dependency id=\"Virtio.Ring\" version=\"$version\"" <<<"$nuspec" || { echo "Virtio.Balloon does not depend on Virtio.Ring $version"; status=1; }
  fi
  echo "package $project $version: ok"
done
exit $status
