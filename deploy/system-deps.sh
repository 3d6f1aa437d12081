#!/usr/bin/env bash
# Installs the Debian packages corral's tests and dev cluster use, and starts dockerd
# when none is running. Idempotent; needs root on Debian 12.
set -euo pipefail
need=()
command -v etcd >/dev/null || need+=(etcd-server)
command -v etcdctl >/dev/null || need+=(etcd-client)
command -v dockerd >/dev/null || need+=(docker.io)
[ -x /bin/busybox ] || need+=(busybox-static)
command -v unshare >/dev/null || need+=(util-linux)
command -v setpriv >/dev/null || need+=(util-linux)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
# the multi-host lab (deploy/lab): an sshd per namespace host, ip and tc for links
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh >/dev/null || need+=(openssh-client)
command -v tc >/dev/null || need+=(iproute2)
# the web UI's browser test: headless Chromium driven by Selenium
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "system-deps: need root to install: ${need[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  # no service starts from a package's install script (e.g. an sshd on *:22): the lab
  # starts its own daemons, inside its namespaces only
  policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && policy=1
  fi
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
  [ -z "$policy" ] || rm -f /usr/sbin/policy-rc.d
fi
# dockerd: start one when no engine answers (the Docker driver and its tests need it).
if command -v dockerd >/dev/null && ! docker info >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    nohup dockerd >/var/log/corral-dockerd.log 2>&1 &
    for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
    docker info >/dev/null 2>&1 || echo "system-deps: dockerd did not come up (see /var/log/corral-dockerd.log)" >&2
  fi
fi
exit 0
