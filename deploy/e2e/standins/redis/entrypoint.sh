#!/bin/sh
# Like the official image: redis-server without a config file listens everywhere, unprotected.
set -e
if [ "$1" = "redis-server" ]; then
  shift
  exec redis-server --bind 0.0.0.0 --protected-mode no "$@"
fi
exec "$@"
