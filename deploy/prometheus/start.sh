#!/bin/sh
# Prometheus's entrypoint in the compose `monitoring` profile. Its configuration cannot
# read environment variables, so the secrets it needs are written to files first
# (readable by Prometheus's user only), then Prometheus starts on prometheus.yml.
set -eu
umask 077
mkdir -p /tmp/settle
printf '%s' "$SETTLE_METRICS_TOKEN" > /tmp/settle/metrics-token
# FLOWER_BASIC_AUTH is user:password (Flower accepts a comma-separated list; the first).
first="${FLOWER_BASIC_AUTH%%,*}"
printf '%s' "${first#*:}" > /tmp/settle/flower-password
sed "s|__FLOWER_USER__|${first%%:*}|" /etc/prometheus/settle/prometheus.yml > /tmp/settle/prometheus.yml
exec /bin/prometheus \
    --config.file=/tmp/settle/prometheus.yml \
    --storage.tsdb.path=/prometheus \
    --web.listen-address=:9090
