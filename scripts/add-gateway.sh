#!/usr/bin/env bash
# Add (or reset) the broker credentials of one gateway or service identity.
# usage: scripts/add-gateway.sh PASSWORD_FILE GATEWAY_ID [PASSWORD]
# The username is the gateway id; the ACL grants it citywatch/v1/gw/<id>/# only.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 PASSWORD_FILE GATEWAY_ID [PASSWORD]" >&2; exit 2; }
file=$1; id=$2; pw=${3:-$(head -c 18 /dev/urandom | base64 | tr -d '/+=')}
if ! [[ $id =~ ^[a-z0-9][a-z0-9-]{0,62}$ ]]; then
  echo "invalid id '$id': must match [a-z0-9][a-z0-9-]{0,62} (no '+', '#', '/')" >&2; exit 2
fi
[ -f "$file" ] || { touch "$file"; chmod 600 "$file"; }
mosquitto_passwd -b "$file" "$id" "$pw"
echo "$id $pw"
