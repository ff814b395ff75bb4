#!/bin/bash
# The official nginx image's 20-envsubst-on-templates.sh, reduced: render
# /etc/nginx/templates/*.template into /etc/nginx/conf.d/ substituting only the environment
# variables whose names match NGINX_ENVSUBST_FILTER (all when unset).
set -euo pipefail
filter=${NGINX_ENVSUBST_FILTER:-}
vars=$(env | cut -d= -f1 | grep -E "${filter:-.}" | sed 's/^/${/; s/$/}/' | tr '\n' ' ')
shopt -s nullglob
for t in /etc/nginx/templates/*.template; do
  out=/etc/nginx/conf.d/$(basename "$t" .template)
  envsubst "$vars" <"$t" >"$out"
  echo "rendered $t -> $out"
done
exec "$@"
