#!/usr/bin/env bash
# Packs Virtio.Ring and Virtio.Balloon and checks what a consumer gets: both target frameworks' assemblies and
# XML docs, the README and licence, the symbols package, a description and tags, and Virtio.Balloon's dependency
# on the same version of Virtio.Ring. Fails on any pack warning (warnings are errors in the build). Then SourceLink:
# in a scratch clone whose origin is a hosted (GitHub-style) URL, the package must record that repository, commit
# and project URL, and the symbols must map sources to it (this repository has no hosted remote yet, so the clone fakes one).
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

clone="$out/sourcelink"
git clone -q . "$clone"
git -C "$clone" remote set-url origin https://github.com/example/virtio-ring.git
commit=$(git -C "$clone" rev-parse HEAD)
dotnet pack "$clone/src/Virtio.Ring" -c Release -o "$out/sl" -warnaserror >/dev/null
grep -qF "<repository type=\"git\" url=\"https://github.com/example/virtio-ring.git\"" <(unzip -p "$out"/sl/Virtio.Ring.*[0-9].nupkg Virtio.Ring.nuspec) \
  || { echo "SourceLink: the package does not record the repository"; status=1; }
grep -qF "<projectUrl>https://github.com/example/virtio-ring</projectUrl>" <(unzip -p "$out"/sl/Virtio.Ring.*[0-9].nupkg Virtio.Ring.nuspec) \
  || { echo "SourceLink: the package has no project URL"; status=1; }
unzip -q -o "$out"/sl/Virtio.Ring.*.snupkg -d "$out/sl/symbols"
grep -aqF "https://raw.githubusercontent.com/example/virtio-ring/$commit/" "$out/sl/symbols/lib/net10.0/Virtio.Ring.pdb" \
  || { echo "SourceLink: the symbols do not map sources to the repository"; status=1; }
[ $status -eq 0 ] && echo "SourceLink: ok (repository and commit $commit in the package and the symbols)"
exit $status
