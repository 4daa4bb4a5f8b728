#!/bin/bash
# tests/kernel/nat-table.sh — nat.sh with the daemon's own firewall table as
# shipped (firewall '1'): the table assigns the helpers and queues only the
# packets that carry payload. See nat.sh (NAT_WIRING=table).
NAT_WIRING=table exec "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/nat.sh" "$@"
