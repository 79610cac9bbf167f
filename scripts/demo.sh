#!/usr/bin/env bash
# The calculator walkthrough end to end: install srpc, generate the stubs, start the server,
# run the client from its own folder, show the output, stop the server.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$REPO/scripts/bootstrap.sh" ""
DEMO="$(mktemp -d)"
trap 'kill "$SERVER_PID" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$DEMO"' EXIT
cp -r "$REPO/examples/calc/server" "$DEMO/server"
cp -r "$REPO/examples/calc/client" "$DEMO/client"
rm -f "$DEMO"/server/srpc_*_stub.py "$DEMO"/client/srpc_*_stub.py

echo "== generate the stubs (in the server folder)"
cd "$DEMO/server"
"$PY" -m srpc_core.tools.srpc_stub_gen calc/calc_interface.py
echo "== move the client stub next to client.py (the client folder already has calc/calc_interface.py)"
mv srpc_calc_client_stub.py "$DEMO/client/"

echo "== start the server: python server.py"
"$PY" -u server.py > "$DEMO/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 100); do
  grep -q "srpc: serving" "$DEMO/server.log" && break
  kill -0 "$SERVER_PID" 2>/dev/null || { cat "$DEMO/server.log"; exit 1; }
  sleep 0.1
done
cat "$DEMO/server.log"

echo "== run the client: python client.py"
cd "$DEMO/client"
"$PY" client.py

echo "== stop the server (SIGTERM)"
kill -TERM "$SERVER_PID"
wait "$SERVER_PID" || true
cat "$DEMO/server.log" | tail -n 1
