#!/usr/bin/env bash
# Vendor the console's browser libraries (pinned) into console/static/vendor/ with their licences.
# Run by hand when a pin changes; the result is committed, so the console never needs npm or a CDN.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
dest="$here/console/static/vendor"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
npm init -y >/dev/null
npm install --no-audit --no-fund --ignore-scripts --save-exact \
  leaflet@1.9.4 leaflet.markercluster@1.5.3 echarts@6.1.0 >/dev/null
m="$tmp/node_modules"
rm -rf "$dest"
mkdir -p "$dest/leaflet/images" "$dest/markercluster" "$dest/echarts"
cp "$m/leaflet/dist/leaflet.js" "$m/leaflet/dist/leaflet.css" "$m/leaflet/LICENSE" "$dest/leaflet/"
cp "$m/leaflet/dist/images/"*.png "$dest/leaflet/images/"
cp "$m/leaflet.markercluster/dist/leaflet.markercluster.js" "$m/leaflet.markercluster/dist/MarkerCluster.css" \
   "$m/leaflet.markercluster/dist/MarkerCluster.Default.css" "$m/leaflet.markercluster/MIT-LICENCE.txt" "$dest/markercluster/"
cp "$m/echarts/dist/echarts.min.js" "$m/echarts/LICENSE" "$m/echarts/NOTICE" "$dest/echarts/"
{
  echo "# Vendored by scripts/vendor-frontend.sh; do not edit by hand."
  for p in leaflet leaflet.markercluster echarts; do
    node -e "const p=require('$m/$p/package.json');console.log(p.name+'@'+p.version+' '+p.license)"
  done
} > "$dest/VERSIONS.txt"
echo "vendored into $dest:"; cat "$dest/VERSIONS.txt"
