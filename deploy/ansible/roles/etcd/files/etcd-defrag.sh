#!/bin/sh
# Defragment the local etcd member every INTERVAL seconds, first after OFFSET + INTERVAL
# (members are given different offsets, so only one pauses at a time). etcdctl's endpoint
# and TLS settings come from the ETCDCTL_* environment. Usage: corral-etcd-defrag ETCDCTL INTERVAL OFFSET
set -u
etcdctl=$1 interval=$2 offset=$3
sleep "$offset"
while sleep "$interval"; do
  echo "$(date -Is) defragmenting"
  "$etcdctl" defrag --command-timeout=120s || echo "$(date -Is) defrag failed (retried next interval)"
done
