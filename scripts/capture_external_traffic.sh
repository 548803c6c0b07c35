#!/usr/bin/env bash
# Proof that the shipped Fast DDS profile keeps DDS on this machine: capture UDP on the
# external interface while `perception-rl bench` runs its floor and its three nodes, then
# count the packets (expected: 0) and list the UDP sockets the node processes had open.
#
#   sudo scripts/capture_external_traffic.sh [OUT_DIR] [extra perception-rl bench arguments]
#
# Needs tcpdump (apt-get install -y tcpdump) and root (or CAP_NET_RAW) for the capture.
# IFACE overrides the interface (default: the one of the default route).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/external_traffic}
shift || true
IFACE=${IFACE:-$(ip route show default | awk '{print $5; exit}')}
mkdir -p "$OUT"
command -v tcpdump >/dev/null || { echo "tcpdump is missing: apt-get install -y tcpdump"; exit 2; }

tcpdump -i "$IFACE" -n -U -w "$OUT/external.pcap" 'udp and not port 53' 2>"$OUT/tcpdump.log" &
TCPDUMP=$!
sleep 2  # tcpdump is listening before the first participant starts
# Every 2 s, the UDP sockets (ss -uanp) of the processes on the bench's ROS domain.
: >"$OUT/bench.txt"; : >"$OUT/sockets.txt"
(
  set +e +o pipefail  # a sample that finds nothing must not end the loop
  while sleep 2; do
    DOMAIN=$(grep -o 'ROS_DOMAIN_ID=[0-9]*' "$OUT/bench.txt" | head -1 | cut -d= -f2)
    [ -n "$DOMAIN" ] || continue
    for environ in /proc/[0-9]*/environ; do
      pid=$(basename "$(dirname "$environ")")
      if tr '\0' '\n' 2>/dev/null <"$environ" | grep -qx "ROS_DOMAIN_ID=$DOMAIN"; then
        ss -uanp 2>/dev/null | grep "pid=$pid," >>"$OUT/sockets.txt" || true
      fi
    done
  done
) &
SOCKETS=$!
.venv/bin/perception-rl bench --seconds 20 --floor-seconds 10 --out "$OUT/bench" "$@" \
  | tee "$OUT/bench.txt" || true
kill "$SOCKETS" || true
sleep 1
kill -INT "$TCPDUMP"; wait "$TCPDUMP" || true

DOMAIN=$(python3 -c "import json; print(json.load(open('$OUT/bench/bench.json'))['environment']['ROS_DOMAIN_ID'])")
LOW=$((7400 + 250 * DOMAIN)); HIGH=$((LOW + 249))
ALL=$(tcpdump -r "$OUT/external.pcap" -n 2>/dev/null | wc -l)
OURS=$(tcpdump -r "$OUT/external.pcap" -n "udp portrange $LOW-$HIGH" 2>/dev/null | wc -l)
echo "UDP packets on $IFACE during the bench (port 53 excluded): $ALL"
echo "of which on the bench's DDS ports ($LOW-$HIGH, ROS_DOMAIN_ID=$DOMAIN): $OURS"
echo "local addresses of the UDP sockets of the bench's processes (samples every 2 s):"
awk '{print $4}' "$OUT/sockets.txt" | sed 's/:[0-9]*$//' | sort | uniq -c
echo "their processes: $(grep -o 'users:(("[^"]*"' "$OUT/sockets.txt" | cut -d'"' -f2 | sort -u | tr '\n' ' ')"
